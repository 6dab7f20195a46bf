//! `till status`: role, lease holder and epoch, last local and last durable seq, backup lag.
//! From the running daemon when there is one; else from the log and the server.

use serde_json::{Value, json};

use super::{device, open_log, read_failure};
use crate::config::Secrets;
use crate::control::{self, Request};
use crate::output::{Output, time};
use crate::{Config, Failure};
use till_engine::disk::megabytes;

pub fn run(config: &Config, out: &Output) -> Result<(), Failure> {
    let v = control::call_or(config, &Request::Status, || offline(config))?;
    out.emit(&v, || text(&v));
    Ok(())
}

/// The status without a daemon: the log's seqs, and the lease from the server when paired.
fn offline(config: &Config) -> Result<Value, Failure> {
    let log = open_log(config)?;
    let head = log.head().map_err(read_failure)?;
    let shipped = log.shipped().map_err(read_failure)?;
    drop(log);
    let secrets = Secrets::load(config).map_err(Failure::Failed)?;
    let lease = if secrets.mnemonic.is_some() && device::pairing(config, &secrets).is_ok() {
        match device::open_till(config).and_then(|(t, _)| {
            let mine = t.device_id();
            t.lease().map(|l| (l, mine)).map_err(device::engine_failure)
        }) {
            Ok((Some(l), mine)) => json!({
                "device": l.device.to_string(),
                "epoch": l.epoch,
                "held": l.held,
                "this_device": l.device == mine,
            }),
            Ok((None, _)) => Value::Null,
            Err(e) => json!({ "error": e.to_string() }),
        }
    } else {
        Value::Null
    };
    let role = match lease.get("this_device").and_then(Value::as_bool) {
        Some(true) if lease["held"] == true => "master (not running)",
        _ if secrets.mnemonic.is_none() => "no wallet",
        _ => "follower (not running)",
    };
    Ok(json!({
        "role": role,
        "role_text": role,
        "data_dir": config.data_dir.display().to_string(),
        "lease": lease,
        "last_seq": head.seq,
        "last_at": (head.seq > 0).then(|| time(head.at_ms)),
        "durable_seq": shipped,
        "backup_lag_events": head.seq - shipped,
        "disk_free_bytes": till_engine::disk::free_bytes(&config.log_path()).ok(),
        "min_free_disk_bytes": config.min_free_disk,
        "server_url": config.server_url,
        "store": config.store,
        "daemon": false,
    }))
}

fn text(v: &Value) -> String {
    let lease = &v["lease"];
    let lease = if lease.is_null() {
        "none (no backup yet, or not paired)".to_owned()
    } else if let Some(e) = lease.get("error").and_then(Value::as_str) {
        format!("unknown: {e}")
    } else {
        format!(
            "device {} epoch {} ({})",
            lease["device"].as_str().unwrap_or("?"),
            lease["epoch"],
            if lease["held"] == true {
                "held"
            } else {
                "released"
            }
        )
    };
    let mut text = format!(
        "role {}\nlease {lease}\nlast local seq {}\nlast durable seq {} (backup lag: {} events)\nserver {}",
        v["role_text"].as_str().unwrap_or("?"),
        v["last_seq"],
        v["durable_seq"],
        v["backup_lag_events"],
        v["server_url"].as_str().unwrap_or("(not configured)")
    );
    if let Some(b) = v.get("backup").and_then(Value::as_str) {
        text.push_str(&format!("\nbackup {b}"));
    }
    if let Some(free) = v["disk_free_bytes"].as_u64() {
        let floor = v["min_free_disk_bytes"].as_u64().unwrap_or(0);
        text.push_str(&format!("\ndisk {} free", megabytes(free)));
        if floor > 0 {
            text.push_str(&format!(
                " (new sales are refused below {})",
                megabytes(floor)
            ));
        }
    }
    text
}
