//! End-to-end suites: real processes over real sockets against real stores.
//! One test binary (`cargo test -p burrow-e2e`); each test starts its own stack.

mod accounts;
mod agent_config;
mod audit;
mod certificates;
mod cli;
mod console;
mod control_plane;
mod edge_binds;
mod edge_input;
mod edge_policy;
mod https;
mod inspector;
mod many_relays;
mod openapi;
mod plans;
mod pooling;
mod protocols;
mod sessions;
mod support;
mod tracing_spans;
mod tunnel;
mod usage;
mod users;
mod webhooks;
