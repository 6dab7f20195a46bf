//! `till audit export`: every event as one JSON line, with its hash-chain
//! link and a decoded summary where Till knows the record's type.

use std::io::Write as _;

use clap::Subcommand;
use serde::Serialize;

use super::{EventView, open_log, read_failure};
use crate::{Config, Failure};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every event as JSON Lines on stdout: seq, time, device, epoch, key,
    /// version, op, size, hash, prev_hash, summary. The chain can be checked
    /// from the output alone: each line's prev_hash is the line before's hash.
    Export {
        /// First seq to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last seq to export (default: the last event).
        #[arg(long)]
        to: Option<u64>,
        /// Include each value, hex-encoded.
        #[arg(long)]
        values: bool,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    event: &'a EventView,
    chain_ok: bool,
}

pub fn run(config: &Config, command: AuditCommand) -> Result<(), Failure> {
    let AuditCommand::Export { from, to, values } = command;
    let log = open_log(config)?;
    let head = log.head().map_err(read_failure)?;
    let to = to.unwrap_or(head.seq);
    if to > head.seq {
        return Err(Failure::Refused(format!(
            "seq {to} is beyond the log's last event (seq {})",
            head.seq
        )));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut prev: Option<String> = None;
    let mut seq = from.max(1);
    while seq <= to {
        let batch = log.events(seq, to, 1_000).map_err(read_failure)?;
        let Some(last) = batch.last() else { break };
        seq = last.seq + 1;
        for e in &batch {
            let view = EventView::new(e, values);
            let chain_ok = prev.as_ref().is_none_or(|p| *p == view.prev_hash);
            prev = Some(view.hash.clone());
            let line = serde_json::to_string(&Line {
                event: &view,
                chain_ok,
            })
            .expect("event serializes");
            if let Err(e) = writeln!(out, "{line}") {
                crate::output::stdout_failed(e);
            }
        }
    }
    if let Err(e) = out.flush() {
        crate::output::stdout_failed(e);
    }
    Ok(())
}
