//! The local control socket of `till run`: how the other commands on this device reach the
//! running daemon (which holds the log open). One JSON request per connection, one JSON answer.
//!
//! The socket is `<data-dir>/till.sock`, mode 0600: only the device's owner can use it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use till_engine::HubCommand;

use crate::{Config, Failure};

/// The socket's file name inside the data dir.
pub const SOCKET_FILE: &str = "till.sock";

/// The socket's path.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join(SOCKET_FILE)
}

/// What a command asks the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a node command: on this device if it is master, else through the hub.
    Command { command: HubCommand },
    /// Role, lease, backup progress.
    Status,
    /// Balances from this device's replica, without the master.
    ReplicaBalances,
    /// Payments from this device's replica, without the master.
    ReplicaPayments,
    /// Ship everything and release the lease (master only).
    Handoff,
    /// Take the lease over from a lost master (confirmed by the user).
    Takeover,
    /// Stop the daemon (keeping the lease).
    Shutdown,
}

/// How the daemon answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub error: Option<String>,
    /// The error is a refusal (exit 3), not a failure.
    #[serde(default)]
    pub refused: bool,
}

impl Answer {
    pub fn ok(value: Value) -> Self {
        Answer {
            ok: true,
            value,
            error: None,
            refused: false,
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Answer {
            ok: false,
            value: Value::Null,
            error: Some(error.into()),
            refused: true,
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        Answer {
            ok: false,
            value: Value::Null,
            error: Some(error.into()),
            refused: false,
        }
    }

    /// The value, or the error as a [`Failure`].
    pub fn into_result(self) -> Result<Value, Failure> {
        if self.ok {
            Ok(self.value)
        } else {
            let error = self
                .error
                .unwrap_or_else(|| "the daemon gave no reason".into());
            Err(if self.refused {
                Failure::Refused(error)
            } else {
                Failure::Failed(anyhow::anyhow!(error))
            })
        }
    }
}

/// Sends `request` to the daemon of this data dir. `None` when no daemon is running.
pub fn call(config: &Config, request: &Request) -> Result<Option<Answer>, Failure> {
    let path = socket_path(config);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        // No socket, or a socket left behind by a daemon that died: nobody is listening.
        Err(_) => return Ok(None),
    };
    // Commands such as opening a channel can take a while; a stuck daemon does not hang us.
    stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| Failure::Failed(e.into()))?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| Failure::Failed(anyhow::anyhow!("talking to the running till: {e}")))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| Failure::Failed(anyhow::anyhow!("waiting for the running till: {e}")))?;
    if answer.is_empty() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "the running till closed the connection without answering (see its log, {})",
            config.log_file().display()
        )));
    }
    serde_json::from_str(&answer).map(Some).map_err(|e| {
        Failure::Failed(anyhow::anyhow!(
            "the running till's answer is not JSON: {e}"
        ))
    })
}

/// Asks the daemon; without one, runs `alone`. When `alone` finds the log in use, a daemon is
/// starting (it opens the log before its socket): waits for its socket and asks it.
pub fn call_or(
    config: &Config,
    request: &Request,
    alone: impl FnOnce() -> Result<Value, Failure>,
) -> Result<Value, Failure> {
    if let Some(answer) = call(config, request)? {
        return answer.into_result();
    }
    match alone() {
        Err(Failure::Refused(text)) if text.contains("in use by a running") => {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(200));
                if let Some(answer) = call(config, request)? {
                    return answer.into_result();
                }
            }
            Err(Failure::Refused(text))
        }
        other => other,
    }
}
