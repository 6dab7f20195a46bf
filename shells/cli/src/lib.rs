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
mod demo;
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the local event log.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Rebuild the state as it was at a seq or a time (read-only).
    Replay(cmd::replay::ReplayArgs),
    /// The keys that changed between two seqs.
    Diff(cmd::diff::DiffArgs),
    /// This device's log: last seq, what is shipped, the backup lag.
    Status,
    /// Everything on this machine: a devnet, a server, a till on three
    /// devices, payments, a handoff, a restore and a refused fork.
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
    let config = match Config::load(cli.global.data_dir.clone()) {
        Ok(c) => c,
        Err(e) => return report(Failure::Failed(e)),
    };
    let out = output::Output::new(cli.global.json);
    let result = match cli.command {
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
