//! Ports for processes that must be told a port up front (Temporal, pebble, challtestsrv, a
//! local service a tunnel points at).
//!
//! A port found by binding `127.0.0.1:0` and letting go is in the kernel's ephemeral range,
//! where the next `:0` bind or outgoing connection on the machine may take it before the
//! process it was meant for binds it (CI saw pebble's management port go that way). Ports
//! here come from below that range instead, walking forward from a random start per test
//! binary so parallel tests, and other runs on the machine, rarely meet; each is checked free
//! when it is handed out.

use std::{
    net::{TcpListener, UdpSocket},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// Lowest port handed out: above the fixed ports `scripts/` use (17xxx) and the relays' TCP
/// endpoint range (`tcp_ports`, 20000-20999 by default, which relays under test scan).
const FIRST: u32 = 21_000;

/// A TCP port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    pick(false)
}

/// A port on 127.0.0.1 free for both TCP and UDP right now (a DNS server's).
pub fn free_tcp_udp_port() -> u16 {
    pick(true)
}

fn pick(udp: bool) -> u16 {
    let end = ephemeral_start();
    if end <= FIRST {
        // No room below the ephemeral range: fall back to asking the kernel.
        return kernel_port(udp);
    }
    let span = end - FIRST;
    for _ in 0..span {
        let port = FIRST + cursor().fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let free = tcp.is_ok() && (!udp || UdpSocket::bind(("127.0.0.1", port)).is_ok());
        if free {
            return port;
        }
    }
    kernel_port(udp)
}

/// Where this process's walk is; starts at a random offset.
fn cursor() -> &'static AtomicU32 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    CURSOR.get_or_init(|| AtomicU32::new(rand::random::<u32>() % 100_000))
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn kernel_port(udp: bool) -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = tcp.local_addr().expect("a bound address").port();
        if !udp || UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let below_ephemeral = ephemeral_start() > FIRST;
        for port in ports {
            if below_ephemeral {
                assert!(
                    (FIRST..ephemeral_start()).contains(&u32::from(port)),
                    "{port}"
                );
            }
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
        let dns = free_tcp_udp_port();
        UdpSocket::bind(("127.0.0.1", dns)).expect("free for UDP");
    }
}
