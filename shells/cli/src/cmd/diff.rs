//! `till diff A B`: the keys that changed between seq A and seq B.

use clap::Args;
use serde::Serialize;

use super::{open_log, read_failure};
use crate::output::Output;
use crate::{Config, Failure};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier seq.
    a: u64,
    /// The later seq.
    b: u64,
}

#[derive(Serialize)]
struct Change {
    change: &'static str,
    namespace: String,
    sub_namespace: String,
    key: String,
    from_version: Option<u64>,
    to_version: Option<u64>,
}

pub fn run(config: &Config, out: &Output, args: DiffArgs) -> Result<(), Failure> {
    if args.a > args.b {
        return Err(Failure::Usage(format!(
            "diff A B needs A <= B (got {} and {})",
            args.a, args.b
        )));
    }
    let log = open_log(config)?;
    let before = log.replay(args.a).map_err(read_failure)?;
    let after = log.replay(args.b).map_err(read_failure)?;
    let mut changes = Vec::new();
    for (k, e) in after.entries() {
        let old = before.entry(k);
        let change = match (old.map(|o| o.is_live()), e.is_live()) {
            (None | Some(false), true) => "added",
            (Some(true), false) => "removed",
            (Some(true), true) if old.unwrap().version != e.version => "changed",
            _ => continue,
        };
        changes.push(Change {
            change,
            namespace: k.namespace.clone(),
            sub_namespace: k.sub_namespace.clone(),
            key: k.key.clone(),
            from_version: old.map(|o| o.version),
            to_version: Some(e.version),
        });
    }
    if out.json() {
        out.emit(
            &serde_json::json!({"from": args.a, "to": args.b, "changes": changes}),
            String::new,
        );
    } else {
        crate::output::outln!(
            "{} keys changed between seq {} and seq {}",
            changes.len(),
            args.a,
            args.b
        );
        for c in &changes {
            let mark = match c.change {
                "added" => '+',
                "removed" => '-',
                _ => '~',
            };
            crate::output::outln!(
                "{mark} {}/{}/{}  {} -> v{}",
                c.namespace,
                c.sub_namespace,
                c.key,
                c.from_version
                    .map_or("new".to_string(), |v| format!("v{v}")),
                c.to_version.unwrap_or_default()
            );
        }
    }
    Ok(())
}
