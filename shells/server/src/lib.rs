//! `till-server` is Till's server: a drop-in VSS (Versioned Storage Service) server that any VSS
//! client, ldk-node's included, can use unchanged, storing its objects in an embedded redb file or
//! in PostgreSQL (for operators running several server processes in front of one database).
//!
//! Users authenticate with bearer tokens the server issues ([`add_user`]); tokens are stored
//! hashed and checked in constant time, and every object is scoped by (user, store id, key), so no
//! user can read, list, write or delete another's objects whatever store id it sends. The endpoints
//! live under `/vss` with the exact semantics of the reference server; `GET /health` answers 200
//! while the store is reachable. Start it with [`Server::bind`] and [`Server::run`], or [`run`].
//!
//! The server is also lease-aware (DESIGN.md R4), as defence in depth on top of the clients' own
//! version fencing: it reads the plaintext lease header in front of every head object written, keeps
//! the store's lease durably in its store (changed in the same transaction as the head), and refuses
//! with CONFLICT a head write from a device that does not hold the lease, naming the holder.
//! `GET /api/v1/stores/{store_id}/lease` (same bearer token) answers the lease as JSON:
//! `{"store_id", "device" (32 hex digits), "epoch", "state": "held" | "released"}`, 404
//! `{"error"}` for a store without one. [`ServeConfig::lease_check`] off (`--no-lease-check`) makes
//! the server accept writes like a stock VSS server while still recording the lease.

mod auth;
mod http;
mod store;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use store::{CreateUserError, Storage};

pub use store::StoreError;

/// The default `--max-body-bytes`: 64 MiB. ldk-node writes its whole network graph (tens of MB on
/// mainnet) as one object, and a put may carry up to 1000 items; the limit bounds what one request
/// can make the server buffer.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Where the objects live.
#[derive(Clone)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded redb file (`till-server.redb`) in this directory, created if missing.
    Redb {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A PostgreSQL database; the schema is created on first use.
    Postgres {
        /// A libpq-style URL, `postgres://user:password@host:port/db`.
        url: String,
    },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Redb { data_dir } => {
                f.debug_struct("Redb").field("data_dir", data_dir).finish()
            }
            // The URL may carry a password.
            Backend::Postgres { .. } => f.debug_struct("Postgres").finish_non_exhaustive(),
        }
    }
}

/// What `till-server serve` needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The address to listen on (port 0 picks a free one; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Where the objects live.
    pub backend: Backend,
    /// Requests with a larger body are refused with HTTP 413.
    pub max_body_bytes: usize,
    /// Refuse head writes from a device that does not hold the store's lease (the default). Off,
    /// the server behaves like a stock VSS server, fencing by versions alone, and only records the
    /// lease; tests use this to show that clients fence themselves.
    pub lease_check: bool,
}

impl ServeConfig {
    /// A config with the default body limit and the lease check on.
    pub fn new(listen: SocketAddr, backend: Backend) -> Self {
        ServeConfig {
            listen,
            backend,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            lease_check: true,
        }
    }
}

/// What went wrong starting or running the server, or adding a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `user add` with a name that is taken.
    #[error("a user named {name:?} already exists")]
    UserExists {
        /// The name.
        name: String,
    },
    /// `user add` with a name that is not allowed.
    #[error("invalid user name {name:?}: {reason}")]
    InvalidUserName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

async fn open(backend: &Backend) -> Result<Arc<dyn Storage>, Error> {
    Ok(match backend {
        Backend::Redb { data_dir } => {
            let dir = data_dir.clone();
            let storage = tokio::task::spawn_blocking(move || store::redb::RedbStorage::open(&dir))
                .await
                .map_err(|e| StoreError::new("opening the redb store panicked", e))??;
            Arc::new(storage)
        }
        Backend::Postgres { url } => {
            Arc::new(store::postgres::PostgresStorage::connect(url).await?)
        }
    })
}

/// Creates a user and returns its bearer token, the only time the token exists in clear.
pub async fn add_user(backend: &Backend, name: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidUserName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    let storage = open(backend).await?;
    let (token, credential) = auth::issue();
    match storage.create_user(name, &credential).await {
        Ok(_) => Ok(token),
        Err(CreateUserError::Exists(name)) => Err(Error::UserExists { name }),
        Err(CreateUserError::Store(e)) => Err(e.into()),
    }
}

/// A server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<http::App>,
}

impl Server {
    /// Opens the store and binds the listen address.
    pub async fn bind(config: ServeConfig) -> Result<Server, Error> {
        let store = open(&config.backend).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let app = Arc::new(http::App {
            store,
            max_body_bytes: config.max_body_bytes,
            lease_check: config.lease_check,
        });
        Ok(Server { listener, app })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, http::router(self.app))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::bind(config).await?.run(shutdown).await
}
