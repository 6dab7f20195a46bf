//! `till-vss` is Till's client for the VSS protocol (LDK's Versioned Storage Service): the protobuf
//! messages and an async client for the four calls, `getObject`, `putObjects`, `deleteObject` and
//! `listKeyVersions`, that works against any server speaking the protocol, Till's own server and the
//! reference server alike.
//!
//! Errors are decided by the response's `error_code`, not its HTTP status, and come back as
//! [`Error`] with the facts in the variant. Transient failures (server errors, broken connections,
//! timeouts) are retried with exponential backoff and jitter per [`RetryPolicy`]; conflicts and
//! other definite answers never are. Credentials come from an [`AuthProvider`], such as
//! [`BearerToken`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use till_vss::{BearerToken, ClientConfig, KeyValue, PutObjectRequest, VssClient};
//!
//! let client = VssClient::new("http://127.0.0.1:8080/vss", BearerToken::new("TOKEN")?, ClientConfig::default())?;
//! client
//!     .put_objects(&PutObjectRequest {
//!         store_id: "store".into(),
//!         global_version: None,
//!         transaction_items: vec![KeyValue::new("k", 0, b"v".to_vec())],
//!         delete_items: vec![],
//!     })
//!     .await?;
//! assert_eq!(client.get_object("store", "k").await?.version, 1);
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod replica;
mod retry;

pub use auth::{AuthError, AuthProvider, BearerToken, FixedHeaders};
pub use client::{BuildError, ClientConfig, MAX_LISTED_KEYS, MAX_LISTING_PAGES, VssClient};
pub use error::{Error, Operation};
pub use proto::{
    DeleteObjectRequest, ErrorCode, GetObjectRequest, KeyValue, ListKeyVersionsRequest,
    ListKeyVersionsResponse, PutObjectRequest,
};
pub use retry::RetryPolicy;
