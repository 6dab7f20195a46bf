//! `LogStore`: LDK's key-value store over the event log, with backup before acknowledge.
//!
//! Every `write` and `remove` LDK or ldk-node makes (channel monitors, the channel manager, the
//! payment store, the on-chain wallet's changes, ...) becomes one event in the [`Log`]. Writes that
//! carry channel state additionally wait until a [`DurabilityBarrier`] says their event is durable
//! on the remote, so LDK never acts on channel state the backup does not have.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use ldk_node::lightning::io;
use ldk_node::lightning::util::async_poll::AsyncResult;
use ldk_node::lightning::util::persist::{KVStore, KVStoreSync};
use till_log::{DeviceId, Key, Log, Write};

use crate::gate::{self, Gate};

/// The future [`DurabilityBarrier::wait_durable`] returns.
pub type BarrierFuture = Pin<Box<dyn Future<Output = Result<(), BarrierError>> + Send + 'static>>;

/// Answers "is seq N of the log durable remotely?" and lets writers wait for it (DESIGN R6).
///
/// The replication layer implements it by shipping the log's outbox; uploads batch everything
/// pending, so many waiters share one round trip. Implementations must do their shipping on their
/// own threads or runtime: [`DurabilityBarrier::wait_durable_blocking`] is called from ldk-node's
/// worker threads, which it blocks until the seq is durable.
///
/// While the remote is unreachable the waits do not fail, they keep waiting (payments pause) and
/// [`DurabilityBarrier::state`] reports [`BackupState::Unreachable`]. They fail only when waiting
/// can never succeed: the device was fenced, or the shipper stopped.
pub trait DurabilityBarrier: Send + Sync {
    /// Tells the shipper the log has grown to `seq`. Called after every local commit, so events
    /// of keys that do not wait still ship in the next batch.
    fn notify(&self, seq: u64);

    /// Blocks the calling thread until every event up to `seq` is durable remotely.
    fn wait_durable_blocking(&self, seq: u64) -> Result<(), BarrierError>;

    /// Resolves once every event up to `seq` is durable remotely.
    fn wait_durable(&self, seq: u64) -> BarrierFuture;

    /// How the backup is doing, for the node to report.
    fn state(&self) -> BackupState;

    /// Whether a seq this barrier reports durable is also on the local log's disk (the
    /// barrier syncs the store's log itself). Then the writes that wait for it are appended
    /// unsynced ([`Log::append_unsynced`]): the sync happens while they travel to the
    /// server, not before. `false` (the default) keeps every append synced.
    fn syncs_log(&self) -> bool {
        false
    }

    /// The device's log could not take a write (its disk is full, say): nothing more can
    /// become durable. `reason` is `None` when the failure only repeats an earlier one, whose
    /// reason is the one to tell. A barrier that ships ends its shipper as failed, so the
    /// till stops the node, and returns `true`: the write is then held for good
    /// ([`DurabilityBarrier::hold_blocking`], [`DurabilityBarrier::hold`]), as a fenced
    /// device's writes are, instead of failing, since LDK panics on channel state it cannot
    /// persist and acts on nothing held. `false` (the default): the write fails.
    fn log_failed(&self, _reason: Option<&str>) -> bool {
        false
    }

    /// Holds the calling thread for good (see [`DurabilityBarrier::log_failed`]).
    fn hold_blocking(&self) -> ! {
        loop {
            std::thread::park();
        }
    }

    /// A future that never resolves (see [`DurabilityBarrier::log_failed`]).
    fn hold(&self) -> BarrierFuture {
        Box::pin(std::future::pending())
    }
}

/// Why a durability wait cannot succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// Another device holds the lease: this device must stop its node at once.
    #[error(
        "another device ({device}) is master at lease epoch {epoch}; this device was fenced and must stop"
    )]
    Fenced {
        /// The device that holds the lease now.
        device: DeviceId,
        /// Its lease epoch.
        epoch: u64,
    },
    /// The shipper stopped (shut down or failed for good); nothing more will become durable.
    #[error("the backup shipper stopped: {0}")]
    Stopped(String),
}

/// The backup's state as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupState {
    /// Everything the node waits for is being shipped.
    Ok,
    /// The remote has not answered since `since`; channel-state writes (and so payments) wait.
    Unreachable {
        /// When the first failed attempt of the current outage happened.
        since: SystemTime,
        /// The last error, for the merchant or the operator.
        last_error: String,
    },
    /// Another device holds the lease; this node must not run.
    Fenced {
        /// The device that holds the lease now.
        device: DeviceId,
        /// Its lease epoch.
        epoch: u64,
    },
    /// The shipper stopped (released the lease, shut down, or failed for good); nothing more
    /// becomes durable, so channel-state writes fail.
    Stopped {
        /// Why, for the merchant or the operator.
        reason: String,
    },
}

/// A barrier for a node without a remote: every seq counts as durable once committed locally.
///
/// For tests and for a till that has not been paired with a server yet. It gives no backup.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

impl DurabilityBarrier for LocalOnly {
    fn notify(&self, _seq: u64) {}

    fn wait_durable_blocking(&self, _seq: u64) -> Result<(), BarrierError> {
        Ok(())
    }

    fn wait_durable(&self, _seq: u64) -> BarrierFuture {
        Box::pin(std::future::ready(Ok(())))
    }

    fn state(&self) -> BackupState {
        BackupState::Ok
    }
}

/// Which writes wait for the durability barrier before returning to LDK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitPolicy {
    /// Channel state waits: channel monitors, monitor updates and the channel manager (writes
    /// and non-lazy removes). Everything else returns after the local commit and ships with the
    /// next batch. The safe default.
    #[default]
    ChannelState,
    /// Every write and non-lazy remove waits. Slower; nothing is acknowledged unbacked.
    Everything,
    /// Nothing waits. Unsafe with a remote: LDK may act on channel state the backup lacks, and a
    /// restore could then broadcast a revoked state. Only for measurements.
    Nothing,
}

impl WaitPolicy {
    /// Whether a write or non-lazy remove of this key waits for the barrier.
    pub fn waits_for(&self, primary_namespace: &str, secondary_namespace: &str, key: &str) -> bool {
        match self {
            WaitPolicy::Everything => true,
            WaitPolicy::Nothing => false,
            WaitPolicy::ChannelState => {
                is_channel_state(primary_namespace, secondary_namespace, key)
            }
        }
    }
}

/// Whether LDK keeps channel state under this key: a channel monitor, a monitor update, or the
/// channel manager.
fn is_channel_state(primary_namespace: &str, secondary_namespace: &str, key: &str) -> bool {
    gate::is_monitor(primary_namespace)
        || gate::is_manager(primary_namespace, secondary_namespace, key)
}

/// One write that waited for the barrier, reported to a [`LogStore::with_observer`] hook after the
/// barrier released it and before the write returned to LDK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarrierPassed {
    /// The key written or removed.
    pub key: Key,
    /// The seq the write waited for (its own event, or the head for a remove of an absent key).
    pub seq: u64,
    /// Whether it was a remove.
    pub removed: bool,
}

pub(crate) type Observer = Arc<dyn Fn(&BarrierPassed) + Send + Sync>;

/// LDK's [`KVStore`] and [`KVStoreSync`] over the event log; give it to ldk-node with
/// `Builder::build_with_store`.
///
/// - Read-your-writes: a write is committed to the log before the call returns (for the async
///   trait, before the future is even returned), so every later read sees it.
/// - Per-key order: writes and removes are committed in the order they are called, so the
///   order the async trait asks for holds without version bookkeeping.
/// - `read` returns [`io::ErrorKind::NotFound`] exactly when the key has no live value.
/// - Lazy removes are committed at once (LDK allows removing later, not requires it) but, as a
///   lost lazy remove is replayed by LDK, they never wait for the barrier.
/// - Channel state (see [`WaitPolicy`]) returns only after the barrier confirms its seq.
pub struct LogStore {
    log: Arc<Log>,
    barrier: Arc<dyn DurabilityBarrier>,
    policy: WaitPolicy,
    observer: Option<Observer>,
    gate: Option<Arc<Gate>>,
}

/// A committed write the caller must wait for before acknowledging it.
struct Wait {
    passed: BarrierPassed,
    /// The channel manager with a gate: its durability completes the monitor writes it records.
    manager: Option<Arc<Gate>>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("log", &self.log)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// A store over `log` whose channel-state writes wait for `barrier` (the default
    /// [`WaitPolicy::ChannelState`]).
    pub fn new(log: Arc<Log>, barrier: Arc<dyn DurabilityBarrier>) -> Self {
        Self {
            log,
            barrier,
            policy: WaitPolicy::default(),
            observer: None,
            gate: None,
        }
    }

    /// Gates channel-monitor writes on `gate` (see [`Gate`]): monitor writes LDK asks to
    /// persist return after the local commit and complete once a channel manager that records
    /// them is durable; the manager write waits for the barrier and then completes them.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Sets which writes wait for the barrier.
    pub fn with_policy(mut self, policy: WaitPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Calls `observer` for every write that waited for the barrier, after the barrier released
    /// it and before it returns to LDK (for a manager the gate writes itself, before the
    /// monitor writes it records complete): tests use it to check each such seq is on the
    /// server.
    pub fn with_observer(
        mut self,
        observer: impl Fn(&BarrierPassed) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Which writes wait for the barrier.
    pub fn policy(&self) -> WaitPolicy {
        self.policy
    }

    /// The log underneath.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The backup's state, from the barrier.
    pub fn backup_state(&self) -> BackupState {
        self.barrier.state()
    }

    /// Appends Till's own records (not LDK's) and tells the barrier; they never wait.
    pub(crate) fn append(
        &self,
        writes: Vec<Write>,
    ) -> Result<till_log::AppendOutcome, till_log::AppendError> {
        let outcome = self.log.append(writes).inspect_err(|e| {
            if log_itself_failed(e) {
                self.barrier.log_failed(reason_of(e).as_deref());
            }
        })?;
        self.barrier.notify(outcome.head_seq);
        Ok(outcome)
    }

    fn read_value(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        let k = checked_key(primary, secondary, key)?;
        match self.log.get(&k).map_err(other)? {
            Some(stored) => Ok(stored.value),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no value for {k}"),
            )),
        }
    }

    fn list_keys(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        if primary.is_empty() && !secondary.is_empty() {
            return Err(invalid("a secondary namespace needs a primary namespace"));
        }
        Ok(self
            .log
            .list(primary, secondary)
            .map_err(other)?
            .into_iter()
            .map(|(key, _version)| key)
            .collect())
    }

    /// Commits one write to the log and tells the barrier. Returns what the caller must wait
    /// for before acknowledging, if anything.
    fn commit(&self, write: Write, lazy: bool) -> Result<Option<Wait>, Failed> {
        // The manager, with a gate: always waited for, since its durability completes the
        // monitor writes it records.
        if let Some(gate) = self
            .gate
            .as_ref()
            .filter(|_| gate::is_manager_key(&write.key))
        {
            return self.commit_manager(gate, Some(write));
        }
        let removed = matches!(write.op, till_log::Op::Delete);
        let waits = !lazy
            && self.policy.waits_for(
                &write.key.namespace,
                &write.key.sub_namespace,
                &write.key.key,
            );
        let key = write.key.clone();
        // A write the barrier will release (waited for, or gated and completed by a waited
        // manager) needs no sync of its own when the barrier syncs the log.
        let released_by_barrier = waits || gate::in_gated_write(&key);
        let outcome = self.append_ldk(vec![write], released_by_barrier)?;
        let appended = outcome.results[0].map(|appended| appended.seq);
        // A remove of an absent key writes no event; waiting for the head covers the earlier
        // event that removed it.
        let seq = appended.unwrap_or(outcome.head_seq);
        self.barrier.notify(outcome.head_seq);
        let passed = BarrierPassed { key, seq, removed };
        if gate::note_gated_write(&passed.key, appended, !removed) || !waits {
            return Ok(None);
        }
        Ok(Some(Wait {
            passed,
            manager: None,
        }))
    }

    /// Appends LDK's writes: unsynced when the barrier releases them and syncs the log itself.
    fn append_ldk(
        &self,
        writes: Vec<Write>,
        released_by_barrier: bool,
    ) -> Result<till_log::AppendOutcome, Failed> {
        if released_by_barrier && self.barrier.syncs_log() {
            self.log.append_unsynced(writes)
        } else {
            self.log.append(writes)
        }
        .map_err(Failed::from)
    }

    /// Commits the channel manager through the gate, serialized afresh under the gate's order
    /// lock (see [`Gate::order`]) when the node is there, else as `given`, with the monitor cut
    /// when it needs one. An unchanged manager that would record nothing new is not written
    /// again: the wait is for the one already committed. `None` when there is nothing to
    /// write (no node and nothing given).
    fn commit_manager(
        &self,
        gate: &Arc<Gate>,
        given: Option<Write>,
    ) -> Result<Option<Wait>, Failed> {
        let mut order = gate.order();
        let write = match (gate.encode_manager(), given) {
            (Some(bytes), given) => {
                let key = given.map_or_else(gate::manager_key, |given| given.key);
                Write::put(key, bytes)
            }
            (None, Some(given)) => given,
            (None, None) => return Ok(None),
        };
        let key = write.key.clone();
        let removed = matches!(write.op, till_log::Op::Delete);
        let bytes = match &write.op {
            till_log::Op::Put(bytes) => Some(bytes.clone()),
            till_log::Op::Delete => None,
        };
        let wait = |seq| Wait {
            passed: BarrierPassed {
                key: key.clone(),
                seq,
                removed,
            },
            manager: Some(Arc::clone(gate)),
        };
        if let Some(seq) = bytes.as_deref().and_then(|b| order.unchanged(b))
            && !gate.has_unrecorded()
        {
            return Ok(Some(wait(seq)));
        }
        let mut prepared = gate.manager_write(write);
        let writes = std::mem::take(&mut prepared.writes);
        let outcome = self.append_ldk(writes, true)?;
        let seq = outcome.results[0].map_or(outcome.head_seq, |appended| appended.seq);
        prepared.committed(seq);
        if let Some(bytes) = bytes {
            order.committed(bytes, seq);
        }
        // Told before the order is released: a writer that finds this manager unchanged waits
        // for its seq at once, and a barrier may not be asked for a seq it was not told of.
        self.barrier.notify(outcome.head_seq);
        drop(order);
        Ok(Some(wait(seq)))
    }

    /// The gate's flusher: writes a fresh manager when some gated monitor write is not yet
    /// recorded by one, and returns what completes the writes it records once it is durable.
    /// The observer hears of the manager (it waited for the barrier like LDK's own manager
    /// writes), then of the monitor writes it completes.
    pub(crate) fn flush_manager(
        &self,
    ) -> io::Result<Option<impl Future<Output = ()> + Send + 'static>> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        if !gate.has_unrecorded() {
            return Ok(None);
        }
        let wait = match self.commit_manager(gate, None) {
            Err(Failed::Log(e)) => {
                self.barrier.log_failed(reason_of(&e).as_deref());
                return Err(other(log_failed(&e)));
            }
            result => result?,
        };
        let Some(wait) = wait else {
            return Ok(None);
        };
        let Wait { passed, .. } = wait;
        let durable = self.barrier.wait_durable(passed.seq);
        let observer = self.observer.clone();
        let gate = Arc::downgrade(gate);
        Ok(Some(async move {
            // A failed wait (fenced, stopped) completes nothing: LDK keeps the messages.
            if durable.await.is_ok()
                && let Some(gate) = gate.upgrade()
            {
                barrier_passed(&passed, Some(&gate), observer.as_ref());
            }
        }))
    }

    fn write_blocking(&self, write: Write, lazy: bool) -> io::Result<()> {
        let wait = match self.commit(write, lazy) {
            Err(Failed::Log(e)) if self.barrier.log_failed(reason_of(&e).as_deref()) => {
                self.barrier.hold_blocking()
            }
            other => other.map_err(io::Error::from)?,
        };
        if let Some(wait) = wait {
            self.barrier
                .wait_durable_blocking(wait.passed.seq)
                .map_err(barrier_failed)?;
            passed(&wait, self.observer.as_ref());
        }
        Ok(())
    }

    fn write_async(&self, write: Write, lazy: bool) -> AsyncResult<'static, (), io::Error> {
        let wait = match self.commit(write, lazy) {
            Ok(Some(wait)) => wait,
            Ok(None) => return Box::pin(std::future::ready(Ok(()))),
            Err(Failed::Log(e)) if self.barrier.log_failed(reason_of(&e).as_deref()) => {
                let held = self.barrier.hold();
                return Box::pin(async move { held.await.map_err(barrier_failed) });
            }
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        };
        let durable = self.barrier.wait_durable(wait.passed.seq);
        let observer = self.observer.clone();
        Box::pin(async move {
            durable.await.map_err(barrier_failed)?;
            passed(&wait, observer.as_ref());
            Ok(())
        })
    }
}

/// A waited write is durable: tell the observer, and if it is the manager, complete the monitor
/// writes it records.
fn passed(wait: &Wait, observer: Option<&Observer>) {
    barrier_passed(&wait.passed, wait.manager.as_deref(), observer);
}

/// [`passed`] for a write whose gate is held apart from its [`Wait`].
fn barrier_passed(passed: &BarrierPassed, manager: Option<&Gate>, observer: Option<&Observer>) {
    if let Some(observer) = observer {
        observer(passed);
    }
    if let Some(gate) = manager {
        gate.manager_durable(passed.seq, observer);
    }
}

/// Why a write did not commit: the log could not take it (its storage failed: the device's
/// disk is full, say), or the write itself was refused.
#[derive(Debug)]
enum Failed {
    Log(till_log::AppendError),
    Refused(io::Error),
}

impl From<till_log::AppendError> for Failed {
    fn from(e: till_log::AppendError) -> Self {
        if log_itself_failed(&e) {
            Failed::Log(e)
        } else {
            Failed::Refused(other(e))
        }
    }
}

/// Whether the log itself failed (its storage, or a commit cut short), rather than refusing
/// the write.
fn log_itself_failed(e: &till_log::AppendError) -> bool {
    use till_log::AppendError::{Corrupt, Interrupted, Storage};
    matches!(e, Storage(_) | Interrupted | Corrupt(_))
}

impl From<Failed> for io::Error {
    fn from(e: Failed) -> Self {
        match e {
            Failed::Log(e) => other(log_failed(&e)),
            Failed::Refused(e) => e,
        }
    }
}

/// What the merchant reads when the log could not take a write.
fn log_failed(e: &till_log::AppendError) -> String {
    format!("this device's log could not be written: {e}")
}

/// [`log_failed`], or `None` when the failure only repeats an earlier one.
fn reason_of(e: &till_log::AppendError) -> Option<String> {
    match e {
        till_log::AppendError::Storage(s) if s.follows_an_earlier_failure() => None,
        e => Some(log_failed(e)),
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

fn barrier_failed(e: BarrierError) -> io::Error {
    other(e)
}

fn other(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e.to_string())
}

/// Builds the log key, refusing what LDK's contract rules out (an empty key, a secondary
/// namespace without a primary one) before the log sees it.
fn checked_key(primary: &str, secondary: &str, key: &str) -> io::Result<Key> {
    let k = Key::new(primary, secondary, key);
    k.check().map_err(|reason| invalid(&reason))?;
    Ok(k)
}

impl KVStoreSync for LogStore {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        self.read_value(primary, secondary, key)
    }

    fn write(&self, primary: &str, secondary: &str, key: &str, buf: Vec<u8>) -> io::Result<()> {
        let k = checked_key(primary, secondary, key)?;
        self.write_blocking(Write::put(k, buf), false)
    }

    fn remove(&self, primary: &str, secondary: &str, key: &str, lazy: bool) -> io::Result<()> {
        let k = checked_key(primary, secondary, key)?;
        self.write_blocking(Write::delete(k), lazy)
    }

    fn list(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        self.list_keys(primary, secondary)
    }
}

impl KVStore for LogStore {
    fn read(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
    ) -> AsyncResult<'static, Vec<u8>, io::Error> {
        Box::pin(std::future::ready(self.read_value(primary, secondary, key)))
    }

    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> AsyncResult<'static, (), io::Error> {
        match checked_key(primary, secondary, key) {
            Ok(k) => self.write_async(Write::put(k, buf), false),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        lazy: bool,
    ) -> AsyncResult<'static, (), io::Error> {
        match checked_key(primary, secondary, key) {
            Ok(k) => self.write_async(Write::delete(k), lazy),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn list(&self, primary: &str, secondary: &str) -> AsyncResult<'static, Vec<String>, io::Error> {
        Box::pin(std::future::ready(self.list_keys(primary, secondary)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_waits_for_channel_state_only() {
        let policy = WaitPolicy::default();
        assert!(policy.waits_for("monitors", "", "abcd_0"));
        assert!(policy.waits_for("monitor_updates", "abcd_0", "7"));
        assert!(policy.waits_for("", "", "manager"));
        assert!(!policy.waits_for("", "", "network_graph"));
        assert!(!policy.waits_for("", "", "scorer"));
        assert!(!policy.waits_for("payments", "", "00ff"));
        assert!(!policy.waits_for("bdk_wallet", "", "descriptor"));
        assert!(WaitPolicy::Everything.waits_for("payments", "", "00ff"));
        assert!(!WaitPolicy::Nothing.waits_for("monitors", "", "abcd_0"));
    }
}
