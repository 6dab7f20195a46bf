//! The replicator: ships the outbox as segments (R1), confirms durability
//! (R6), stops for good when fenced (R2), recognises its own lost uploads
//! (R3), writes snapshots and applies retention (R8), and releases the lease.
//!
//! An event counts as durable once it is on the server and on this device's
//! disk: the replicator syncs the log (`Log::sync`) while each upload travels,
//! so a write that waits for durability may be appended unsynced
//! (`Log::append_unsynced`) and still never be acknowledged before it is on
//! disk here, in the time of the upload alone.
//!
//! It runs on a thread of its own with its own single-threaded runtime, so a
//! caller blocking a worker thread of another runtime on
//! [`ReplicatorHandle::wait_durable_blocking`] can never starve it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use till_log::{DeviceId, Event, Log};
use tokio::sync::Notify;

use super::device::{Lease, NEXT_SEGMENT};
use super::head::{LeaseState, Manifest};
use super::keys::names;
use super::remote::Remote;
use crate::{Error as VssError, KeyValue};

/// Which old history a replicator deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Keep every segment: audit-grade history, any point restorable. The default.
    #[default]
    KeepAll,
    /// Keep the newest `n` snapshots (n >= 1) and the segments after the
    /// oldest of them; delete older segments and snapshots.
    KeepSnapshots(u32),
}

/// How the replicator cuts and ships.
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// Most events in one segment.
    pub max_segment_events: usize,
    /// Most payload bytes (values and keys) in one segment, roughly.
    pub max_segment_bytes: usize,
    /// Most segments in one upload.
    pub max_segments_per_upload: usize,
    /// Compress segments with zstd.
    pub compress: bool,
    /// Write a snapshot once this many events were shipped since the last
    /// one (0: never).
    pub snapshot_every: u64,
    /// Most value bytes in one snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// What old history to delete.
    pub retention: Retention,
    /// First wait after a failed upload.
    pub backoff_min: Duration,
    /// Longest wait between retries while the server is unreachable.
    pub backoff_max: Duration,
    /// How long events no one waits for yet may wait to share an upload with later ones. A
    /// caller waiting for durability ends the wait at once, so channel state is never held
    /// back; the events a node writes between two channel-state writes (payment records, its
    /// event queue) then ride along instead of occupying the connection with uploads of their
    /// own. Zero ships every event as soon as it is committed.
    pub linger: Duration,
    /// Whether a second upload may follow one still in flight. When a caller waits for events
    /// the upload on its way does not hold, they go at once, chained after it (its segments and
    /// the head's next version), instead of after its answer. The server lands them in order
    /// or refuses the second, which then ships again the ordinary way.
    pub pipeline: bool,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        Self {
            max_segment_events: 10_000,
            max_segment_bytes: 4 * 1024 * 1024,
            max_segments_per_upload: 4,
            compress: true,
            snapshot_every: 10_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            retention: Retention::KeepAll,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            linger: Duration::from_millis(20),
            pipeline: true,
        }
    }
}

/// Another device holds the lease now; this one may not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fenced: another device is master now (device {device}, epoch {epoch})")]
pub struct Fenced {
    /// The device that holds the lease.
    pub device: DeviceId,
    /// Its epoch.
    pub epoch: u64,
}

/// What the replicator is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicatorState {
    /// Shipping or waiting for events.
    Running,
    /// The last upload failed; retrying with backoff. Durability waits.
    Unreachable {
        /// When the first failed attempt of this outage was, unix ms.
        since_ms: u64,
        /// The last error.
        error: String,
    },
    /// Another device took the lease; stopped for good.
    Fenced(Fenced),
    /// Everything was shipped and the lease released; stopped.
    Released,
    /// Stopped on request, lease still held.
    Stopped,
    /// Stopped on an error it cannot recover from.
    Failed(String),
}

/// A snapshot of the replicator's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatorStatus {
    /// Every event up to this seq is on the server.
    pub durable_seq: u64,
    /// What it is doing.
    pub state: ReplicatorState,
    /// Successful uploads.
    pub uploads: u64,
    /// Events shipped by this replicator.
    pub events_shipped: u64,
    /// Bytes of object values uploaded (segments, snapshots, head).
    pub bytes_uploaded: u64,
    /// Uploads sent behind one still in flight ([`ReplicatorConfig::pipeline`]) that landed
    /// (counted in `uploads` too).
    pub followers_landed: u64,
    /// Uploads sent behind one still in flight that the server refused (they reached it
    /// first); their events shipped again.
    pub followers_refused: u64,
    /// Segments on the server.
    pub segments: u64,
    /// The lease epoch this replicator writes under.
    pub epoch: u64,
}

/// Why waiting for durability ended without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// Fenced: the event will never be shipped by this device.
    #[error(transparent)]
    Fenced(#[from] Fenced),
    /// The replicator stopped before the event was shipped.
    #[error("the replicator stopped before seq {0} was shipped: {1}")]
    Stopped(u64, String),
    /// The wait timed out (the server may be unreachable).
    #[error("seq {0} was not confirmed by the server within {1:?}")]
    TimedOut(u64, Duration),
}

struct Shared {
    status: Mutex<ReplicatorStatus>,
    changed_sync: Condvar,
    changed: Notify,
    wake: Notify,
    control: Mutex<Control>,
    /// The highest seq a caller has waited for: while it is not durable, nothing lingers.
    wanted: AtomicU64,
}

#[derive(Default)]
struct Control {
    release: bool,
    stop: bool,
    /// Why the device cannot go on, as met where it happened ([`ReplicatorHandle::fail`], or a
    /// sync of the log that failed): the state becomes failed and stays so, whatever the worker
    /// was doing meanwhile.
    failed: Option<String>,
    /// The device cannot go on, and the reason is still to come (from the worker, or from
    /// another [`ReplicatorHandle::fail`]).
    failing: bool,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut ReplicatorStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let first = match &status.state {
            ReplicatorState::Failed(first) => Some(first.clone()),
            _ => None,
        };
        f(&mut status);
        // A failure is final. The reason that tells what happened is the one met first where
        // it happened ([`Control::failed`]), else the worker's first.
        let reported = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone();
        if let Some(reason) = reported.or(first) {
            status.state = ReplicatorState::Failed(reason);
        }
        drop(status);
        self.changed_sync.notify_all();
        self.changed.notify_waiters();
    }

    /// See [`ReplicatorHandle::fail`].
    fn fail(&self, reason: Option<String>) {
        {
            let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
            match reason {
                Some(reason) => {
                    control.failed.get_or_insert(reason);
                }
                None => control.failing = true,
            }
            control.stop = true;
        }
        self.update(|_| {});
        self.wake.notify_one();
    }

    fn control(&self) -> (bool, bool) {
        let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        (c.release, c.stop)
    }
}

/// A handle on a running replicator. Cheap to clone.
#[derive(Clone)]
pub struct ReplicatorHandle {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for ReplicatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatorHandle")
            .field("status", &self.status())
            .finish()
    }
}

/// Starts shipping `log` to `remote` under `lease`.
pub struct Replicator;

impl Replicator {
    /// Starts the replicator on its own thread. It ships whatever the outbox
    /// holds, then whenever [`ReplicatorHandle::notify`] is called: at once
    /// when a caller waits for durability, otherwise within
    /// [`ReplicatorConfig::linger`].
    pub fn start(
        log: Arc<Log>,
        remote: Remote,
        lease: Lease,
        config: ReplicatorConfig,
    ) -> ReplicatorHandle {
        let durable_seq = log.shipped().unwrap_or(0);
        let shared = Arc::new(Shared {
            status: Mutex::new(ReplicatorStatus {
                durable_seq,
                state: ReplicatorState::Running,
                uploads: 0,
                events_shipped: 0,
                bytes_uploaded: 0,
                followers_landed: 0,
                followers_refused: 0,
                segments: lease.manifest.segments,
                epoch: lease.manifest.epoch,
            }),
            changed_sync: Condvar::new(),
            changed: Notify::new(),
            wake: Notify::new(),
            control: Mutex::new(Control::default()),
            wanted: AtomicU64::new(0),
        });
        let worker = Worker {
            log,
            remote,
            manifest: lease.manifest,
            version: lease.version,
            config,
            shared: shared.clone(),
            follower: std::cell::RefCell::new(None),
            lost: None,
        };
        let thread = std::thread::Builder::new()
            .name("till-replicator".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(worker.run());
            })
            .expect("spawn the replicator thread");
        ReplicatorHandle {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }
}

impl ReplicatorHandle {
    /// Tells the replicator new events are in the outbox.
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// A caller waits for `seq`: ship it without lingering.
    fn want(&self, seq: u64) {
        self.shared.wanted.fetch_max(seq, Ordering::SeqCst);
        self.notify();
    }

    /// The current status.
    pub fn status(&self) -> ReplicatorStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every event up to this seq is on the server and on this device's disk.
    pub fn durable_seq(&self) -> u64 {
        self.status().durable_seq
    }

    fn check(&self, seq: u64) -> Option<Result<(), DurableError>> {
        let status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        check_status(&status, seq)
    }

    /// Waits until `seq` is durable on the server and on this device's disk
    /// (R6). Waits through
    /// outages; fails only when the replicator is fenced or stopped.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), DurableError> {
        self.want(seq);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(result) = self.check(seq) {
                return result;
            }
            changed.await;
        }
    }

    /// Like [`ReplicatorHandle::wait_durable`], blocking the calling thread,
    /// for synchronous callers; `timeout` bounds the wait.
    pub fn wait_durable_blocking(
        &self,
        seq: u64,
        timeout: Option<Duration>,
    ) -> Result<(), DurableError> {
        self.want(seq);
        let deadline = timeout.map(|t| (std::time::Instant::now() + t, t));
        let mut status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = check_status(&status, seq) {
                return result;
            }
            status = match deadline {
                None => self
                    .shared
                    .changed_sync
                    .wait(status)
                    .unwrap_or_else(|p| p.into_inner()),
                Some((at, t)) => {
                    let now = std::time::Instant::now();
                    if now >= at {
                        return Err(DurableError::TimedOut(seq, t));
                    }
                    self.shared
                        .changed_sync
                        .wait_timeout(status, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Ships everything, then releases the lease (R4) and stops. Another
    /// device can then acquire it.
    pub async fn release(&self) -> Result<(), DurableError> {
        self.shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release = true;
        self.notify();
        let result = loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let status = self.status();
            match status.state {
                ReplicatorState::Released => break Ok(()),
                ReplicatorState::Fenced(f) => break Err(DurableError::Fenced(f)),
                ReplicatorState::Stopped | ReplicatorState::Failed(_) => {
                    break Err(DurableError::Stopped(
                        status.durable_seq,
                        format!("{:?}", status.state),
                    ));
                }
                _ => changed.await,
            }
        };
        self.join();
        result
    }

    /// Ends shipping because the device cannot go on (its log cannot be written): the state
    /// becomes [`ReplicatorState::Failed`] with `reason` for good, every waiter for an event
    /// not yet durable gets [`DurableError::Stopped`], and the worker stops at its next turn.
    /// Does not wait for it: the caller may be a thread the worker's upload waits on.
    ///
    /// `reason` is `None` when the caller's error only repeats an earlier failure, whose
    /// reason comes from whoever met it first; if none ever comes, the worker fails with a
    /// general one when it stops.
    pub fn fail(&self, reason: Option<String>) {
        self.shared.fail(reason);
    }

    /// Stops shipping without releasing the lease (the device keeps it and
    /// resumes on restart). Waits for the thread to end.
    pub fn stop(&self) {
        self.shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stop = true;
        self.notify();
        self.join();
    }

    fn join(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

fn check_status(status: &ReplicatorStatus, seq: u64) -> Option<Result<(), DurableError>> {
    if status.durable_seq >= seq {
        return Some(Ok(()));
    }
    match &status.state {
        ReplicatorState::Running | ReplicatorState::Unreachable { .. } => None,
        ReplicatorState::Fenced(f) => Some(Err(DurableError::Fenced(*f))),
        other => Some(Err(DurableError::Stopped(seq, format!("{other:?}")))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One prepared upload, kept whole so a retry resends the same bytes.
struct Upload {
    items: Vec<KeyValue>,
    deletes: Vec<KeyValue>,
    manifest: Manifest,
    last_seq: u64,
    events: u64,
    bytes: u64,
}

enum Outcome {
    Landed,
    /// The server's head is the follower's (see [`Follower`]): it landed.
    FollowerLanded,
    Fenced(Fenced),
    Stopped,
    Failed(String),
}

/// Syncing the log to disk on a blocking thread.
type Sync = tokio::task::JoinHandle<Result<u64, till_log::AppendError>>;

/// A second upload sent, once, while the one before it travels ([`ReplicatorConfig::pipeline`]).
/// It lands only after that one (its head version follows it); if it is refused or its answer
/// is lost, its events ship again in the next ordinary upload.
struct Follower {
    upload: Upload,
    put: tokio::task::JoinHandle<Result<(), VssError>>,
    sync: Option<Sync>,
}

struct Worker {
    log: Arc<Log>,
    remote: Remote,
    manifest: Manifest,
    version: i64,
    config: ReplicatorConfig,
    shared: Arc<Shared>,
    /// The manifest of the follower in flight: a conflict that finds it on the server is our own
    /// upload, not another device's.
    follower: std::cell::RefCell<Option<Manifest>>,
    /// A follower whose answer was lost, so maybe landed: recorded if a conflict finds its
    /// manifest on the server.
    lost: Option<Upload>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let (release, stop) = self.shared.control();
            if stop {
                let failing = self
                    .shared
                    .control
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failing;
                self.finish(if failing {
                    ReplicatorState::Failed(
                        "this device's log could not be written (an earlier write to it failed)"
                            .into(),
                    )
                } else {
                    ReplicatorState::Stopped
                });
                return;
            }
            match self.outbox() {
                Ok(Outbox::Idle) => {
                    // Checked again once woken: a notify that came after the check is kept.
                    self.shared.wake.notified().await;
                    continue;
                }
                Ok(Outbox::Lingers) => self.linger().await,
                Ok(Outbox::Ship) => {}
                Err(e) => {
                    self.finish(ReplicatorState::Failed(e));
                    return;
                }
            }
            let upload = match self.prepare() {
                Ok(u) => u,
                Err(e) => {
                    self.finish(ReplicatorState::Failed(e));
                    return;
                }
            };
            let upload = match upload {
                Some(u) => u,
                None if release => match self.release_upload() {
                    Ok(u) => u,
                    Err(e) => {
                        self.finish(ReplicatorState::Failed(e));
                        return;
                    }
                },
                None => {
                    self.shared.wake.notified().await;
                    continue;
                }
            };
            // The upload's events reach this device's disk while they travel to the server
            // (a write that waits for them may have been appended unsynced): a waiter hears
            // they are durable only once both hold them.
            let sync = self.sync_to(upload.last_seq);
            let (outcome, follower) = self.send_with_follower(&upload).await;
            if let Err(e) = synced(sync).await {
                self.finish(ReplicatorState::Failed(e));
                return;
            }
            let result = match outcome {
                Outcome::Landed => self.landed(upload).map(|()| (follower, false)),
                // Our head, one upload further: the follower landed, so this one did before it.
                Outcome::FollowerLanded if follower.is_some() => {
                    self.landed(upload).map(|()| (follower, true))
                }
                // The follower of an earlier upload, whose answer was lost, landed; this upload
                // repeated its place in the chain and is built again from the outbox.
                Outcome::FollowerLanded => match self.lost.take() {
                    Some(lost) => self.landed_as(lost, true).map(|()| (None, false)),
                    None => Err(
                        "the backup's head is a follower upload this device no longer knows".into(),
                    ),
                },
                Outcome::Fenced(f) => {
                    self.finish(ReplicatorState::Fenced(f));
                    return;
                }
                Outcome::Stopped => {
                    self.finish(ReplicatorState::Stopped);
                    return;
                }
                Outcome::Failed(e) => {
                    self.finish(ReplicatorState::Failed(e));
                    return;
                }
            };
            let (follower, known) = match result {
                Ok(follower) => follower,
                Err(e) => {
                    self.finish(ReplicatorState::Failed(e));
                    return;
                }
            };
            if self.manifest.state == LeaseState::Released {
                self.finish(ReplicatorState::Released);
                return;
            }
            if let Err(e) = self.follower_landed(follower, known).await {
                self.finish(ReplicatorState::Failed(e));
                return;
            }
        }
    }

    /// Syncs the log up to `seq` on a blocking thread, unless it is synced that far already.
    fn sync_to(&self, seq: u64) -> Option<Sync> {
        (self.log.synced_seq() < seq).then(|| {
            let log = Arc::clone(&self.log);
            let shared = Arc::clone(&self.shared);
            tokio::task::spawn_blocking(move || {
                // Told at once: the upload's answer may bring another failure of the log, one
                // that only repeats this one, before this sync's result is read.
                log.sync().inspect_err(|e| {
                    if !e.follows_an_earlier_failure() {
                        shared.fail(Some(synced_error(e)));
                    }
                })
            })
        })
    }

    /// Sends `upload` until it lands ([`Worker::send`]). Meanwhile, if a caller comes to wait
    /// for events after it, sends them once in a [`Follower`].
    async fn send_with_follower(&self, upload: &Upload) -> (Outcome, Option<Follower>) {
        let send = self.send(upload);
        tokio::pin!(send);
        let mut follower = None;
        loop {
            tokio::select! {
                biased;
                outcome = &mut send => {
                    if !matches!(outcome, Outcome::Landed | Outcome::FollowerLanded)
                        && let Some(f) = follower.take()
                    {
                        abandon(f);
                    }
                    return (outcome, follower);
                }
                _ = self.shared.wake.notified(), if follower.is_none() && self.config.pipeline => {
                    follower = self.follower(upload);
                }
            }
        }
    }

    /// A follower for `first`, if a caller waits for events after it and they can go now.
    fn follower(&self, first: &Upload) -> Option<Follower> {
        let (release, stop) = self.shared.control();
        // After a follower whose answer was lost, the chain's next place is uncertain until an
        // upload settles it: no follower then.
        if release
            || stop
            || self.lost.is_some()
            || first.manifest.state == LeaseState::Released
            || self.shared.wanted.load(Ordering::SeqCst) <= first.last_seq
        {
            return None;
        }
        // A snapshot is due: it goes in an ordinary upload, with the retention it brings.
        let upload = self
            .prepare_after(first.last_seq, &first.manifest, self.version + 1, false)
            .ok()
            .flatten()?;
        let remote = self.remote.clone();
        let (items, deletes) = (upload.items.clone(), upload.deletes.clone());
        let put = tokio::spawn(async move { remote.put(items, deletes).await });
        let sync = self.sync_to(upload.last_seq);
        *self.follower.borrow_mut() = Some(upload.manifest.clone());
        Some(Follower { upload, put, sync })
    }

    /// Waits for the answer to a follower whose upload before it landed, and records it if it
    /// landed too (`known`: the server's head showed it had). A refused follower (it reached
    /// the server first) is dropped: its events ship again.
    async fn follower_landed(
        &mut self,
        follower: Option<Follower>,
        known: bool,
    ) -> Result<(), String> {
        let Some(follower) = follower else {
            return Ok(());
        };
        let answer = follower.put.await;
        synced(follower.sync).await?;
        match answer {
            Ok(Ok(())) => self.landed_as(follower.upload, true),
            _ if known => self.landed_as(follower.upload, true),
            // Refused, or its answer was lost and the client's retry found it landed: the head
            // tells which.
            Ok(Err(VssError::Conflict { .. })) => match self.remote.head().await {
                Ok(Some((head, _))) if head == follower.upload.manifest => {
                    self.landed_as(follower.upload, true)
                }
                Ok(_) => {
                    self.shared.update(|s| s.followers_refused += 1);
                    Ok(())
                }
                Err(_) => self.keep_lost(follower.upload),
            },
            // Lost on the way back, so maybe landed: a conflict that finds it on the server
            // records it ([`Worker::resolve`]); the next upload that lands proves it did not.
            _ => self.keep_lost(follower.upload),
        }
    }

    /// Keeps a follower that may have landed, for [`Worker::resolve`] to recognise.
    fn keep_lost(&mut self, upload: Upload) -> Result<(), String> {
        self.lost = Some(upload);
        Ok(())
    }

    /// What to do with the outbox now. Decided before the upload is built, so an event
    /// committed in between is either lingered for or not seen yet, never shipped unasked.
    fn outbox(&self) -> Result<Outbox, String> {
        if self.urgent() {
            return Ok(Outbox::Ship);
        }
        let head = self.log.head().map_err(|e| e.to_string())?.seq;
        Ok(if head <= self.durable_seq() {
            Outbox::Idle
        } else if self.config.linger.is_zero() {
            Outbox::Ship
        } else {
            Outbox::Lingers
        })
    }

    /// A caller waits for an event that is not durable yet, or the replicator is asked to
    /// release or stop.
    fn urgent(&self) -> bool {
        let (release, stop) = self.shared.control();
        release || stop || self.shared.wanted.load(Ordering::SeqCst) > self.durable_seq()
    }

    /// Every event up to this seq is on the server (the outbox's watermark, as the status has it).
    fn durable_seq(&self) -> u64 {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .durable_seq
    }

    /// Waits up to [`ReplicatorConfig::linger`] for more events, ending as soon as the wait is
    /// [`Worker::urgent`].
    async fn linger(&self) {
        let until = tokio::time::Instant::now() + self.config.linger;
        while !self.urgent() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    fn finish(&self, state: ReplicatorState) {
        self.shared.update(|s| s.state = state);
    }

    /// Builds the next upload from the outbox, or `None` if it is empty.
    fn prepare(&self) -> Result<Option<Upload>, String> {
        let shipped = self.log.shipped().map_err(|e| e.to_string())?;
        self.prepare_after(shipped, &self.manifest, self.version, true)
    }

    /// Builds an upload of the events after `shipped`, extending `manifest` (the head at
    /// `version` on the server once the uploads before it land). Without `snapshots`, returns
    /// `None` when a snapshot is due, so that one goes in an ordinary upload.
    fn prepare_after(
        &self,
        shipped: u64,
        manifest: &Manifest,
        version: i64,
        snapshots: bool,
    ) -> Result<Option<Upload>, String> {
        let limit = self.config.max_segment_events * self.config.max_segments_per_upload;
        let since_snapshot = shipped - manifest.snapshots.last().map_or(0, |s| s.seq.min(shipped));
        let snapshot_due =
            self.config.snapshot_every > 0 && since_snapshot >= self.config.snapshot_every;
        if snapshot_due && !snapshots {
            return Ok(None);
        }
        // For a snapshot, read the state first and ship exactly up to it, so
        // the snapshot is the fold of the shipped events.
        let state = if snapshot_due {
            Some(self.log.state().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let to = state.as_ref().map_or(u64::MAX, |s| s.seq());
        let pending = self
            .log
            .events(shipped + 1, to, limit)
            .map_err(|e| e.to_string())?;
        let Some(last) = pending.last() else {
            return Ok(None);
        };
        let (last_seq, last_hash, last_at_ms) = (last.seq, last.hash(), last.at_ms);
        let mut manifest = manifest.clone();
        let mut items = Vec::new();
        for segment in cut(&pending, &self.config) {
            items.push(
                self.remote
                    .segment_item(manifest.segments, segment, self.config.compress),
            );
            manifest.segments += 1;
        }
        let mut deletes = Vec::new();
        if let Some(state) = state.filter(|s| s.seq() == last_seq) {
            let (chunks, reference) = self.remote.snapshot_items(
                &state,
                manifest.segments,
                self.config.snapshot_chunk_bytes,
            );
            items.extend(chunks);
            manifest.snapshots.push(reference);
            deletes = self.retention(&mut manifest);
        }
        manifest.last_seq = last_seq;
        manifest.last_hash = last_hash;
        manifest.last_at_ms = last_at_ms;
        manifest.writes += 1;
        items.push(self.remote.head_item(&manifest, version));
        let bytes = items.iter().map(|i| i.value.len() as u64).sum();
        Ok(Some(Upload {
            items,
            deletes,
            manifest,
            last_seq,
            events: pending.len() as u64,
            bytes,
        }))
    }

    /// Applies the retention policy to a manifest that just gained a
    /// snapshot: the deletes to send in the same transaction.
    fn retention(&self, manifest: &mut Manifest) -> Vec<KeyValue> {
        let Retention::KeepSnapshots(keep) = self.config.retention else {
            return Vec::new();
        };
        let keep = keep.max(1) as usize;
        if manifest.snapshots.len() <= keep {
            return Vec::new();
        }
        let drop = manifest.snapshots.len() - keep;
        let oldest_kept = manifest.snapshots[drop].next_segment;
        let mut deletes = Vec::new();
        // Stay well under the 1000-item limit; the rest goes next time.
        let mut first = manifest.first_segment;
        while first < oldest_kept && deletes.len() < 500 {
            deletes.push(KeyValue::new(
                self.remote.name(&names::segment(first)),
                1,
                Vec::new(),
            ));
            first += 1;
        }
        manifest.first_segment = first;
        if first == oldest_kept {
            for s in manifest.snapshots.drain(..drop) {
                for chunk in 0..s.chunks {
                    deletes.push(KeyValue::new(
                        self.remote.name(&names::snapshot(s.seq, chunk)),
                        1,
                        Vec::new(),
                    ));
                }
            }
        }
        deletes
    }

    /// The head-only upload that releases the lease.
    fn release_upload(&self) -> Result<Upload, String> {
        let mut manifest = self.manifest.clone();
        manifest.state = LeaseState::Released;
        manifest.writes += 1;
        let item = self.remote.head_item(&manifest, self.version);
        let bytes = item.value.len() as u64;
        Ok(Upload {
            items: vec![item],
            deletes: Vec::new(),
            last_seq: manifest.last_seq,
            manifest,
            events: 0,
            bytes,
        })
    }

    /// Sends an upload until it lands, backing off while the server is
    /// unreachable; a conflict is either our own landed upload or fencing.
    async fn send(&self, upload: &Upload) -> Outcome {
        let mut backoff = self.config.backoff_min;
        let mut since = None;
        loop {
            let result = self
                .remote
                .put(upload.items.clone(), upload.deletes.clone())
                .await;
            let error = match result {
                Ok(()) => return Outcome::Landed,
                Err(VssError::Conflict { .. }) => match self.resolve(upload).await {
                    Ok(outcome) => return outcome,
                    Err(e) => e,
                },
                Err(e) => e.to_string(),
            };
            let since_ms = *since.get_or_insert_with(now_ms);
            self.shared.update(|s| {
                s.state = ReplicatorState::Unreachable {
                    since_ms,
                    error: error.clone(),
                }
            });
            let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
            let wait = backoff + Duration::from_millis(jitter);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shared.wake.notified() => {}
            }
            if self.shared.control().1 {
                return Outcome::Stopped;
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// After a conflict: reads the head to tell our own landed upload (R3)
    /// from another device's lease (R2).
    async fn resolve(&self, upload: &Upload) -> Result<Outcome, String> {
        let head = self.remote.head().await.map_err(|e| e.to_string())?;
        let Some((remote, _version)) = head else {
            return Ok(Outcome::Failed(
                "the backup's head disappeared from the server".into(),
            ));
        };
        let ours = &upload.manifest;
        if remote == *ours {
            return Ok(Outcome::Landed);
        }
        let lost = self.lost.as_ref().map(|u| &u.manifest);
        if self.follower.borrow().as_ref() == Some(&remote) || lost == Some(&remote) {
            return Ok(Outcome::FollowerLanded);
        }
        if remote.device != ours.device || remote.epoch != ours.epoch {
            return Ok(Outcome::Fenced(Fenced {
                device: remote.device,
                epoch: remote.epoch,
            }));
        }
        Ok(Outcome::Failed(format!(
            "the backup's head changed under this device's own lease (remote at seq {}, {} writes; expected seq {}, {} writes)",
            remote.last_seq, remote.writes, ours.last_seq, ours.writes
        )))
    }

    /// Records a landed upload: status first (the events are on the server,
    /// so waiters may go on), then the outbox watermark and position.
    fn landed(&mut self, upload: Upload) -> Result<(), String> {
        self.landed_as(upload, false)
    }

    /// [`Worker::landed`], counting a follower (in the same status update, so a waiter that
    /// goes on sees it counted).
    fn landed_as(&mut self, upload: Upload, follower: bool) -> Result<(), String> {
        let segments = upload.manifest.segments;
        self.shared.update(|s| {
            s.followers_landed += u64::from(follower);
            s.durable_seq = s.durable_seq.max(upload.last_seq);
            s.state = ReplicatorState::Running;
            s.uploads += 1;
            s.events_shipped += upload.events;
            s.bytes_uploaded += upload.bytes;
            s.segments = segments;
        });
        // Not synced: a crash that rolls it back leaves the watermark and the segment ordinal
        // behind the server, which resuming the lease and pulling reconcile.
        self.log
            .mark_shipped_unsynced(
                upload.last_seq,
                &[(NEXT_SEGMENT, segments.to_le_bytes().as_slice())],
            )
            .map_err(|e| format!("this device's log could not be written: {e}"))?;
        self.manifest = upload.manifest;
        self.version += 1;
        // A follower whose answer was lost did not land if this (built after it) did, or this
        // is it.
        self.lost = None;
        *self.follower.borrow_mut() = None;
        Ok(())
    }
}

/// Waits for a sync of the log started by [`Worker::sync_to`].
async fn synced(sync: Option<Sync>) -> Result<(), String> {
    let Some(sync) = sync else { return Ok(()) };
    match sync.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(synced_error(&e)),
        Err(e) => Err(format!(
            "this device's log could not be synced to disk: {e}"
        )),
    }
}

fn synced_error(e: &till_log::AppendError) -> String {
    format!("this device's log could not be synced to disk: {e}")
}

/// Stops waiting for a follower whose upload before it did not land (fenced, stopped or
/// failed). It lands only after that one, if ever; a device that resumes its lease reconciles
/// with the server's head as after any crash.
fn abandon(follower: Follower) {
    follower.put.abort();
}

/// What the worker does with its outbox next.
enum Outbox {
    /// Nothing to ship and no one waiting: wait to be woken.
    Idle,
    /// Events no caller waits for yet: they may wait for more, up to the linger.
    Lingers,
    /// Ship now.
    Ship,
}

/// Cuts pending events into segments by count and size.
fn cut<'a>(events: &'a [Event], config: &ReplicatorConfig) -> Vec<&'a [Event]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let size = match &e.op {
            till_log::Op::Put(v) => v.len(),
            till_log::Op::Delete => 0,
        } + e.key.key.len()
            + e.key.namespace.len()
            + e.key.sub_namespace.len()
            + 96;
        let count = i - start;
        if count > 0
            && (count >= config.max_segment_events || bytes + size > config.max_segment_bytes)
        {
            out.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}
