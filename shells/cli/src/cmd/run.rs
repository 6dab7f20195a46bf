//! `till run`: the daemon. It opens the till, follows the backup, becomes master when the lease
//! is free (or already this device's), runs the node, keeps the hub connection, and answers the
//! other commands of this device on the control socket. It prints its role, lease and backup
//! state as they change, and stops cleanly on Ctrl-C or SIGTERM (keeping the lease).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use till_engine::disk;
use till_engine::{
    BackupState, CommandExecutor, HubClient, HubConfig, HubError, Role, TakeoverConfirmed, Till,
};

use super::device::{self, Pairing, TillExecutor, engine_failure};
use crate::control::{self, Answer, Request};
use crate::output::Output;
use crate::{Config, Failure};

/// `till run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stay a follower: never acquire the lease, even when it is free.
    #[arg(long)]
    follower: bool,
}

/// How often the daemon looks at the lease while it follows.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// A sync with this many segments or more to pull draws a bar on a terminal.
const BAR_FROM_SEGMENTS: u64 = 8;

struct Daemon {
    config: Config,
    till: Arc<Till>,
    pairing: Pairing,
    runtime: tokio::runtime::Runtime,
    hub: Mutex<Option<Arc<HubClient>>>,
    /// This device released the lease (a handoff): it does not take it back by itself.
    released: AtomicBool,
    stop: Arc<AtomicBool>,
    follower_only: bool,
    /// Held across every change of role (follow, acquire, handoff, takeover): a handoff leaves
    /// the till a follower before it has shipped and released, and a sync must not run then.
    transition: Mutex<()>,
}

impl Daemon {
    /// (Re)connects the hub, with this till as the executor, so the server sees the current role
    /// and the master's node reports its payments.
    fn restart_hub(&self) {
        let _guard = self.runtime.enter();
        let executor: Arc<dyn CommandExecutor> = Arc::new(TillExecutor(Arc::clone(&self.till)));
        let hub = HubClient::start(HubConfig::new(
            self.pairing.server_url.clone(),
            self.pairing.token.clone(),
            self.pairing.store.clone(),
            self.till.device_id(),
            Some(executor),
        ));
        let old = self.hub.lock().unwrap().replace(Arc::new(hub));
        drop(old);
    }

    fn role_text(&self) -> String {
        match self.till.role() {
            Role::Master { epoch } => format!("master (lease epoch {epoch})"),
            Role::Follower => "follower".to_owned(),
            Role::Fenced { device, epoch } => {
                format!("fenced: device {device} took the lease at epoch {epoch}")
            }
            Role::Failed { reason } => format!("stopped: {reason}"),
            _ => "unknown".to_owned(),
        }
    }

    fn status(&self) -> Value {
        // The role first: a lease read after it is at least as new (an acquire writes the head
        // before the role changes).
        let role_now = self.till.role();
        let log = self.till.log();
        let head = log.head().map(|h| h.seq).unwrap_or(0);
        let replicator = self.till.replicator_status();
        let durable = replicator
            .as_ref()
            .map(|r| r.durable_seq)
            .unwrap_or_else(|| log.shipped().unwrap_or(0));
        let lease = self.till.lease();
        let hub = self.hub.lock().unwrap().as_ref().map(|h| h.status());
        let (role, epoch) = match role_now {
            Role::Master { epoch } => ("master", Some(epoch)),
            Role::Follower => ("follower", None),
            Role::Fenced { .. } => ("fenced", None),
            _ => ("stopped", None),
        };
        json!({
            "role": role,
            "role_text": self.role_text(),
            "device_id": self.till.device_id().to_string(),
            "epoch": epoch,
            "lease": match &lease {
                Ok(Some(l)) => json!({"device": l.device.to_string(), "epoch": l.epoch, "held": l.held}),
                Ok(None) => Value::Null,
                Err(e) => json!({"error": e.to_string()}),
            },
            "last_seq": head,
            "durable_seq": durable,
            "backup_lag_events": head.saturating_sub(durable),
            "backup": backup_text(&self.till.backup_state()),
            "disk_free_bytes": self.till.disk_free(),
            "min_free_disk_bytes": self.config.min_free_disk,
            "uploads": replicator.as_ref().map(|r| r.uploads),
            "bytes_uploaded": replicator.as_ref().map(|r| r.bytes_uploaded),
            "hub_connected": hub.as_ref().map(|h| h.connected),
            "server_url": self.pairing.server_url,
            "store": self.pairing.store,
            "daemon": true,
        })
    }

    fn handle(&self, request: Request) -> Answer {
        match request {
            Request::Status => Answer::ok(self.status()),
            Request::ReplicaBalances => match super::node::replica_balances(&self.till) {
                Ok(v) => Answer::ok(v),
                Err(e) => Answer::failed(e.to_string()),
            },
            Request::ReplicaPayments => match super::node::replica_payments(&self.till) {
                Ok(v) => Answer::ok(v),
                Err(e) => Answer::failed(e.to_string()),
            },
            Request::Command { command } => {
                if let Ok(node) = self.till.node() {
                    return match node.execute(&command) {
                        Ok(v) => Answer::ok(v),
                        Err(e) => Answer::refused(e),
                    };
                }
                if let Role::Fenced { .. } = self.till.role() {
                    return Answer::refused(self.role_text());
                }
                let Some(hub) = self.hub.lock().unwrap().clone() else {
                    return Answer::failed("the hub is not connected yet");
                };
                match self.runtime.block_on(hub.command(command)) {
                    Ok(v) => Answer::ok(v),
                    Err(HubError::Refused(e)) => Answer::refused(e),
                    Err(e) => Answer::failed(e.to_string()),
                }
            }
            Request::Handoff => {
                if !matches!(self.till.role(), Role::Master { .. }) {
                    return Answer::refused(format!(
                        "this device is not master ({}); only the master hands off",
                        self.role_text()
                    ));
                }
                let _transition = self.transition.lock().unwrap();
                self.released.store(true, Ordering::SeqCst);
                match self.till.handoff() {
                    Ok(()) => {
                        self.config
                            .log("handed off: everything shipped, lease released; now a follower");
                        self.restart_hub();
                        Answer::ok(self.status())
                    }
                    Err(e) => Answer::refused(e.to_string()),
                }
            }
            Request::Takeover => {
                let _transition = self.transition.lock().unwrap();
                if let Err(e) = self.till.sync() {
                    return Answer::failed(format!("cannot sync before the takeover: {e}"));
                }
                match self.till.takeover(TakeoverConfirmed::confirmed_by_user()) {
                    Ok(()) => {
                        self.released.store(false, Ordering::SeqCst);
                        self.config
                            .log(format_args!("took over: now {}", self.role_text()));
                        self.restart_hub();
                        Answer::ok(self.status())
                    }
                    Err(e) => match engine_failure(e) {
                        Failure::Refused(t) | Failure::Usage(t) => Answer::refused(t),
                        Failure::Failed(e) => Answer::failed(e.to_string()),
                    },
                }
            }
            Request::Shutdown => {
                self.stop.store(true, Ordering::SeqCst);
                Answer::ok(json!({"stopping": true}))
            }
        }
    }

    /// Pulls what the backup has beyond this device's log. On a terminal a bar of the segments
    /// shows while a pull has [`BAR_FROM_SEGMENTS`] or more to fetch (a first sync after a long
    /// time away); a follower's usual pull of a segment or two draws nothing.
    fn sync(&self) -> Result<till_engine::SyncReport, till_engine::Error> {
        let bar = std::sync::OnceLock::new();
        let pulled = self.till.sync_with_progress(|p| {
            if let till_engine::RestoreProgress::Planned { segments, .. } = &p
                && *segments >= BAR_FROM_SEGMENTS
            {
                bar.get_or_init(|| crate::output::segments_bar("syncing"));
            }
            if let Some(bar) = bar.get() {
                crate::output::show_segments(bar, "syncing", &p);
            }
        });
        if let Some(bar) = bar.get() {
            bar.finish_and_clear();
        }
        pulled
    }

    /// One step of following: sync, and acquire when the lease is free for this device; says
    /// whether it acquired, and what the sync pulled (`None`: no longer a follower, no sync).
    /// An error that retrying cannot fix (the node cannot be built here) is `Fatal`.
    fn follow(&self) -> Result<(bool, Option<till_engine::SyncReport>), FollowError> {
        let _transition = self.transition.lock().unwrap();
        if !matches!(self.till.role(), Role::Follower) {
            return Ok((false, None));
        }
        let pulled = Some(self.sync().map_err(|e| FollowError::Retry(e.to_string()))?);
        if self.follower_only {
            return Ok((false, pulled));
        }
        let lease = self
            .till
            .lease()
            .map_err(|e| FollowError::Retry(e.to_string()))?;
        let mine = self.till.device_id();
        let free = match &lease {
            None => true,
            Some(l) if l.device == mine => l.held || !self.released.load(Ordering::SeqCst),
            Some(l) => !l.held && !self.released.load(Ordering::SeqCst),
        };
        if !free {
            return Ok((false, pulled));
        }
        match self.till.acquire() {
            Ok(()) => Ok((true, pulled)),
            Err(e @ till_engine::Error::Build(_)) => Err(FollowError::Fatal(e.to_string())),
            Err(e) => Err(FollowError::Retry(e.to_string())),
        }
    }
}

enum FollowError {
    Retry(String),
    Fatal(String),
}

/// Tells the merchant, once, when the device's disk is getting full (new sales stop below
/// `floor`, [`Config::min_free_disk`]), and when it has room again. With no floor it says
/// nothing.
struct DiskWatch {
    floor: u64,
    checked: Option<Instant>,
    low: bool,
}

impl DiskWatch {
    /// How often free space is looked at.
    const EVERY: Duration = Duration::from_secs(10);
    /// Warned below this many times the floor, all clear above it.
    const MARGIN: u64 = 4;

    fn new(floor: u64) -> Self {
        DiskWatch {
            floor,
            checked: None,
            low: false,
        }
    }

    fn check(&mut self, till: &Till) -> Option<String> {
        if self.floor == 0 || self.checked.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return None;
        }
        self.checked = Some(Instant::now());
        self.seen(till.disk_free()?)
    }

    /// What to say, if anything, now that `free` bytes are free.
    fn seen(&mut self, free: u64) -> Option<String> {
        let floor = self.floor;
        let low = free < floor.saturating_mul(Self::MARGIN);
        if low == self.low {
            return None;
        }
        self.low = low;
        Some(if low {
            format!(
                "disk: only {} free on this device; new sales are refused below {} (free some space)",
                disk::megabytes(free),
                disk::megabytes(floor)
            )
        } else {
            format!("disk: {} free again", disk::megabytes(free))
        })
    }
}

fn backup_text(state: &BackupState) -> String {
    match state {
        BackupState::Ok => "ok".to_owned(),
        BackupState::Unreachable { last_error, .. } => {
            format!("backup unreachable: payments wait ({last_error})")
        }
        BackupState::Fenced { device, epoch } => {
            format!("fenced by device {device} at epoch {epoch}")
        }
        BackupState::Stopped { reason } => format!("not shipping: {reason}"),
        _ => "unknown".to_owned(),
    }
}

fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let daemon = Arc::clone(&daemon);
        let _ = std::thread::Builder::new()
            .name("till-control".into())
            .spawn(move || answer(&daemon, stream));
    }
}

fn answer(daemon: &Daemon, stream: UnixStream) {
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => daemon.handle(request),
        Err(e) => Answer::failed(format!("not a request: {e}")),
    };
    let mut text = serde_json::to_string(&answer).expect("answers serialize");
    text.push('\n');
    let _ = (&stream).write_all(text.as_bytes());
}

/// Runs the daemon until Ctrl-C, SIGTERM, `shutdown` on the socket, or a fence.
pub fn run(config: &Config, out: &Output, args: RunArgs) -> Result<(), Failure> {
    // Another command may hold the log for a moment (reading it); a second daemon holds it for
    // good. Wait a little before calling it the latter.
    let started = Instant::now();
    let (till, pairing) = loop {
        match device::open_till(config) {
            Err(Failure::Refused(text))
                if text.contains("in use") && started.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(100));
                let _ = text;
            }
            other => break other?,
        }
    };
    let till = Arc::new(till);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(e.into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        runtime.spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
    // The log is ours (redb locks it), so a socket file here is a dead daemon's.
    let socket = control::socket_path(config);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| Failure::Failed(anyhow::anyhow!("binding {}: {e}", socket.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    }
    let daemon = Arc::new(Daemon {
        config: config.clone(),
        till,
        pairing,
        runtime,
        hub: Mutex::new(None),
        released: AtomicBool::new(false),
        stop,
        follower_only: args.follower,
        transition: Mutex::new(()),
    });
    let say = |line: String| {
        daemon.config.log(&line);
        if !out.json() {
            crate::output::outln!("{line}");
        } else {
            crate::output::outln!("{}", json!({ "event": line }));
        }
    };
    say(format!(
        "till {} running: device {}, store {:?} on {}, log {}",
        env!("CARGO_PKG_VERSION"),
        daemon.till.device_id(),
        daemon.pairing.store,
        daemon.pairing.server_url,
        config.log_path().display()
    ));
    daemon.restart_hub();
    {
        let daemon = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("till-control".into())
            .spawn(move || serve(daemon, listener))
            .map_err(|e| Failure::Failed(e.into()))?;
    }
    let mut last_role = String::new();
    let mut last_backup = String::new();
    let mut disk = DiskWatch::new(config.min_free_disk);
    let mut last_follow = Instant::now() - FOLLOW_EVERY;
    let mut last_error = String::new();
    // Whether a sync has succeeded since the daemon started (it says so once).
    let mut in_step = false;
    let outcome = loop {
        if daemon.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let role = daemon.till.role();
        match &role {
            Role::Follower if last_follow.elapsed() >= FOLLOW_EVERY => {
                last_follow = Instant::now();
                match daemon.follow() {
                    Ok((acquired, pulled)) => {
                        if let Some(pulled) = pulled {
                            let line = format!(
                                "at seq {} of the backup (pulled {} events in {} segments{})",
                                pulled.seq,
                                pulled.events,
                                pulled.segments,
                                if pulled.from_snapshot {
                                    ", from a snapshot"
                                } else {
                                    ""
                                }
                            );
                            if !in_step {
                                say(format!("in step with the backup: {line}"));
                                in_step = true;
                            } else if pulled.events > 0 {
                                daemon.config.log(format_args!("synced: {line}"));
                            }
                        }
                        if acquired {
                            daemon.restart_hub();
                        } else {
                            last_error.clear();
                        }
                    }
                    Err(FollowError::Fatal(e)) => {
                        say(format!("cannot become master here: {e}"));
                        break Err(Failure::Failed(anyhow::anyhow!(
                            "cannot become master on this device: {e} (see {})",
                            config.data_dir.join("ldk").join("ldk_node.log").display()
                        )));
                    }
                    Err(FollowError::Retry(e)) if e != last_error => {
                        say(format!("following: {e}"));
                        last_error = e;
                    }
                    Err(FollowError::Retry(_)) => {}
                }
            }
            Role::Fenced { .. } => {
                say(daemon.role_text());
                break Err(Failure::Refused(format!(
                    "{}; this device stopped its node",
                    daemon.role_text()
                )));
            }
            Role::Failed { reason } => {
                say(daemon.role_text());
                break Err(Failure::Failed(anyhow::anyhow!(
                    "the backup stopped for good: {reason}"
                )));
            }
            _ => {}
        }
        let role_text = daemon.role_text();
        if role_text != last_role {
            let lease = match daemon.till.lease() {
                Ok(Some(l)) => format!(
                    "lease: device {} epoch {} ({})",
                    l.device,
                    l.epoch,
                    if l.held { "held" } else { "released" }
                ),
                Ok(None) => "lease: none yet (a new backup)".to_owned(),
                Err(e) => format!("lease: unknown ({e})"),
            };
            say(format!("role: {role_text}; {lease}"));
            last_role = role_text;
        }
        let backup = backup_text(&daemon.till.backup_state());
        if matches!(role, Role::Master { .. }) && backup != last_backup {
            say(format!("backup: {backup}"));
            last_backup = backup;
        }
        if let Some(news) = disk.check(&daemon.till) {
            say(news);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if matches!(daemon.till.role(), Role::Master { .. }) {
        say("stopping the node (the lease stays with this device)".to_owned());
        if let Err(e) = daemon.till.stop() {
            say(format!("stopping: {e}"));
        }
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(hub) = daemon.hub.lock().unwrap().take() {
        drop(hub);
    }
    say("stopped".to_owned());
    outcome
}

#[cfg(test)]
mod tests {
    use super::DiskWatch;

    #[test]
    fn the_disk_watch_warns_once_when_space_runs_low_and_once_when_it_is_back() {
        let mut watch = DiskWatch::new(64_000_000);
        assert_eq!(watch.seen(10_000_000_000), None, "plenty: nothing to say");
        assert_eq!(
            watch.seen(200_000_000).as_deref(),
            Some(
                "disk: only 200 MB free on this device; new sales are refused below 64 MB (free some space)"
            )
        );
        assert_eq!(watch.seen(100_000_000), None, "said once");
        assert_eq!(watch.seen(10_000_000), None, "still low: said once");
        assert_eq!(
            watch.seen(300_000_000).as_deref(),
            Some("disk: 300 MB free again")
        );
        assert_eq!(watch.seen(300_000_000), None);
        let mut off = DiskWatch::new(0);
        assert_eq!(off.seen(0), None, "no floor: never a warning");
    }
}
