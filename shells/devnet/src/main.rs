//! `till-devnet`: serves a development regtest chain with the Esplora HTTP subset.

use std::process::ExitCode;

use anyhow::Context as _;

const HELP: &str = "\
till-devnet - a DEVELOPMENT chain for tests and demos, not Bitcoin

An in-memory regtest chain that serves the Esplora HTTP subset ldk-node and BDK
use, with a faucet, mining and reorgs. Its coins are worthless and everything is
lost when it stops. Point real deployments at a real Esplora, Electrum or bitcoind.

USAGE:
    till-devnet serve [--listen ADDR]    serve until Ctrl-C (default 127.0.0.1:3002)
    till-devnet --help                   print this help

ENDPOINTS (see docs/DEVNET.md):
    Esplora subset: /blocks, /block/..., /block-height/N, /tx/..., /scripthash/...,
                    /fee-estimates, POST /tx
    POST /devnet/mine    {\"blocks\": N, \"address\": \"bcrt1...\"}  -> [block hashes]
    POST /devnet/faucet  {\"address\": \"bcrt1...\", \"amount_sat\": N} -> {\"txid\": ...}
    POST /devnet/reorg   {\"depth\": N}  replaces the last N blocks with N+1 empty ones
";

const DEFAULT_LISTEN: &str = "127.0.0.1:3002";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Some(config)) => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("till-devnet: {err:#}");
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(usage) => {
            eprintln!("till-devnet: {usage}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

/// The config for `serve`, `None` for help, or what is wrong with the arguments.
fn parse(args: &[String]) -> Result<Option<till_devnet::Config>, String> {
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(None),
        Some("serve") => {
            let mut listen = DEFAULT_LISTEN.to_owned();
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--listen" => {
                        listen = rest
                            .next()
                            .ok_or("--listen needs an address such as 127.0.0.1:3002")?
                            .clone();
                    }
                    "-h" | "--help" => return Ok(None),
                    other => return Err(format!("unknown argument {other:?} to serve")),
                }
            }
            Ok(Some(till_devnet::Config::new(listen)))
        }
        Some(other) => Err(format!("unknown command {other:?}")),
    }
}

fn serve(config: till_devnet::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(till_devnet::run(config, async {
        // If Ctrl-C cannot be watched, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }))?;
    Ok(())
}
