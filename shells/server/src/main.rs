//! `till-server`: parses the command line and calls the library.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use till_server::{Backend, DEFAULT_MAX_BODY_BYTES, Role, ServeConfig, Server};

/// Till's server: a VSS-compatible store for Till's encrypted backups.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the VSS endpoints under /vss, GET /health, the lease API, the device hub
    /// (/api/v1/hub), the store API (/api/v1/stores/{store}/...), invitations and the POS page.
    Serve {
        /// Address to listen on; port 0 picks a free port (printed on start).
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        store: StoreArgs,
        /// Refuse request bodies larger than this (HTTP 413).
        #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Accept head writes from any device, like a stock VSS server (fencing by versions
        /// alone); the lease is still recorded. For tests.
        #[arg(long)]
        no_lease_check: bool,
        /// The URL devices and browsers reach this server at (default: http:// and the bound
        /// address); given to devices that redeem an invitation.
        #[arg(long, env = "TILL_PUBLIC_URL")]
        public_url: Option<String>,
        /// This server's Lightning node (pubkey@host:port), announced to devices on the hub.
        #[arg(long)]
        node_address: Option<String>,
        /// Seconds between the hub's pings; a device silent for three is disconnected.
        #[arg(long, default_value_t = till_server::DEFAULT_HEARTBEAT.as_secs_f64())]
        heartbeat_secs: f64,
        /// Seconds a command waits for the master device's answer.
        #[arg(long, default_value_t = till_server::DEFAULT_COMMAND_TIMEOUT.as_secs_f64())]
        command_timeout_secs: f64,
        /// Seconds a client has to send a whole request head, from its first byte (from the
        /// connection, for its first request); a slower or silent connection is closed.
        #[arg(long, default_value_t = till_server::DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
        header_timeout_secs: f64,
        /// Seconds a kept-alive connection may stay open with no request in progress and nothing
        /// sent either way. Event streams and the hub's WebSockets are not affected.
        #[arg(long, default_value_t = till_server::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
        idle_timeout_secs: f64,
        /// The most connections open at once (WebSockets included); more are closed as soon as
        /// they are accepted. Keep it below the process's open-file limit (ulimit -n).
        #[arg(long, default_value_t = till_server::DEFAULT_MAX_CONNECTIONS,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_connections: usize,
    },
    /// Manage invitations.
    Invite {
        #[command(subcommand)]
        command: InviteCommand,
    },
    /// Manage tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print its bearer token, alone on one line.
    Add {
        /// The user's name (unique).
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum InviteCommand {
    /// Create a single-use, expiring invitation to a store (created if new) and print its link,
    /// alone on the last line. With --data-dir, a server running on that directory creates it
    /// (through <data-dir>/admin.sock); with none running, the store file is opened directly.
    Create {
        /// The store's name.
        #[arg(long)]
        store: String,
        #[command(flatten)]
        backend: StoreArgs,
        /// The URL devices reach the server at; the link is built from it. Default: the running
        /// server's own (its --public-url), or http://127.0.0.1:8080 when none runs.
        #[arg(long, env = "TILL_PUBLIC_URL")]
        public_url: Option<String>,
        /// Seconds until the invitation expires.
        #[arg(long, default_value_t = till_server::DEFAULT_INVITE_TTL.as_secs_f64())]
        expires_in_secs: f64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Add a token to an existing store and print it, alone on one line.
    Add {
        /// The store's name.
        #[arg(long)]
        store: String,
        /// owner (the merchant's devices) or cashier (the POS page: create and view invoices).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        backend: StoreArgs,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "owner" => Ok(Role::Owner),
        "cashier" => Ok(Role::Cashier),
        other => Err(format!("unknown role {other:?}; use owner or cashier")),
    }
}

/// A duration option: more than 0 (a heartbeat of zero stops the hub's timer, a timeout of zero
/// closes every connection) and at most `max_secs` (the hub counts three heartbeats, which must
/// not overflow).
fn seconds(what: &str, secs: f64, max_secs: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        secs > 0.0 && secs <= max_secs,
        "--{what} must be more than 0 and at most {max_secs} (seconds), not {secs}"
    );
    Ok(Duration::from_secs_f64(secs))
}

/// The longest heartbeat or timeout: a day.
const DAY_SECS: f64 = 86_400.0;

#[derive(Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// Keep objects in an embedded redb file in this directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep objects in PostgreSQL (postgres://user:password@host:port/db).
    #[arg(long, env = "TILL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    fn backend(self) -> Backend {
        match (self.data_dir, self.database_url) {
            (Some(data_dir), _) => Backend::Redb { data_dir },
            (None, Some(url)) => Backend::Postgres { url },
            (None, None) => unreachable!("clap requires one of --data-dir and --database-url"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            store,
            max_body_bytes,
            no_lease_check,
            public_url,
            node_address,
            heartbeat_secs,
            command_timeout_secs,
            header_timeout_secs,
            idle_timeout_secs,
            max_connections,
        } => {
            let mut config = ServeConfig::new(listen, store.backend());
            config.max_body_bytes = max_body_bytes;
            config.lease_check = !no_lease_check;
            config.public_url = public_url;
            config.node_address = node_address;
            config.heartbeat = seconds("heartbeat-secs", heartbeat_secs, DAY_SECS)?;
            config.command_timeout =
                seconds("command-timeout-secs", command_timeout_secs, DAY_SECS)?;
            config.header_timeout = seconds("header-timeout-secs", header_timeout_secs, DAY_SECS)?;
            config.idle_timeout = seconds("idle-timeout-secs", idle_timeout_secs, DAY_SECS)?;
            config.max_connections = max_connections;
            let server = Server::bind(config).await.context("starting till-server")?;
            println!("till-server listening on http://{}", server.local_addr()?);
            server.run(shutdown_signal()).await.context("serving")?;
        }
        Command::User {
            command: UserCommand::Add { name, store },
        } => {
            let token = till_server::add_user(&store.backend(), &name)
                .await
                .context("adding a user")?;
            println!("{token}");
        }
        Command::Invite {
            command:
                InviteCommand::Create {
                    store,
                    backend,
                    public_url,
                    expires_in_secs,
                },
        } => {
            let ttl = seconds("expires-in-secs", expires_in_secs, 30.0 * DAY_SECS)?;
            let invitation =
                till_server::create_invite(&backend.backend(), &store, public_url.as_deref(), ttl)
                    .await
                    .context("creating an invitation")?;
            println!(
                "Invitation to store {:?}, single use, valid for {} s:",
                invitation.store,
                ttl.as_secs()
            );
            println!("{}", invitation.link);
        }
        Command::Token {
            command:
                TokenCommand::Add {
                    store,
                    role,
                    backend,
                },
        } => {
            let token = till_server::add_token(&backend.backend(), &store, role)
                .await
                .context("adding a token")?;
            println!("{token}");
        }
    }
    Ok(())
}
