//! The storage seam: one trait, two backends (embedded redb, PostgreSQL).
//!
//! Everything a `putObjects` changes travels as one [`PutTransaction`] and each backend applies it in
//! one database transaction, checking every condition first. A later record that must change
//! atomically with a put (the store's lease) becomes a field of [`PutTransaction`] and is checked
//! and written inside the same backend transaction.

pub(crate) mod postgres;
pub(crate) mod redb;

use async_trait::async_trait;

/// The number a backend gave a user when it was created. Objects are keyed by it, never by name or
/// token, so a token can be replaced without moving data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UserId(pub(crate) i64);

/// The stored half of a bearer token: the public id that finds it, and the blake3 hash of its secret.
#[derive(Clone, Debug)]
pub(crate) struct Credential {
    pub(crate) token_id: [u8; 16],
    pub(crate) secret_hash: [u8; 32],
}

/// A key's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) version: i64,
    pub(crate) value: Vec<u8>,
}

/// One write of a `putObjects`: `expected` is -1 (unconditional), 0 (create) or the current version.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) expected: i64,
    pub(crate) value: Vec<u8>,
}

/// One delete item of a `putObjects`: `expected` is -1 (any version) or the current version.
#[derive(Clone, Debug)]
pub(crate) struct Delete {
    pub(crate) key: String,
    pub(crate) expected: i64,
}

/// Everything one `putObjects` changes, applied all-or-nothing in one backend transaction, in this
/// order: writes, then deletes, then the global version (a key named twice sees its earlier item).
#[derive(Clone, Debug)]
pub(crate) struct PutTransaction {
    pub(crate) store_id: String,
    pub(crate) global_version: Option<i64>,
    pub(crate) writes: Vec<Write>,
    pub(crate) deletes: Vec<Delete>,
}

/// What did not match when a transaction was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Conflict {
    #[error("key {key:?} was written at version {expected} but {}", found_text(*found))]
    Write {
        key: String,
        expected: i64,
        found: Option<i64>,
    },
    #[error("key {key:?} was to be deleted at version {expected} but {}", found_text(*found))]
    Delete {
        key: String,
        expected: i64,
        found: Option<i64>,
    },
    #[error("the global version was given as {expected} but is {found}")]
    GlobalVersion { expected: i64, found: i64 },
}

fn found_text(found: Option<i64>) -> String {
    match found {
        Some(v) => format!("is at version {v}"),
        None => "does not exist".to_owned(),
    }
}

/// Why a put was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PutError {
    #[error("{0}")]
    Conflict(Conflict),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backend failed (I/O, database down, corrupt record). Never a protocol answer.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct StoreError {
    context: &'static str,
    detail: String,
}

impl StoreError {
    pub(crate) fn new(context: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError {
            context,
            detail: detail.to_string(),
        }
    }
}

/// One listed key: its name, current version and its creation cursor (the order of listings).
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) version: i64,
    pub(crate) created: i64,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateUserError {
    #[error("a user named {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A backend. Every object is scoped by (user, store_id, key).
#[async_trait]
pub(crate) trait Storage: Send + Sync + 'static {
    /// Succeeds when the backend answers a trivial read.
    async fn health(&self) -> Result<(), StoreError>;

    async fn create_user(
        &self,
        name: &str,
        credential: &Credential,
    ) -> Result<UserId, CreateUserError>;

    /// The user and secret hash of a token id, if such a token exists.
    async fn credential(
        &self,
        token_id: [u8; 16],
    ) -> Result<Option<(UserId, [u8; 32])>, StoreError>;

    async fn get(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
    ) -> Result<Option<Object>, StoreError>;

    /// The store's global version: 0 when never written.
    async fn global_version(&self, user: UserId, store_id: &str) -> Result<i64, StoreError>;

    /// Applies the whole transaction or, on the first mismatch, nothing.
    async fn put(&self, user: UserId, tx: PutTransaction) -> Result<(), PutError>;

    /// Deletes the key if it exists at `expected` (-1: at any version); otherwise does nothing.
    async fn delete(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
        expected: i64,
    ) -> Result<(), StoreError>;

    /// Up to `limit` keys starting with `prefix`, newest first, created before `before` if given.
    async fn list(
        &self,
        user: UserId,
        store_id: &str,
        prefix: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError>;
}
