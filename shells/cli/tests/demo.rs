//! `till demo --no-wait --json` runs to completion and its summary shows
//! every check passing.

use std::process::Command;
use std::time::Instant;

#[test]
fn the_demo_runs_and_every_check_passes() {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["demo", "--no-wait", "--json", "--payments", "5"])
        .output()
        .expect("run till demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "till demo failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the summary is not one JSON object ({e}): {stdout}"));
    assert_eq!(summary["payments"]["succeeded"], 7, "{summary}"); // 5 on A, 2 on B
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
    assert!(summary["backup"]["events_shipped"].as_u64().unwrap() > 0);
    assert!(summary["backup"]["bytes_uploaded"].as_u64().unwrap() > 0);
    eprintln!("demo: {} s wall, {summary}", started.elapsed().as_secs());
}
