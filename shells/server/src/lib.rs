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
//!
//! Around the backups sits the merchant's store (a store is what `user add` and `invite create`
//! name; its tokens are owner tokens for the merchant's devices or cashier tokens for the POS
//! page, see [`Role`]):
//!
//! - the device hub, a WebSocket at `/api/v1/hub` (protocol in `docs/HUB.md`): devices connect with
//!   an owner token and their device id; the server announces the store's master (the device
//!   holding the lease) whenever a head write changes it, its own Lightning node's address
//!   ([`ServeConfig::node_address`]) and routes commands to the master;
//! - the store API (`shells/server/openapi.yaml`): invoices created through the master and tracked
//!   here as new, paid or expired, with a server-sent event stream of changes; pay, refund,
//!   balances and payments for owner tokens;
//! - invitations ([`create_invite`]): a single-use, expiring link that pairs a device; on redb, a
//!   running server creates them for `till-server invite create` through its admin socket,
//!   `<data-dir>/admin.sock` (mode 0600, its own OS user only, invitations only);
//! - the point-of-sale page at `/pos/{store}`, served entirely by the server.
//!
//! The HTTP server bounds what a client can hold (issue 9): a request head must arrive whole within
//! [`ServeConfig::header_timeout`], a connection with nothing in progress is closed after
//! [`ServeConfig::idle_timeout`], and at most [`ServeConfig::max_connections`] connections are open
//! at once (more are closed as soon as they are accepted). Requests in progress, event streams and
//! the hub's WebSockets are not timed out by these.

mod admin;
mod auth;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod invite;
mod invoices;
mod pos;
mod share;
mod store;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{CreateUserError, Storage};

pub use hub::HUB_PROTOCOL_VERSION;
pub use invite::{DEFAULT_INVITE_TTL, DEFAULT_PUBLIC_URL, Invitation, create_invite};
pub use store::{Role, StoreError};

/// How often the hub pings each device by default; three missed pings close the connection.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the hub waits for the master's answer to a command by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `--max-body-bytes`: 64 MiB. ldk-node writes its whole network graph (tens of MB on
/// mainnet) as one object, and a put may carry up to 1000 items; the limit bounds what one request
/// can make the server buffer.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The default `--header-timeout-secs`: a request head must arrive whole within 10 s of its first
/// byte (of the connection's accept, for its first request), however slowly its bytes come.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `--idle-timeout-secs`: a kept-alive connection with nothing in progress is closed
/// after 120 s, longer than common clients keep idle connections (reqwest: 90 s), so a client
/// closes first and never sends a request on a connection the server is closing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default `--max-connections`: 1024 open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors the server needs besides its connections (store, listeners, database pool).
const FD_RESERVE: u64 = 64;

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
    /// The URL devices and browsers reach this server at, given to devices that redeem an
    /// invitation; `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    /// The server's own Lightning node (`pubkey@host:port`), announced to devices on the hub.
    pub node_address: Option<String>,
    /// How often the hub pings each device.
    pub heartbeat: Duration,
    /// How long a command waits for the master's answer.
    pub command_timeout: Duration,
    /// A request head must arrive whole within this long of its first byte (of the connection's
    /// accept, for its first request), or the connection is closed: a client sending its headers a
    /// byte at a time, or nothing, cannot hold a socket.
    pub header_timeout: Duration,
    /// A connection with no request in progress and no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// At most this many connections (WebSockets included) are open at once; more are closed as
    /// soon as they are accepted, and the server serves again as soon as some close.
    pub max_connections: usize,
}

impl ServeConfig {
    /// A config with the default body limit and the lease check on.
    pub fn new(listen: SocketAddr, backend: Backend) -> Self {
        ServeConfig {
            listen,
            backend,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            lease_check: true,
            public_url: None,
            node_address: None,
            heartbeat: DEFAULT_HEARTBEAT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
    /// `token add` for a store that does not exist.
    #[error("no store named {name:?}; create it with `till-server invite create` or `user add`")]
    NoSuchStore {
        /// The name.
        name: String,
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
    /// The server running on the data directory could not be asked through its admin socket, or
    /// refused.
    #[error("the till-server running on this data directory ({}): {detail}", path.display())]
    Admin {
        /// The admin socket.
        path: PathBuf,
        /// What went wrong, or the server's answer.
        detail: String,
    },
}

async fn open(backend: &Backend) -> Result<Arc<dyn Storage>, Error> {
    Ok(open_serving(backend, false).await?.0)
}

/// The backend's store and, when `serving` on PostgreSQL, the hub its server processes share.
async fn open_serving(
    backend: &Backend,
    serving: bool,
) -> Result<(Arc<dyn Storage>, Option<Arc<dyn share::Share>>), Error> {
    Ok(match backend {
        Backend::Redb { data_dir } => {
            let dir = data_dir.clone();
            let storage = tokio::task::spawn_blocking(move || store::redb::RedbStorage::open(&dir))
                .await
                .map_err(|e| StoreError::new("opening the redb store panicked", e))??;
            (Arc::new(storage), None)
        }
        Backend::Postgres { url } => {
            let storage = store::postgres::PostgresStorage::connect(url).await?;
            let share: Option<Arc<dyn share::Share>> = if serving {
                Some(Arc::new(storage.share(url)?))
            } else {
                None
            };
            (Arc::new(storage), share)
        }
    })
}

/// Refuses names that cannot be a user (store) name.
fn check_store_name(name: &str) -> Result<(), Error> {
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
    Ok(())
}

/// Adds a token of `role` to the existing store `store` and returns it, the only time the token
/// exists in clear.
pub async fn add_token(backend: &Backend, store: &str, role: Role) -> Result<String, Error> {
    let storage = open(backend).await?;
    let user = storage
        .user_by_name(store, false)
        .await?
        .ok_or_else(|| Error::NoSuchStore {
            name: store.to_owned(),
        })?;
    let (token, credential) = auth::issue();
    storage.add_token(user, &credential, role).await?;
    Ok(token)
}

/// Creates a user and returns its bearer token, the only time the token exists in clear.
pub async fn add_user(backend: &Backend, name: &str) -> Result<String, Error> {
    check_store_name(name)?;
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
    /// Dropped first: the socket file goes while the store is still held.
    admin: Option<admin::AdminSocket>,
    listener: tokio::net::TcpListener,
    app: Arc<http::App>,
    limits: conn::Limits,
}

/// Says so on stderr when the process may open fewer files than `max_connections` connections
/// need, since accepting then fails (Linux; elsewhere silent).
fn check_open_file_limit(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<u64>().ok());
    if let Some(soft) = soft
        && soft < (max_connections as u64).saturating_add(FD_RESERVE)
    {
        eprintln!(
            "till-server: this process may open {soft} files, fewer than --max-connections \
             {max_connections} and {FD_RESERVE} more need; raise the limit (ulimit -n, systemd's \
             LimitNOFILE) or lower --max-connections"
        );
    }
}

/// The admin task of a running server, stopped when dropped.
struct AdminTask(tokio::task::JoinHandle<()>);

impl AdminTask {
    /// Stops the task and waits for it, so its socket file is gone on return.
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AdminTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    /// Opens the store and binds the listen address.
    pub async fn bind(config: ServeConfig) -> Result<Server, Error> {
        let (store, share) = open_serving(&config.backend, true).await?;
        Server::bind_store(config, store, share, true).await
    }

    /// Like [`Server::bind`], on a redb store that `backend` keeps instead of a file: for the
    /// tests that cut the power under the server (`till_tests::power_cut::Disk`).
    /// `config.backend` is not used, no admin socket is bound, and the store, having no file,
    /// is not opened again after an I/O failure.
    pub async fn bind_on(
        config: ServeConfig,
        backend: impl redb::StorageBackend,
    ) -> Result<Server, Error> {
        let storage =
            tokio::task::spawn_blocking(move || store::redb::RedbStorage::open_on(backend))
                .await
                .map_err(|e| StoreError::new("opening the redb store panicked", e))??;
        Server::bind_store(config, Arc::new(storage), None, false).await
    }

    async fn bind_store(
        config: ServeConfig,
        store: Arc<dyn Storage>,
        share: Option<Arc<dyn share::Share>>,
        with_admin: bool,
    ) -> Result<Server, Error> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(Error::Serve)?;
        check_open_file_limit(config.max_connections);
        let admin = match &config.backend {
            _ if !with_admin => None,
            Backend::Redb { data_dir } => match admin::AdminSocket::bind(data_dir) {
                Ok(socket) => Some(socket),
                // Serving matters more; only `invite create` on a running server is lost.
                Err(e) => {
                    eprintln!(
                        "till-server: no admin socket at {}: {e}; `till-server invite create \
                         --data-dir` works only while the server is stopped",
                        data_dir.join(admin::SOCKET_NAME).display()
                    );
                    None
                }
            },
            Backend::Postgres { .. } => None,
        };
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        let app = Arc::new(http::App {
            store: store.clone(),
            max_body_bytes: config.max_body_bytes,
            lease_check: config.lease_check,
            hub: hub::Hub::new(
                store,
                share,
                config.node_address.clone(),
                config.heartbeat,
                config.command_timeout,
            ),
            invoice_events: tokio::sync::broadcast::channel(1024).0,
            public_url,
        });
        let limits = conn::Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        };
        Ok(Server {
            admin,
            listener,
            app,
            limits,
        })
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
        let Server {
            admin,
            listener,
            app,
            limits,
        } = self;
        let admin = admin.map(|socket| {
            AdminTask(tokio::spawn(
                socket.serve(app.store.clone(), app.public_url.clone()),
            ))
        });
        // With several processes on one database, hear the others' hub notes.
        let hub = app.clone();
        let notes = tokio::spawn(async move { hub::follow_notes(hub).await });
        // The invoice expiry timers live in memory: set again those of invoices still open.
        let resumed = app.clone();
        tokio::spawn(async move {
            if let Err(e) = invoices::resume_expiries(&resumed).await {
                eprintln!("till-server: restoring the invoice expiry timers: {e}");
            }
        });
        let router = http::router(app).layer(axum::middleware::from_fn(conn::track_requests));
        let served = axum::serve(
            conn::LimitedListener::new(listener, limits),
            router.into_make_service_with_connect_info::<conn::ConnHandle>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve);
        notes.abort();
        if let Some(admin) = admin {
            admin.stop().await;
        }
        served
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::bind(config).await?.run(shutdown).await
}
