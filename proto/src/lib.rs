//! Burrow's wire contracts.
//!
//! # Layout
//! - [`relay`]: the `RelayControl` (api → relay) and `RelayFeed` (relay ← api, server streaming)
//!   gRPC services (tonic/prost, generated at build time by
//!   `protox`, so no `protoc` is needed) through which the api drives relays.
//! - [`directory`]: finding live relays (their Redis presence) and `RelayControl` clients to
//!   them, shared by the api and the worker.
//! - [`grpc_auth`]: the internal key as bearer metadata on internal gRPC calls.
//! - [`client_hello`]: peeks the SNI and ALPN of a TLS ClientHello (relay routing, certificates).
//! - [`proxy_protocol`]: PROXY protocol v2 headers (visitor address for TCP endpoints).
//! - [`tunnel`]: the agent ↔ relay session handshake: length-prefixed JSON frames exchanged on a
//!   fresh TLS connection before the connection switches to HTTP/2 for visitor traffic.
#![forbid(unsafe_code)]

pub mod client_hello;
pub mod directory;
pub mod grpc_auth;
pub mod proxy_protocol;
pub mod tunnel;

/// The `RelayControl` service, package `burrow.relay.v1`.
pub mod relay {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("burrow.relay.v1");
    // `RelayFeed`'s client and server, generated apart (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/feed/burrow.relay.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every service above, for gRPC server reflection
/// (`tonic-reflection`), so `grpcurl`-style clients can list and call them without the files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/burrow_descriptor.bin"));
