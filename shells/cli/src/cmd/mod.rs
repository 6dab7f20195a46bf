//! One module per subcommand.

pub mod audit;
pub mod device;
pub mod diff;
pub mod lease;
pub mod log;
pub mod node;
pub mod replay;
pub mod run;
pub mod setup;
pub mod status;

use serde::Serialize;
use till_log::{Event, Log, Op, OpenError, ReadError};

use crate::output::{hex, time};
use crate::{Config, Failure};

/// Opens this device's log for reading; it must exist.
pub fn open_log(config: &Config) -> Result<Log, Failure> {
    let path = config.log_path();
    if !path.exists() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "no Till data in {} (no {}); run `till init` or `till restore` first, or pass --data-dir",
            config.data_dir.display(),
            crate::config::LOG_FILE
        )));
    }
    Log::open(&path).map_err(|e| match e {
        OpenError::Storage(s) if s.to_string().contains("already open") => {
            Failure::Refused(format!(
                "the log in {} is in use by a running till; stop it first",
                config.data_dir.display()
            ))
        }
        other => Failure::Failed(
            anyhow::Error::new(other).context(format!("opening the log {}", path.display())),
        ),
    })
}

/// Maps a read error: asking past the end is refused, the rest failed.
pub fn read_failure(e: ReadError) -> Failure {
    match e {
        ReadError::BeyondHead { requested, head } => Failure::Refused(format!(
            "seq {requested} is beyond the log's last event (seq {head})"
        )),
        other => Failure::Failed(anyhow::Error::new(other)),
    }
}

/// An event as printed.
#[derive(Serialize)]
pub struct EventView {
    pub seq: u64,
    pub at: String,
    pub at_ms: u64,
    pub device: String,
    pub epoch: u64,
    pub namespace: String,
    pub sub_namespace: String,
    pub key: String,
    pub version: u64,
    pub op: &'static str,
    pub size: usize,
    pub hash: String,
    pub prev_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
    /// A decoded summary of the record, where Till knows its type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl EventView {
    pub fn new(e: &Event, with_value: bool) -> Self {
        let (op, size, value) = match &e.op {
            Op::Put(v) => ("put", v.len(), Some(v)),
            Op::Delete => ("delete", 0, None),
        };
        Self {
            seq: e.seq,
            at: time(e.at_ms),
            at_ms: e.at_ms,
            device: e.device.to_string(),
            epoch: e.epoch,
            namespace: e.key.namespace.clone(),
            sub_namespace: e.key.sub_namespace.clone(),
            key: e.key.key.clone(),
            version: e.version,
            op,
            size,
            hash: e.hash().to_string(),
            prev_hash: e.prev_hash.to_string(),
            value_hex: if with_value {
                value.map(|v| hex(v))
            } else {
                None
            },
            summary: value.and_then(|v| till_engine::describe(&e.key, v)),
        }
    }

    /// One line: seq, time, op, key, version, size.
    pub fn line(&self) -> String {
        format!(
            "{:>8}  {}  {:<6}  {}/{}/{}  v{}  {} B  epoch {}",
            self.seq,
            self.at,
            self.op,
            self.namespace,
            self.sub_namespace,
            self.key,
            self.version,
            self.size,
            self.epoch
        ) + &self
            .summary
            .as_deref()
            .map(|s| format!("  {s}"))
            .unwrap_or_default()
    }
}
