//! End-to-end tests of the `till` binary (real processes) on a real log.

use std::path::Path;
use std::process::{Command, Output};

use redb::ReadableTable;
use till_log::{Key, Log, Write};

fn till(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_till"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("TILL_DATA_DIR")
        .env_remove("TILL_SERVER_URL")
        .output()
        .expect("run till")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A data dir whose log has 10 events: puts, an update and a delete.
fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("till.redb")).unwrap();
    for i in 0..8u8 {
        log.put(Key::new("payments", "", format!("p{}", i % 5)), vec![i; 4])
            .unwrap();
    }
    log.append(vec![Write::delete(Key::new("payments", "", "p1"))])
        .unwrap();
    log.put(Key::new("till", "refunds", "r1"), b"refund".to_vec())
        .unwrap();
    log.mark_shipped(6).unwrap();
    dir
}

fn head(dir: &Path) -> u64 {
    Log::open(dir.join("till.redb"))
        .unwrap()
        .head()
        .unwrap()
        .seq
}

#[test]
fn log_tail_show_and_verify() {
    let dir = sample();
    let o = till(dir.path(), &["log", "tail", "-n", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("till/refunds/r1"), "{text}");
    assert!(text.contains("delete"), "{text}");

    let o = till(dir.path(), &["--json", "log", "tail"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[8]["op"], "delete");
    assert_eq!(lines[9]["prev_hash"], lines[8]["hash"]);

    let o = till(dir.path(), &["--json", "log", "show", "10"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["value_hex"], "726566756e64"); // "refund"
    assert_eq!(v["key"], "r1");

    let o = till(dir.path(), &["log", "show", "11"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("no event 11"), "{}", stderr(&o));

    let o = till(dir.path(), &["log", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok: 10 events"), "{}", stdout(&o));
}

#[test]
fn verify_names_the_damaged_seq_and_fails() {
    let dir = sample();
    // Alter event 4's stored record: the chain breaks at seq 5.
    {
        let db = redb::Database::create(dir.path().join("till.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("events"))
                .unwrap();
            // The record, then its key's link (docs/FORMAT.md), kept as it was.
            let stored = events.get(4).unwrap().unwrap().value().to_vec();
            let (record, link) = stored.split_at(stored.len() - 8);
            let mut event = till_log::Event::decode(record).unwrap();
            event.op = till_log::Op::Put(b"forged".to_vec());
            events
                .insert(4, [event.encode().as_slice(), link].concat().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let o = till(dir.path(), &["log", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("does not verify"), "{err}");
    assert!(err.contains("seq 5"), "{err}");
}

#[test]
fn replay_to_seq_time_and_folder() {
    let dir = sample();
    let o = till(dir.path(), &["--json", "replay", "--to-seq", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["seq"], 5);
    assert_eq!(v["live_keys"], 5);
    let p0 = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "p0")
        .unwrap();
    assert_eq!(p0["value_hex"], "00000000");

    // At a time: everything was appended just now, so "now" is the head.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let o = till(dir.path(), &["--json", "replay", "--at", &now]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["seq"], 10);
    let o = till(
        dir.path(),
        &["--json", "replay", "--at", "1970-01-02T00:00:00Z"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["seq"], 0);

    let out = dir.path().join("state-at-9");
    let o = till(
        dir.path(),
        &["replay", "--to-seq", "9", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("payments/_/p0")).unwrap(),
        vec![5; 4]
    );
    assert!(
        !out.join("payments/_/p1").exists(),
        "deleted keys are not written"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("STATE.json")).unwrap()).unwrap();
    assert_eq!(manifest["seq"], 9);
    // An existing folder is refused, not overwritten.
    let o = till(
        dir.path(),
        &["replay", "--to-seq", "9", "--out", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn replay_beyond_the_last_seq_is_refused_and_changes_nothing() {
    let dir = sample();
    let o = till(dir.path(), &["replay", "--to-seq", "11"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("seq 11 is beyond the log's last event (seq 10)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(head(dir.path()), 10);
}

#[test]
fn diff_lists_added_changed_and_removed_keys() {
    let dir = sample();
    let o = till(dir.path(), &["--json", "diff", "5", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let changes = v["changes"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c["key"].as_str().unwrap(), c["change"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("p0", "changed")), "{kinds:?}");
    assert!(kinds.contains(&("p1", "removed")), "{kinds:?}");
    assert!(kinds.contains(&("r1", "added")), "{kinds:?}");
    assert!(!kinds.iter().any(|(k, _)| *k == "p4"), "{kinds:?}");
    let o = till(dir.path(), &["diff", "6", "2"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn status_shows_the_backup_lag() {
    let dir = sample();
    let o = till(dir.path(), &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["last_seq"], 10);
    assert_eq!(v["durable_seq"], 6);
    assert_eq!(v["backup_lag_events"], 4);
    assert_eq!(v["daemon"], false);
    assert_eq!(v["role"], "no wallet");
}

#[test]
fn errors_are_clear_and_have_the_right_exit_code() {
    let empty = tempfile::tempdir().unwrap();
    let o = till(empty.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no Till data in"), "{}", stderr(&o));
    assert!(
        !empty.path().join("till.redb").exists(),
        "reading must not create a log"
    );

    let dir = sample();
    // Usage errors exit 2.
    assert_eq!(till(dir.path(), &["replay"]).status.code(), Some(2));
    let o = till(dir.path(), &["replay", "--at", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a time"), "{}", stderr(&o));

    // A log held open by a running till is refused, not waited on.
    let log = Log::open(dir.path().join("till.redb")).unwrap();
    let o = till(dir.path(), &["log", "tail"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in use by a running till"),
        "{}",
        stderr(&o)
    );
    drop(log);

    // A broken config file is named.
    std::fs::write(dir.path().join("till.toml"), "server_url = 5\n").unwrap();
    let o = till(dir.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("till.toml"), "{}", stderr(&o));
}

#[test]
fn config_file_then_environment_then_flags() {
    let dir = sample();
    std::fs::write(
        dir.path().join("till.toml"),
        "server_url = \"http://from-file\"\n",
    )
    .unwrap();
    let o = till(dir.path(), &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["server_url"], "http://from-file");
    let o = Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["--json", "status"])
        .env("TILL_DATA_DIR", dir.path())
        .env("TILL_SERVER_URL", "http://from-env")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["server_url"], "http://from-env");
    assert_eq!(v["last_seq"], 10);
    // A flag wins over both.
    let o = Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["--json", "--server-url", "http://from-flag", "status"])
        .env("TILL_DATA_DIR", dir.path())
        .env("TILL_SERVER_URL", "http://from-env")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["server_url"], "http://from-flag");
    // The disk floor: 64 MiB unless set, then the file, then the environment; shown by status.
    assert_eq!(v["min_free_disk_bytes"], 64 * 1024 * 1024);
    assert!(v["disk_free_bytes"].as_u64().unwrap() > 0, "{v}");
    std::fs::write(dir.path().join("till.toml"), "min_free_disk_mb = 5\n").unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&till(dir.path(), &["--json", "status"]))).unwrap();
    assert_eq!(v["min_free_disk_bytes"], 5_000_000);
    let text = stdout(&till(dir.path(), &["status"]));
    assert!(
        text.contains(" free (new sales are refused below 5.0 MB)"),
        "{text}"
    );
    let with_env = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_till"))
            .args(["--json", "status"])
            .env("TILL_DATA_DIR", dir.path())
            .env("TILL_MIN_FREE_DISK_MB", value)
            .output()
            .unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&stdout(&with_env("0"))).unwrap();
    assert_eq!(v["min_free_disk_bytes"], 0, "0 turns the floor off");
    let o = with_env("lots");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("TILL_MIN_FREE_DISK_MB=\"lots\" is not a whole number of megabytes"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.path().join("till.toml"), "min_free_disk_mb = -1\n").unwrap();
    let o = till(dir.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not a valid till config"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(dir.path().join("till.toml")).unwrap();
    // A network that is not one is a usage error.
    let o = till(dir.path(), &["--network", "moonnet", "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown network \"moonnet\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn audit_export_is_json_lines_with_the_chain_and_summaries() {
    let dir = sample();
    let o = till(dir.path(), &["audit", "export"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(pair[1]["chain_ok"], true);
    }
    assert_eq!(lines[0]["seq"], 1);
    let o = till(dir.path(), &["audit", "export", "--from", "4", "--to", "6"]);
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = till(dir.path(), &["audit", "export", "--to", "99"]);
    assert_eq!(o.status.code(), Some(3));
}

/// Output into a pipe whose reader is gone (`till log tail | head`) ends `till` quietly with
/// status 141, as a Unix tool killed by SIGPIPE, not with a panic.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = sample();
    for args in [
        &["diff", "0", "10"][..],
        &["log", "tail", "-n", "10"],
        &["audit", "export"],
        &["--json", "status"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_till"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
