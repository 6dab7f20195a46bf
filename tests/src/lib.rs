//! Shared helpers for Till's cross-crate tests.
//!
//! [`ldk`] runs ldk-node nodes against an in-process `till-devnet` chain: starting the chain and
//! nodes, funding from the faucet, waiting for events with timeouts, opening channels, paying,
//! and reading the fees the nodes paid from the chain itself.

pub mod counting_proxy;
pub mod ldk;
pub mod postgres;
pub mod power_cut;
pub mod proxy;
pub mod readme;
pub mod replication;
pub mod server;
pub mod shop;
pub mod small_disk;
pub mod tls_front;
pub mod vss_conformance;

/// The number in the environment variable `name`, or `default` when it is unset or not a
/// number: how the longer runs of the randomized tests and benchmarks are asked for.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
