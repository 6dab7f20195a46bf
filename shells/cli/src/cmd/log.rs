//! `till log tail | show SEQ | verify`.

use clap::Subcommand;
use serde::Serialize;

use super::{EventView, open_log, read_failure};
use crate::output::Output;
use crate::{Config, Failure};

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// The last events, oldest first.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: u64,
    },
    /// One event in full, its value included.
    Show {
        /// The event's seq.
        seq: u64,
    },
    /// Recompute the hash chain and check versions and the materialized state.
    Verify,
}

#[derive(Serialize)]
struct Verified {
    ok: bool,
    events: u64,
    first_seq: u64,
    head_seq: u64,
    head_hash: String,
    keys: u64,
}

pub fn run(config: &Config, out: &Output, command: LogCommand) -> Result<(), Failure> {
    let log = open_log(config)?;
    match command {
        LogCommand::Tail { count } => {
            let head = log.head().map_err(read_failure)?;
            let from = head.seq.saturating_sub(count.max(1) - 1).max(1);
            let events = log
                .events(from, head.seq, count as usize)
                .map_err(read_failure)?;
            for e in &events {
                let view = EventView::new(e, false);
                out.emit(&view, || view.line());
            }
            if events.is_empty() && !out.json() {
                crate::output::outln!("the log is empty");
            }
            Ok(())
        }
        LogCommand::Show { seq } => {
            let head = log.head().map_err(read_failure)?;
            let event = log.event(seq).map_err(read_failure)?.ok_or_else(|| {
                if seq > head.seq || seq == 0 {
                    Failure::Refused(format!(
                        "there is no event {seq}: the log holds seqs 1 to {}",
                        head.seq
                    ))
                } else {
                    Failure::Refused(format!(
                        "event {seq} is not in this log (it was restored from a snapshot after it)"
                    ))
                }
            })?;
            let view = EventView::new(&event, true);
            out.emit(&view, || {
                format!(
                    "{}\n  device {}\n  hash {}\n  prev {}\n  value {}",
                    view.line(),
                    view.device,
                    view.hash,
                    view.prev_hash,
                    view.value_hex.as_deref().unwrap_or("(deleted)")
                )
            });
            Ok(())
        }
        LogCommand::Verify => match log.verify() {
            Ok(report) => {
                let v = Verified {
                    ok: true,
                    events: report.events,
                    first_seq: report.first_seq,
                    head_seq: report.head.seq,
                    head_hash: report.head.hash.to_string(),
                    keys: report.keys,
                };
                out.emit(&v, || {
                    format!(
                        "ok: {} events (seq {} to {}), {} keys, head {}",
                        v.events, v.first_seq, v.head_seq, v.keys, v.head_hash
                    )
                });
                Ok(())
            }
            Err(e) => Err(Failure::Failed(
                anyhow::Error::new(e).context("the log does not verify"),
            )),
        },
    }
}
