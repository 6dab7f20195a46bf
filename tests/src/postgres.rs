//! A PostgreSQL database for tests: `TILL_TEST_DATABASE_URL` if set, otherwise a private cluster
//! (initdb + pg_ctl in a temporary directory, on a free port) started once per test process and
//! stopped by a watchdog when the process exits. With `CI=true` a missing PostgreSQL is a failure,
//! never a silent skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, empty database's URL, or `None` (with a message) when PostgreSQL is not available
/// outside CI.
pub fn fresh_database() -> Option<String> {
    static ADMIN: OnceLock<Result<String, String>> = OnceLock::new();
    let admin = ADMIN.get_or_init(|| match std::env::var("TILL_TEST_DATABASE_URL") {
        Ok(url) => Ok(url),
        Err(_) => start_cluster(),
    });
    let admin = match admin {
        Ok(url) => url,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL is required in CI: {why}"
            );
            eprintln!("SKIPPED: no PostgreSQL for this test: {why}");
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "till_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    psql(admin, &format!("CREATE DATABASE {name}"));
    Some(with_database(admin, &name))
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs one SQL statement with psql and returns its unaligned, tuples-only output.
pub fn query(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("psql prints UTF-8")
}

/// Every table of the database's `public` schema, each dumped whole with
/// `COPY table TO STDOUT (FORMAT binary)`: the rows' raw bytes (`bytea` as stored, text as UTF-8),
/// by table name.
pub fn dump_tables(url: &str) -> Vec<(String, Vec<u8>)> {
    let tables = query(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    tables
        .lines()
        .filter(|t| !t.is_empty())
        .map(|table| {
            let sql = format!("COPY public.\"{table}\" TO STDOUT (FORMAT binary)");
            let output = Command::new("psql")
                .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
                .stdin(Stdio::null())
                .output()
                .expect("running psql");
            assert!(
                output.status.success(),
                "dumping {table} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            (table.to_owned(), output.stdout)
        })
        .collect()
}

fn bindir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("no /usr/lib/postgresql ({e}); install PostgreSQL (bash .ci/install-deps)")
        })?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn pg_tool(bin: &std::path::Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn start_cluster() -> Result<String, String> {
    Cluster::start().map(|c| c.admin)
}

/// A private PostgreSQL cluster of this test process that a test may stop and start again (a
/// database restart under load). Stopped and removed by a watchdog when the process exits.
pub struct Cluster {
    bin: PathBuf,
    data: String,
    log: String,
    options: String,
    admin: String,
}

impl Cluster {
    /// A new private cluster, or `None` (with a message) when PostgreSQL is not available outside
    /// CI; with `CI=true` a missing PostgreSQL is a failure.
    pub fn private() -> Option<Cluster> {
        match Cluster::start() {
            Ok(c) => Some(c),
            Err(why) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL is required in CI: {why}"
                );
                eprintln!("SKIPPED: no PostgreSQL for this test: {why}");
                None
            }
        }
    }

    /// The server log of this cluster.
    pub fn log_path(&self) -> &str {
        &self.log
    }

    /// A fresh, empty database of this cluster.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "till_own_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        psql(&self.admin, &format!("CREATE DATABASE {name}"));
        with_database(&self.admin, &name)
    }

    fn ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-D", self.data.as_str()];
        all.extend_from_slice(args);
        let out = pg_tool(&self.bin.join("pg_ctl"), &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("running pg_ctl {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log_text = std::fs::read_to_string(&self.log).unwrap_or_default();
            Err(format!(
                "pg_ctl {args:?} failed: {}{log_text}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the cluster (`pg_ctl stop -m fast`: open connections are cut) and waits for it.
    pub fn stop(&self) {
        self.ctl(&["-w", "-m", "fast", "stop"]).unwrap();
    }

    /// Starts the stopped cluster again on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        self.ctl(&["-l", &self.log, "-o", &self.options, "-w", "start"])
            .unwrap();
    }

    fn start() -> Result<Cluster, String> {
        let bin = bindir()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "till-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
            if !ok.is_ok_and(|s| s.success()) {
                return Err(format!("could not chown {} to postgres", dir.display()));
            }
        }
        let data = dir.join("data");
        let data_s = data.display().to_string();
        let out = pg_tool(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        let log = dir.join("postgres.log").display().to_string();
        let out = pg_tool(
            &bin.join("pg_ctl"),
            &["-D", &data_s, "-l", &log, "-o", &options, "-w", "start"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running pg_ctl start: {e}"))?;
        if !out.status.success() {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{log_text}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The watchdog stops the cluster and removes it once this test process is gone.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runuser} {pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
            pid = std::process::id(),
            runuser = if is_root() {
                "runuser -u postgres --"
            } else {
                ""
            },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data_s,
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster watchdog: {e}"))?;
        Ok(Cluster {
            bin,
            data: data_s,
            log,
            options,
            admin: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            super::with_database("postgres://u:p@h:1/postgres", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://h:1", "x"),
            "postgres://h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
