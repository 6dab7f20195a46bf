//! Shared helpers for Till's cross-crate tests.
pub mod postgres;
pub mod server;
pub mod vss_conformance;
