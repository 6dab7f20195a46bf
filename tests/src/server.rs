//! A real `till-server` process on a loopback port, for tests and benchmarks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where a test server keeps its objects.
#[derive(Clone, Debug)]
pub enum StoreArg {
    /// `--data-dir DIR` (redb).
    DataDir(PathBuf),
    /// `--database-url URL` (PostgreSQL).
    DatabaseUrl(String),
}

impl StoreArg {
    fn args(&self) -> Vec<String> {
        match self {
            StoreArg::DataDir(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            StoreArg::DatabaseUrl(url) => vec!["--database-url".into(), url.clone()],
        }
    }
}

/// The `till-server` binary: `TILL_SERVER_BIN` if set, otherwise built once per test process with
/// `cargo build -p till-server` (so a test never runs a stale server) in the same target directory.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("TILL_SERVER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_server(false),
    })
    .clone()
}

/// The server built in release mode, as an operator runs it, for benchmarks
/// (the tests use [`server_binary`]'s debug build); `TILL_SERVER_BIN` overrides.
pub fn release_server() -> PathBuf {
    if std::env::var_os("TILL_SERVER_BIN").is_some() {
        return server_binary();
    }
    build_server(true)
}

/// Builds `till-server` (debug or release) in this executable's target
/// directory and returns the binary's path.
fn build_server(release: bool) -> PathBuf {
    // The executable is <target>/<profile>/deps/<name>.
    let exe = std::env::current_exe().expect("the executable's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the executable lives in <target>/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--quiet"];
    if release {
        args.push("--release");
    }
    args.extend(["-p", "till-server", "--bin", "till-server"]);
    let command = format!("cargo {}", args.join(" "));
    let mut cargo = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_tests) {
            cargo.env_remove(name);
        }
    }
    let status = cargo
        .args(&args)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {command}: {e}"));
    assert!(status.success(), "{command} failed");
    target
        .join(if release { "release" } else { "debug" })
        .join("till-server")
}

/// Whether cargo sets `name` for a test or bench process. A nested cargo must not inherit
/// these: build scripts track some of them (ring's tracks `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_*`), so a nested build that saw them rebuilt ring, rustls, reqwest and ldk-node,
/// and the next build from a shell rebuilt them back (about 5.5 minutes per release bench run).
fn set_by_cargo_for_tests(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_CFG_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// Runs `till-server user add NAME` and returns the printed token.
pub fn add_user(binary: &Path, store: &StoreArg, name: &str) -> String {
    let output = Command::new(binary)
        .args(["user", "add", name])
        .args(store.args())
        .stdin(Stdio::null())
        .output()
        .expect("running till-server user add");
    assert!(
        output.status.success(),
        "till-server user add {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("token is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "user add must print the token alone on one line, got {stdout:?}"
    );
    lines[0].to_owned()
}

/// A running `till-server serve`; killed (SIGKILL) when dropped.
pub struct TillServer {
    binary: PathBuf,
    store: StoreArg,
    extra: Vec<String>,
    child: Option<Child>,
    addr: String,
    /// Where the server's stderr goes (appended), if not inherited.
    stderr: Option<PathBuf>,
}

impl TillServer {
    /// Starts a server on a free loopback port and waits until `/health` answers 200.
    pub fn start(binary: &Path, store: StoreArg, extra: &[&str]) -> TillServer {
        let mut server = TillServer {
            binary: binary.to_owned(),
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            addr: "127.0.0.1:0".into(),
            stderr: None,
        };
        server.spawn();
        server
    }

    /// Like [`TillServer::start`], with the server's stderr (its log) appended to `log` instead of
    /// the test's, so a test can read what the server logged.
    pub fn start_logged(binary: &Path, store: StoreArg, extra: &[&str], log: &Path) -> TillServer {
        let mut server = TillServer {
            binary: binary.to_owned(),
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            addr: "127.0.0.1:0".into(),
            stderr: Some(log.to_owned()),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let stderr = match &self.stderr {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("opening the server's log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(&self.binary)
            .args(["serve", "--listen", &self.addr])
            .args(self.store.args())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning till-server serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading till-server's first line");
        let addr = line
            .trim()
            .strip_prefix("till-server listening on http://")
            .unwrap_or_else(|| panic!("till-server did not start: {line:?}"))
            .to_owned();
        self.addr = addr;
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!(
                    "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1 200")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "till-server at {} never became healthy",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The VSS base URL, `http://host:port/vss`.
    pub fn vss_url(&self) -> String {
        format!("http://{}/vss", self.addr)
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for TillServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `till-server ARGS... STORE-ARGS` and returns its stdout, panicking with its stderr if it
/// fails.
pub fn run_command(binary: &Path, store: &StoreArg, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .args(store.args())
        .stdin(Stdio::null())
        .output()
        .expect("running till-server");
    assert!(
        output.status.success(),
        "till-server {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("till-server prints UTF-8")
}

/// Runs `till-server token add --store STORE --role ROLE` and returns the token it prints.
pub fn add_token(binary: &Path, store: &StoreArg, name: &str, role: &str) -> String {
    let stdout = run_command(
        binary,
        store,
        &["token", "add", "--store", name, "--role", role],
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "token add prints the token alone: {stdout:?}"
    );
    lines[0].to_owned()
}

impl TillServer {
    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}
