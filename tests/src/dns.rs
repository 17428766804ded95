//! [`DnsServer`]: a real authoritative DNS server (hickory-server) on `127.0.0.1:<port>`, UDP
//! and TCP on the same port, for one zone whose TXT records a test sets while it runs (custom
//! domain verification). Names in the zone without records answer NXDOMAIN with the zone's SOA,
//! like a real authority; names outside it are refused.

use hickory_proto::rr::{
    LowerName, Name, RData, Record, RecordType, RrKey,
    rdata::{SOA, TXT},
};
use hickory_server::{
    Server,
    net::runtime::TokioRuntimeProvider,
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType},
};
use std::{net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// A running DNS server, stopped on drop.
pub struct DnsServer {
    /// `127.0.0.1:<port>` (UDP and TCP): give it to the api as `dns_resolver`.
    pub addr: SocketAddr,
    /// The zone it is authoritative for, without the final dot.
    pub zone: String,
    handler: Arc<Zone>,
    server: Server<Catalog>,
}

impl DnsServer {
    /// Starts an authority for `zone` (e.g. `"burrow-e2e.test"`) on a free port.
    pub async fn start(zone: &str) -> anyhow::Result<DnsServer> {
        let origin = Name::from_str(&format!("{}.", zone.trim_end_matches('.')))?;
        let mut handler = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str(&format!("ns.{origin}"))?,
            Name::from_str(&format!("hostmaster.{origin}"))?,
            1,
            3600,
            600,
            86400,
            // Negative answers must not be cached by anyone between tries.
            0,
        );
        anyhow::ensure!(
            handler.upsert_mut(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1),
            "cannot add the SOA of {origin}"
        );
        let handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![handler.clone() as Arc<dyn ZoneHandler>],
        );
        // UDP and TCP on one port, as resolvers expect (TCP after a truncated answer).
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 16);
        Ok(DnsServer {
            addr,
            zone: zone.trim_end_matches('.').to_owned(),
            handler,
            server,
        })
    }

    /// Replaces the TXT records at `name` (a full name inside the zone) with one per value;
    /// no values removes them.
    pub async fn set_txt(&self, name: &str, values: &[&str]) -> anyhow::Result<()> {
        let name = Name::from_str(&format!("{}.", name.trim_end_matches('.')))?;
        let key = RrKey::new(LowerName::new(&name), RecordType::TXT);
        self.handler.records_mut().await.remove(&key);
        for value in values {
            let record = Record::from_rdata(
                name.clone(),
                0,
                RData::TXT(TXT::new(vec![(*value).to_owned()])),
            );
            anyhow::ensure!(
                self.handler.upsert(record, 1).await,
                "cannot add TXT {name}"
            );
        }
        Ok(())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// A UDP socket and a TCP listener on the same free port (retrying when TCP's is taken).
async fn bind_pair() -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        match tokio::net::TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "no port free for both UDP and TCP: {last:?}"
    ))
}
