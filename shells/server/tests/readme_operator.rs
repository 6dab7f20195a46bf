//! The README's "Five minutes for an operator" runs as the README writes it: every
//! `till-server` line in order (its data directory mapped into this test's own, and its listening
//! address to a loopback port the server picks and announces), then the `curl` of `/health`
//! against the server it started. A command that fails, or a line the test does not know, fails
//! the test, so the README cannot drift from the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// The README's `sh` blocks, shared with the CLI's tour test, included by path as the server's
// benchmark includes the tests' process helpers.
#[path = "../../../tests/src/readme.rs"]
mod readme;

/// The lines of the operator section's `sh` block, comments removed.
fn operator_lines() -> Vec<String> {
    readme::sh_lines("## Five minutes for an operator")
}

/// A server started by the README's `serve` line; killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_readme_operator_section_runs_as_written() {
    let data = tempfile::tempdir().unwrap();
    // The address the README's server announced once it listened.
    let mut addr = None;
    let lines = operator_lines();
    let mut served: Option<Served> = None;
    let mut readme_port = None;
    let mut ran = Vec::new();
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["till-server", args @ ..] => {
                let mut mapped = Vec::new();
                let mut args = args.iter();
                while let Some(&arg) = args.next() {
                    match arg {
                        "--data-dir" => {
                            args.next().expect("a directory after --data-dir");
                            mapped.push("--data-dir".to_owned());
                            mapped.push(data.path().display().to_string());
                        }
                        "--listen" => {
                            let listen = args.next().expect("an address after --listen");
                            readme_port = listen.rsplit(':').next().map(str::to_owned);
                            mapped.push("--listen".to_owned());
                            mapped.push("127.0.0.1:0".to_owned());
                        }
                        other => mapped.push(other.to_owned()),
                    }
                }
                let mut command = Command::new(env!("CARGO_BIN_EXE_till-server"));
                command.args(&mapped).stdin(Stdio::null());
                if mapped.first().map(String::as_str) == Some("serve") {
                    let mut child = command
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start till-server serve");
                    let stdout = child.stdout.take().expect("piped stdout");
                    let server = served.insert(Served(child));
                    let listening = announced_address(stdout, line);
                    wait_healthy(&listening, server, line);
                    addr = Some(listening);
                } else {
                    let out = command.output().expect("run till-server");
                    let (stdout, stderr) = text(&out);
                    assert!(
                        out.status.success(),
                        "README: `{line}` failed:\n{stdout}\n{stderr}"
                    );
                    check_output(line, &mapped, &stdout);
                }
                ran.push(mapped[0].clone() + " " + mapped.get(1).map_or("", String::as_str));
            }
            ["curl", url] => {
                let Some(addr) = &addr else {
                    panic!("README: `{line}` comes before the server serves");
                };
                let rest = url
                    .strip_prefix("http://127.0.0.1:")
                    .expect("the README curls the server on loopback");
                let (port, path) = rest.split_once('/').expect("a path in the URL");
                assert_eq!(
                    Some(port),
                    readme_port.as_deref(),
                    "README: `{line}` is not the port `serve` listens on"
                );
                let (status, body) = get(addr, &format!("/{path}")).unwrap();
                assert_eq!(status, 200, "README: `{line}` answered {status}: {body}");
                ran.push("curl".to_owned());
            }
            _ => panic!("README: no check for the operator's line `{line}`"),
        }
    }
    assert_eq!(
        ran,
        [
            "user add",
            "invite create",
            "token add",
            "serve --listen",
            "curl"
        ],
        "the operator's section changed: update this test with it"
    );
}

/// What the one-shot commands must print: a token, an invitation link.
fn check_output(line: &str, args: &[String], stdout: &str) {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["user", "add", ..] | ["token", "add", ..] => assert!(
            stdout.lines().any(|l| l.trim().starts_with("till_")),
            "README: `{line}` printed no token: {stdout}"
        ),
        ["invite", "create", ..] => {
            let public = args
                .iter()
                .position(|a| a == "--public-url")
                .map(|i| args[i + 1].as_str())
                .expect("the README's invitation names the public URL");
            assert!(
                stdout.contains(&format!("{public}/invite/")),
                "README: `{line}` printed no link: {stdout}"
            );
        }
        other => panic!("README: no check for `{line}` ({other:?})"),
    }
}

/// The address `serve` announces on its first line once it listens.
fn announced_address(stdout: impl Read, line: &str) -> String {
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read till-server's first line");
    first
        .trim()
        .strip_prefix("till-server listening on http://")
        .unwrap_or_else(|| panic!("README: `{line}` did not announce where it listens: {first:?}"))
        .to_owned()
}

/// Waits until the server the README started answers `/health`.
fn wait_healthy(addr: &str, served: &mut Served, line: &str) {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = get(addr, "/health") {
            return;
        }
        if let Some(status) = served.0.try_wait().unwrap() {
            panic!("README: `{line}` exited ({status}) before it served");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "README: `{line}` never answered /health"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
