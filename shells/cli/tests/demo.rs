//! `till demo --no-wait --json` runs to completion and its summary shows
//! every check passing, the point-of-sale sale included; then the README's developer tour runs,
//! command by command as the README writes it, on the demo's restored device.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

// The README's `sh` blocks, shared with the server's operator test, included by path as the
// server's benchmark includes the tests' process helpers.
#[path = "../../../tests/src/readme.rs"]
mod readme;

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
    readme_tour(workdir.path());
}

/// One command of the README's developer tour: `till`'s arguments (with `$D` and the README's
/// paths mapped into this test's directories) and the file its output is redirected to, if any.
struct TourCommand {
    line: String,
    args: Vec<String>,
    stdout_to: Option<PathBuf>,
}

/// The developer tour of the README's "Five minutes for a merchant's developer": the demo line
/// that keeps its files in a workdir, the `D=` line naming the restored device in it, then every
/// `cargo run -p till -- --data-dir $D ...` line.
fn tour_commands(workdir: &Path, scratch: &Path) -> Vec<TourCommand> {
    let lines = readme::sh_lines("## Five minutes for a merchant's developer");
    // `demo --workdir W --no-wait` keeps the files in W; `D=W/device-x` names a device in it.
    let readme_workdir = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("cargo run -p till -- demo --workdir ")
                .filter(|rest| rest.ends_with("--no-wait"))
                .and_then(|rest| rest.split_whitespace().next())
        })
        .expect("the tour runs the demo with --workdir and --no-wait");
    let device = lines
        .iter()
        .find_map(|l| l.strip_prefix("D="))
        .expect("the tour names its device with D=");
    let device = device
        .strip_prefix(readme_workdir)
        .unwrap_or_else(|| panic!("D={device} is not in the demo's workdir {readme_workdir}"));
    let device = workdir.join(device.trim_start_matches('/'));
    let mut commands = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("cargo run -p till -- --data-dir $D ") else {
            continue;
        };
        let mut args = vec!["--data-dir".to_owned(), device.display().to_string()];
        let mut stdout_to = None;
        let mut words = rest.split_whitespace();
        while let Some(word) = words.next() {
            if word == ">" {
                let file = words.next().expect("a file after >");
                stdout_to = Some(scratch.join(file.trim_start_matches('/').replace('/', "_")));
            } else if let Some(path) = word.strip_prefix("/tmp/") {
                args.push(scratch.join(path.replace('/', "_")).display().to_string());
            } else {
                args.push(word.to_owned());
            }
        }
        commands.push(TourCommand {
            line: line.to_owned(),
            args,
            stdout_to,
        });
    }
    commands
}

/// Runs the README's developer tour on the demo's files and checks what each command says.
fn readme_tour(workdir: &Path) {
    let scratch = tempfile::tempdir().unwrap();
    let commands = tour_commands(workdir, scratch.path());
    let subcommands: Vec<&str> = commands.iter().map(|c| c.args[2].as_str()).collect();
    assert_eq!(
        subcommands,
        ["log", "log", "replay", "diff", "audit"],
        "the tour's commands changed: update this test with them"
    );
    let mut events = None;
    for command in &commands {
        let o = Command::new(env!("CARGO_BIN_EXE_till"))
            .args(&command.args)
            .output()
            .expect("run till");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "README: `{}` failed:\n{stdout}\n{stderr}",
            command.line
        );
        if let Some(file) = &command.stdout_to {
            std::fs::write(file, &o.stdout).unwrap();
        }
        let args: Vec<&str> = command.args[2..].iter().map(String::as_str).collect();
        match args.as_slice() {
            ["log", "tail", "-n", n] => {
                let n: usize = n.parse().unwrap();
                assert_eq!(stdout.lines().count(), n, "`{}`:\n{stdout}", command.line);
            }
            ["log", "verify"] => {
                assert!(stdout.starts_with("ok: "), "`{}`: {stdout}", command.line);
                let count = stdout["ok: ".len()..].split(' ').next().unwrap();
                events = Some(count.parse::<usize>().unwrap());
            }
            ["replay", "--to-seq", seq, "--out", out] => {
                assert!(
                    stdout.contains(&format!("wrote the state at seq {seq}")),
                    "`{}`: {stdout}",
                    command.line
                );
                assert!(Path::new(out).exists(), "`{}` wrote nothing", command.line);
            }
            ["diff", from, to] => assert!(
                stdout.contains(&format!("changed between seq {from} and seq {to}")),
                "`{}`: {stdout}",
                command.line
            ),
            ["audit", "export"] => {
                let file = command
                    .stdout_to
                    .as_ref()
                    .expect("the export goes to a file");
                let exported = std::fs::read_to_string(file).unwrap();
                for line in exported.lines() {
                    serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| {
                        panic!("`{}`: a line is not JSON ({e}): {line}", command.line)
                    });
                }
                assert_eq!(
                    Some(exported.lines().count()),
                    events,
                    "`{}` exports one line per event",
                    command.line
                );
            }
            other => panic!("README: no check for `{}` ({other:?})", command.line),
        }
    }
}
