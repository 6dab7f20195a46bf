//! `till demo --no-wait --json` runs to completion and its summary shows
//! every check passing, the point-of-sale sale included.

use std::process::Command;
use std::time::Instant;

#[test]
fn the_demo_runs_and_every_check_passes() {
    let started = Instant::now();
    // A workdir of the test's own, to read the cashier's link file afterwards.
    let workdir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["demo", "--no-wait", "--json", "--workdir"])
        .arg(workdir.path())
        .output()
        .expect("run till demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "till demo failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the summary is not one JSON object ({e}): {stdout}"));
    assert_eq!(summary["payments"]["succeeded"], 12, "{summary}"); // 10 on A, 2 on B
    assert_eq!(summary["payments"]["failed"], 0, "{summary}");
    assert_eq!(summary["handoff"]["ok"], true, "{summary}");
    assert_eq!(summary["restore"]["ok"], true, "{summary}");
    assert_eq!(summary["restore"]["state_matches"], true, "{summary}");
    assert!(summary["restore"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["fork_refused"], true, "{summary}");
    assert!(
        summary["fork_message"]
            .as_str()
            .unwrap()
            .contains("another device is master"),
        "{summary}"
    );
    // The POS page: a cashier's invoice made by device B over the hub, paid, shown paid.
    assert_eq!(summary["pos"]["ok"], true, "{summary}");
    let url = summary["pos"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/pos/demo-merchant"),
        "{summary}"
    );
    // Its sign-in link carries the cashier token: in a private file, never in the output.
    let link_file = workdir.path().join("pos-link.txt");
    assert_eq!(summary["pos"]["link_file"], link_file.display().to_string());
    let link = std::fs::read_to_string(&link_file).unwrap();
    let token = link.trim().strip_prefix(&format!("{url}#token=")).unwrap();
    assert!(token.len() > 20, "a cashier token: {}", token.len());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&link_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !stdout.contains(token) && !stderr.contains(token),
        "the token leaked"
    );
    assert!(summary["backup"]["events_shipped"].as_u64().unwrap() > 0);
    assert!(summary["backup"]["bytes_uploaded"].as_u64().unwrap() > 0);
    eprintln!("demo: {} s wall, {summary}", started.elapsed().as_secs());
}
