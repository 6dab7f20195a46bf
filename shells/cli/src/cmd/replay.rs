//! `till replay --to-seq N | --at TIME [--out DIR]`: the state as it was,
//! read-only.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use till_log::State;

use super::{open_log, read_failure};
use crate::output::{Output, hex, time};
use crate::{Config, Failure};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["to_seq", "at"])))]
pub struct ReplayArgs {
    /// The state right after this seq.
    #[arg(long)]
    to_seq: Option<u64>,
    /// The state at this time: RFC 3339 (2026-11-21T10:00:00Z) or unix milliseconds.
    #[arg(long)]
    at: Option<String>,
    /// Write the state into this folder (one file per key, plus STATE.json)
    /// instead of printing it. The folder must not exist.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct KeyView {
    namespace: String,
    sub_namespace: String,
    key: String,
    version: u64,
    seq: u64,
    deleted: bool,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
}

#[derive(Serialize)]
pub struct StateView {
    seq: u64,
    hash: String,
    at: String,
    live_keys: usize,
    keys: Vec<KeyView>,
}

pub fn state_view(state: &State, with_values: bool) -> StateView {
    StateView {
        seq: state.seq(),
        hash: state.hash().to_string(),
        at: time(state.at_ms()),
        live_keys: state.live_len(),
        keys: state
            .entries()
            .map(|(k, e)| KeyView {
                namespace: k.namespace.clone(),
                sub_namespace: k.sub_namespace.clone(),
                key: k.key.clone(),
                version: e.version,
                seq: e.seq,
                deleted: e.value.is_none(),
                size: e.value.as_ref().map_or(0, Vec::len),
                value_hex: if with_values {
                    e.value.as_deref().map(hex)
                } else {
                    None
                },
            })
            .collect(),
    }
}

/// Parses RFC 3339 or unix milliseconds.
pub fn parse_time(s: &str) -> Result<u64, Failure> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Failure::Usage(format!(
            "--at {s:?} is not a time: {e} (use RFC 3339, e.g. 2026-11-21T10:00:00Z, or unix milliseconds)"
        ))
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

pub fn run(config: &Config, out: &Output, args: ReplayArgs) -> Result<(), Failure> {
    let log = open_log(config)?;
    let to_seq = match (args.to_seq, &args.at) {
        (Some(seq), _) => seq,
        (None, Some(at)) => log.seq_at(parse_time(at)?).map_err(read_failure)?,
        (None, None) => unreachable!("clap requires one of --to-seq and --at"),
    };
    // A long log takes seconds: a bar of the events folded (on a terminal's stderr only).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replaying {bar:30} {pos}/{len} events ({elapsed})",
        )
        .expect("a valid template"),
    );
    let state = log.replay_with_progress(to_seq, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let state = state.map_err(read_failure)?;
    if let Some(dir) = args.out {
        write_folder(&dir, &state)?;
        let view = state_view(&state, false);
        out.emit(
            &serde_json::json!({"seq": view.seq, "keys": view.keys.len(), "out": dir}),
            || {
                format!(
                    "wrote the state at seq {} ({} keys, {} live) to {}",
                    view.seq,
                    view.keys.len(),
                    view.live_keys,
                    dir.display()
                )
            },
        );
        return Ok(());
    }
    let view = state_view(&state, out.json());
    out.emit(&view, || {
        let mut s = format!(
            "state at seq {} ({}), {} live keys, hash {}",
            view.seq, view.at, view.live_keys, view.hash
        );
        for k in &view.keys {
            s.push_str(&format!(
                "\n  {}/{}/{}  v{}  {}",
                k.namespace,
                k.sub_namespace,
                k.key,
                k.version,
                if k.deleted {
                    "(deleted)".to_string()
                } else {
                    format!("{} B", k.size)
                }
            ));
        }
        s
    });
    Ok(())
}

/// Writes every live value to `dir/<namespace>/<sub_namespace>/<key>` and the
/// whole view (tombstones included) to `dir/STATE.json`.
fn write_folder(dir: &std::path::Path, state: &State) -> Result<(), Failure> {
    if dir.exists() {
        return Err(Failure::Refused(format!(
            "{} exists; replay writes only into a new folder",
            dir.display()
        )));
    }
    let write = || -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (k, v) in state.live() {
            let ns = if k.namespace.is_empty() {
                "_"
            } else {
                &k.namespace
            };
            let sub = if k.sub_namespace.is_empty() {
                "_"
            } else {
                &k.sub_namespace
            };
            let folder = dir.join(ns).join(sub);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join(&k.key), v)?;
        }
        let json = serde_json::to_vec_pretty(&state_view(state, false))?;
        std::fs::write(dir.join("STATE.json"), json)?;
        Ok(())
    };
    write()
        .with_context(|| format!("writing the state into {}", dir.display()))
        .map_err(Failure::Failed)
}
