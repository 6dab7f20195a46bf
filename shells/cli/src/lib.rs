//! `till`, the command-line app: a thin shell over Till's libraries. It parses
//! arguments into a [`Config`], calls the library, and prints for people by
//! default or JSON with `--json`.
//!
//! Exit codes: 0 done; 1 failed (I/O, damaged data, a server error); 2 usage
//! error (bad arguments); 3 refused (the request is well-formed but cannot be
//! done now: past the log's end, another device is master, wrong mnemonic).
//!
//! Configuration comes from `<data-dir>/till.toml`, then environment variables
//! (`TILL_DATA_DIR`, `TILL_SERVER_URL`), then flags, each overriding the one
//! before.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod cmd;
mod config;
mod control;
mod demo;
mod hidden;
mod output;

pub use config::Config;

/// Till: a merchant's Lightning till.
#[derive(Debug, Parser)]
#[command(name = "till", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
struct Global {
    /// Where this device keeps its data (default: $TILL_DATA_DIR, else ~/.till).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print data as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The till-server's URL (default: till.toml, else $TILL_SERVER_URL).
    #[arg(long, global = true)]
    server_url: Option<String>,
    /// bitcoin, testnet, signet or regtest (default: till.toml, else $TILL_NETWORK, else bitcoin).
    #[arg(long, global = true)]
    network: Option<String>,
    /// The Esplora server the node syncs from (default: till.toml, else $TILL_ESPLORA_URL).
    #[arg(long, global = true)]
    esplora_url: Option<String>,
    /// Also print the log file's lines (<data-dir>/logs/till.log) on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair this device with a till-server from an invitation link.
    Pair(cmd::setup::PairArgs),
    /// Create a new till: new recovery words, shown once.
    Init(cmd::setup::InitArgs),
    /// Bring an existing till to this device from its recovery words.
    Restore(cmd::setup::RestoreArgs),
    /// Run the till: follow the backup, run the node as master, answer this device's commands.
    Run(cmd::run::RunArgs),
    /// Stop this device's running till (a master keeps its lease).
    Stop,
    /// Create an invoice.
    Invoice(cmd::node::InvoiceArgs),
    /// Pay a BOLT11 invoice and wait for the outcome.
    Pay(cmd::node::PayArgs),
    /// Refund a received payment by paying the customer's invoice.
    Refund(cmd::node::RefundArgs),
    /// Balances: lightning, on chain, pending.
    Balance(cmd::node::ReadArgs),
    /// Payments, oldest first.
    Payments(cmd::node::ReadArgs),
    /// Lightning channels: list, open, close.
    #[command(subcommand)]
    Channels(cmd::node::ChannelsCommand),
    /// The on-chain wallet: address, send.
    #[command(subcommand)]
    Onchain(cmd::node::OnchainCommand),
    /// What the node is: id, network, block height, channels, peers.
    Info,
    /// Ship everything and release the lease, so another device becomes master.
    Handoff,
    /// Take the till over from a lost master device (asks for confirmation).
    Takeover(cmd::lease::TakeoverArgs),
    /// Inspect the local event log.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Rebuild the state as it was at a seq or a time (read-only).
    Replay(cmd::replay::ReplayArgs),
    /// The keys that changed between two seqs.
    Diff(cmd::diff::DiffArgs),
    /// Role, lease holder and epoch, last local and last durable seq, backup lag.
    Status,
    /// Everything on this machine: a devnet, a server, a till on four
    /// devices, payments, a handoff, a restore, a refused fork and a sale on
    /// the point-of-sale page, which stays up until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Audit exports for developers and accountants.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
}

/// What went wrong, and which exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The request cannot be done now (exit 3).
    #[error("{0}")]
    Refused(String),
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Refused(_) => 3,
        }
    }
}

/// Runs a parsed command line and returns the process's exit code. Errors are
/// printed to stderr, once.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(config::Overrides {
        data_dir: cli.global.data_dir.clone(),
        server_url: cli.global.server_url.clone(),
        network: cli.global.network.clone(),
        esplora_url: cli.global.esplora_url.clone(),
        verbose: cli.global.verbose,
    }) {
        Ok(c) => c,
        Err(e) => return report(e),
    };
    let out = output::Output::new(cli.global.json);
    let result = match cli.command {
        Command::Pair(a) => cmd::setup::pair(&config, &out, a),
        Command::Init(a) => cmd::setup::init(&config, &out, a),
        Command::Restore(a) => cmd::setup::restore(&config, &out, a),
        Command::Run(a) => cmd::run::run(&config, &out, a),
        Command::Stop => cmd::lease::stop(&config, &out),
        Command::Invoice(a) => cmd::node::invoice(&config, &out, a),
        Command::Pay(a) => cmd::node::pay(&config, &out, a),
        Command::Refund(a) => cmd::node::refund(&config, &out, a),
        Command::Balance(a) => cmd::node::balance(&config, &out, a),
        Command::Payments(a) => cmd::node::payments(&config, &out, a),
        Command::Channels(c) => cmd::node::channels(&config, &out, c),
        Command::Onchain(c) => cmd::node::onchain(&config, &out, c),
        Command::Info => cmd::node::info(&config, &out),
        Command::Handoff => cmd::lease::handoff(&config, &out),
        Command::Takeover(a) => cmd::lease::takeover(&config, &out, a),
        Command::Log(c) => cmd::log::run(&config, &out, c),
        Command::Replay(a) => cmd::replay::run(&config, &out, a),
        Command::Diff(a) => cmd::diff::run(&config, &out, a),
        Command::Status => cmd::status::run(&config, &out),
        Command::Audit(c) => cmd::audit::run(&config, c),
        Command::Demo(a) => demo::run(&out, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn report(e: Failure) -> ExitCode {
    match &e {
        Failure::Failed(err) => {
            eprintln!("till: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
        }
        other => eprintln!("till: {other}"),
    }
    ExitCode::from(e.code())
}
