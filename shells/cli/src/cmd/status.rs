//! `till status`: this device's log, what is shipped, the backup lag.

use serde::Serialize;

use super::{open_log, read_failure};
use crate::output::{Output, time};
use crate::{Config, Failure};

#[derive(Serialize)]
struct Status {
    data_dir: String,
    last_seq: u64,
    last_at: Option<String>,
    shipped_seq: u64,
    backup_lag_events: u64,
    server_url: Option<String>,
}

pub fn run(config: &Config, out: &Output) -> Result<(), Failure> {
    let log = open_log(config)?;
    let head = log.head().map_err(read_failure)?;
    let shipped = log.shipped().map_err(read_failure)?;
    let s = Status {
        data_dir: config.data_dir.display().to_string(),
        last_seq: head.seq,
        last_at: (head.seq > 0).then(|| time(head.at_ms)),
        shipped_seq: shipped,
        backup_lag_events: head.seq - shipped,
        server_url: config.server_url.clone(),
    };
    out.emit(&s, || {
        format!(
            "data dir {}\nlast local seq {}{}\nlast durable seq {} (backup lag: {} events)\nserver {}",
            s.data_dir,
            s.last_seq,
            s.last_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            s.shipped_seq,
            s.backup_lag_events,
            s.server_url.as_deref().unwrap_or("(not configured)")
        )
    });
    Ok(())
}
