//! Shared helpers for Till's cross-crate tests.
