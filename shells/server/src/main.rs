//! `till-server`: parses the command line and calls the library.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use till_server::{Backend, DEFAULT_MAX_BODY_BYTES, ServeConfig, Server};

/// Till's server: a VSS-compatible store for Till's encrypted backups.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the VSS endpoints under /vss, GET /health and GET /api/v1/stores/{store_id}/lease.
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
        } => {
            let mut config = ServeConfig::new(listen, store.backend());
            config.max_body_bytes = max_body_bytes;
            config.lease_check = !no_lease_check;
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
    }
    Ok(())
}
