//! The monitor gate: a channel-monitor write counts as persisted only once a `ChannelManager`
//! that knows about it is durable on the server.
//!
//! LDK releases the peer messages that depend on a monitor update as soon as the update is
//! persisted, and writes the `ChannelManager` later. A device killed in between restores a
//! manager older than its monitors, and LDK force-closes the channel (docs/DECISIONS.md). So
//! Till persists monitors asynchronously (ldk-node's `MonitorGate` hook, vendor/ldk-node):
//!
//! 1. A monitor update (or a new channel's first monitor) is committed to the log and reported
//!    to LDK as in progress. LDK holds every message that depends on it and keeps the update in
//!    the manager's list of in-flight updates.
//! 2. When the manager is written, the gate finds which pending updates it records: an update is
//!    in the manager's in-flight list byte for byte; a new channel's id is in the manager. Any
//!    pending update it does *not* record was made after the manager was serialized; the first
//!    such write's seq is stored with the manager, in the same commit, as the
//!    [`MONITOR_CUT`] record ("the monitors that go with this manager are those before seq N").
//! 3. Once the manager's event is durable on the server, the updates it records are completed,
//!    and the messages they held go to the peers at once. So LDK acts on an update only when the
//!    server holds both the update and a manager that knows it.
//! 4. Before a node is built from a log ([`align_monitors`]), the monitors are set back to the
//!    state that goes with the log's last manager: later monitor writes were never completed,
//!    so no peer has seen them, and the manager replays any in-flight update the monitors lack.
//!
//! Whole-monitor writes from chain sync, which LDK never waits for, are not gated: they wait for
//! the durability barrier like any other channel state.
//!
//! LDK's background processor writes the manager after each change and waits for that write to
//! be durable before it writes again, so an update that arrives meanwhile would wait for a whole
//! upload before a manager recording it is even written. The gate does not wait: its flusher
//! ([`Gate::start_flusher`]) writes a fresh manager as soon as an update is gated. Every manager
//! write, the background processor's included, is serialized afresh under one lock and committed
//! under it ([`Gate::order`]), so the log's last manager is always the newest serialization: one
//! serialized earlier can never land after one that completed updates it does not know.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use ldk_node::lightning::chain::ChannelMonitorUpdateStatus;
use ldk_node::lightning::ln::types::ChannelId;
use ldk_node::lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
};
use ldk_node::lightning::util::ser::Writeable;
use ldk_node::monitor_gate::{MonitorCompleter, MonitorGate, MonitorWrite};
use till_log::{Key, Log, Op, Write};

use crate::error::Error;
use crate::node::TILL_NAMESPACE;
use crate::store::{BarrierPassed, LogStore, Observer};

/// The record written with a `ChannelManager` when monitor writes made after the manager was
/// serialized were already in the log: `(till, ldk, monitor_cut)`, 8 bytes, big-endian, the last
/// seq of the monitors that go with that manager. docs/FORMAT.md.
pub const MONITOR_CUT: (&str, &str, &str) = (TILL_NAMESPACE, "ldk", "monitor_cut");

thread_local! {
    // The events a gated monitor write committed on this thread, while the gate stores one.
    static GATED: RefCell<Option<Vec<(Key, u64)>>> = const { RefCell::new(None) };
}

/// Called by the store for every committed write (`put`: a put, not a remove): whether the
/// write is part of a gated monitor write (then it must not wait for the barrier; the gate
/// completes it later).
pub(crate) fn note_gated_write(key: &Key, seq: Option<u64>, put: bool) -> bool {
    GATED.with(|gated| match gated.borrow_mut().as_mut() {
        Some(writes) if is_monitor_key(key) => {
            if let (Some(seq), true) = (seq, put) {
                writes.push((key.clone(), seq));
            }
            true
        }
        _ => false,
    })
}

/// Whether a write of `key` now, on this thread, is part of a gated monitor write (see
/// [`note_gated_write`]).
pub(crate) fn in_gated_write(key: &Key) -> bool {
    is_monitor_key(key) && GATED.with(|gated| gated.borrow().is_some())
}

/// Whether the key is a channel monitor or a monitor update.
pub(crate) fn is_monitor_key(key: &Key) -> bool {
    is_monitor(&key.namespace)
}

/// Whether the key is the channel manager.
pub(crate) fn is_manager_key(key: &Key) -> bool {
    is_manager(&key.namespace, &key.sub_namespace, &key.key)
}

/// Whether LDK keeps a channel monitor or a monitor update in this primary namespace.
pub(crate) fn is_monitor(primary_namespace: &str) -> bool {
    primary_namespace == CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE
        || primary_namespace == CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE
}

/// Whether LDK keeps the channel manager under this key.
pub(crate) fn is_manager(primary_namespace: &str, secondary_namespace: &str, key: &str) -> bool {
    primary_namespace == CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE
        && secondary_namespace == CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE
        && key == CHANNEL_MANAGER_PERSISTENCE_KEY
}

/// The key LDK keeps the channel manager under.
pub(crate) fn manager_key() -> Key {
    Key::new(
        CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_KEY,
    )
}

fn cut_key() -> Key {
    Key::new(MONITOR_CUT.0, MONITOR_CUT.1, MONITOR_CUT.2)
}

/// How the gate recognizes a pending write in a serialized manager.
enum Needle {
    /// An update: the manager lists it in flight, serialized exactly as it was persisted.
    Update(Vec<u8>),
    /// A new channel's first monitor: the manager holds the channel, so its id.
    Channel([u8; 32]),
}

impl Needle {
    fn found_in(&self, manager: &[u8]) -> bool {
        let needle: &[u8] = match self {
            Needle::Update(bytes) => bytes,
            Needle::Channel(id) => id,
        };
        memchr::memmem::find(manager, needle).is_some()
    }
}

struct Pending {
    channel_id: ChannelId,
    update_id: u64,
    needle: Needle,
    /// The log events the write made (puts only), in order.
    writes: Vec<(Key, u64)>,
    /// The seq of the first manager event that records it.
    recorded_at: Option<u64>,
}

/// Till's [`MonitorGate`]: shared by the node's [`crate::LogStore`] (which tells it about
/// manager writes and their durability) and ldk-node's chain monitor (which asks it to store
/// monitor writes).
#[derive(Default)]
pub struct Gate {
    pending: Mutex<Vec<Pending>>,
    completer: OnceLock<Arc<dyn MonitorCompleter>>,
    /// Held from serializing a manager to committing it: see [`Gate::order`].
    order: Mutex<LastManager>,
    /// Wakes the flusher ([`Gate::start_flusher`]).
    flusher: OnceLock<tokio::sync::mpsc::UnboundedSender<()>>,
}

/// The last manager committed through the gate.
#[derive(Default)]
pub(crate) struct LastManager {
    committed: Option<(Vec<u8>, u64)>,
}

impl LastManager {
    /// The seq of the last committed manager if it is exactly `bytes`.
    pub(crate) fn unchanged(&self, bytes: &[u8]) -> Option<u64> {
        match &self.committed {
            Some((last, seq)) if last.as_slice() == bytes => Some(*seq),
            _ => None,
        }
    }

    /// Remembers the manager just committed at `seq`.
    pub(crate) fn committed(&mut self, bytes: Vec<u8>, seq: u64) {
        self.committed = Some((bytes, seq));
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self.pending.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("Gate").field("pending", &pending).finish()
    }
}

/// A manager write prepared by [`Gate::manager_write`], committed by the store.
pub(crate) struct ManagerCommit<'a> {
    guard: std::sync::MutexGuard<'a, Vec<Pending>>,
    newly_recorded: Vec<usize>,
    /// The writes to commit, in one batch: the manager, then the cut if there is one.
    pub writes: Vec<Write>,
}

impl ManagerCommit<'_> {
    /// Records the manager's seq on the updates it knows about, once the batch is committed.
    pub(crate) fn committed(mut self, manager_seq: u64) {
        for &i in &self.newly_recorded {
            self.guard[i].recorded_at = Some(manager_seq);
        }
    }
}

impl Gate {
    /// A gate with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepares a write of the channel manager: finds the pending monitor writes it records
    /// and adds the cut record if some it does not record are already in the log. The gate
    /// stays locked until [`ManagerCommit::committed`], so no monitor write lands in between.
    pub(crate) fn manager_write(&self, manager: Write) -> ManagerCommit<'_> {
        let guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut newly_recorded = Vec::new();
        let mut cut: Option<u64> = None;
        if let Op::Put(bytes) = &manager.op {
            for (i, pending) in guard.iter().enumerate() {
                if pending.recorded_at.is_some() {
                    continue;
                }
                if pending.needle.found_in(bytes) {
                    newly_recorded.push(i);
                } else if let Some((_, first)) = pending.writes.first() {
                    let last_kept = first.saturating_sub(1);
                    cut = Some(cut.map_or(last_kept, |c: u64| c.min(last_kept)));
                }
            }
        }
        let mut writes = vec![manager];
        if let Some(cut) = cut {
            writes.push(Write::put(cut_key(), cut.to_be_bytes().to_vec()));
        }
        ManagerCommit {
            guard,
            newly_recorded,
            writes,
        }
    }

    /// Locks the order of manager writes. Whoever writes the manager holds it from serializing
    /// the manager ([`Gate::encode_manager`]) to committing it, so managers are committed in the
    /// order they were serialized. Never take it while holding `pending` or inside LDK:
    /// serializing waits for every thread that is handling a message.
    pub(crate) fn order(&self) -> MutexGuard<'_, LastManager> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's channel manager serialized now, or `None` when there is no node (yet, or any
    /// more). Call it holding [`Gate::order`].
    pub(crate) fn encode_manager(&self) -> Option<Vec<u8>> {
        self.completer.get()?.encode_manager()
    }

    /// Whether some pending monitor write is not yet recorded by a committed manager.
    pub(crate) fn has_unrecorded(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.iter().any(|p| p.recorded_at.is_none())
    }

    /// Starts the flusher: a thread that, whenever a monitor write is gated, writes a fresh
    /// manager through `store` (which records it) and completes what it records once it is
    /// durable, without waiting for the background processor's next manager write. It ends
    /// when the gate is dropped.
    pub(crate) fn start_flusher(&self, store: Weak<LogStore>) -> Result<(), Error> {
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
        if self.flusher.set(wake).is_err() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Build(format!("cannot start the gate's flusher: {e}")))?;
        std::thread::Builder::new()
            .name("till-gate".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    while woken.recv().await.is_some() {
                        // One fresh manager records every write gated so far.
                        while woken.try_recv().is_ok() {}
                        let Some(store) = store.upgrade() else { break };
                        // An error here is the log's: the background processor's own manager
                        // write meets it too and reports it to LDK, so the flusher only skips.
                        if let Ok(Some(durable)) = store.flush_manager() {
                            tokio::spawn(durable);
                        }
                    }
                });
                // Dropping the runtime drops the waits still pending: the node is gone.
            })
            .map_err(|e| Error::Build(format!("cannot start the gate's flusher: {e}")))?;
        Ok(())
    }

    /// The manager event at `manager_seq` is durable: completes every pending write it (or an
    /// earlier manager) records, telling `observer` about each of their events first, then
    /// sends the messages they released.
    pub(crate) fn manager_durable(&self, manager_seq: u64, observer: Option<&Observer>) {
        let done: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (done, keep) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| p.recorded_at.is_some_and(|at| at <= manager_seq));
            *pending = keep;
            done
        };
        let Some(completer) = self.completer.get() else {
            return;
        };
        let released = !done.is_empty();
        for write in done {
            if let Some(observer) = observer {
                for (key, seq) in &write.writes {
                    observer(&BarrierPassed {
                        key: key.clone(),
                        seq: *seq,
                        removed: false,
                    });
                }
            }
            completer.complete(write.channel_id, write.update_id);
        }
        if released {
            completer.release();
        }
    }
}

impl MonitorGate for Gate {
    fn persist(
        &self,
        channel_id: ChannelId,
        update_id: u64,
        write: MonitorWrite<'_>,
        store: &mut dyn FnMut() -> ChannelMonitorUpdateStatus,
    ) -> Result<bool, ()> {
        let needle = match write {
            MonitorWrite::NewChannel => Needle::Channel(channel_id.0),
            MonitorWrite::Update(update) => Needle::Update(update.encode()),
            MonitorWrite::Full => {
                store();
                return Ok(false);
            }
        };
        // Locked across the write, so a manager write sees this one either wholly (committed
        // and pending) or not at all (committed after it).
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        GATED.with(|gated| *gated.borrow_mut() = Some(Vec::new()));
        let status = store();
        let writes = GATED
            .with(|gated| gated.borrow_mut().take())
            .unwrap_or_default();
        if status != ChannelMonitorUpdateStatus::Completed {
            return Ok(false);
        }
        pending.push(Pending {
            channel_id,
            update_id,
            needle,
            writes,
            recorded_at: None,
        });
        drop(pending);
        if let Some(flusher) = self.flusher.get() {
            let _ = flusher.send(());
        }
        Ok(true)
    }

    fn attach(&self, completer: Arc<dyn MonitorCompleter>) {
        let _ = self.completer.set(completer);
    }
}

/// What setting the channel monitors back to the last manager did (see
/// [`Node::alignment`](crate::Node::alignment)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alignment {
    /// The seq of the log's last channel manager.
    pub manager_seq: u64,
    /// The monitors were set back to their state at this seq.
    pub monitors_at: u64,
    /// How many monitor keys were set back (put or deleted).
    pub keys_reset: usize,
}

/// Sets the channel monitors in `log` back to the state that goes with its last channel
/// manager (see the module docs), appending the changes as new events through `append`. Returns
/// `None` when they already match. Call it before building a node from the log.
pub(crate) fn align_monitors(
    log: &Log,
    append: impl FnOnce(Vec<Write>) -> Result<u64, Error>,
) -> Result<Option<Alignment>, Error> {
    let manager_key = manager_key();
    // The entry, not the history: only the last manager write's seq is needed.
    let Some(manager) = log.entry(&manager_key).map_err(read_failed)? else {
        return Ok(None);
    };
    let manager_seq = manager.seq;
    let cut = match log.event(manager_seq + 1).map_err(read_failed)? {
        Some(event) if event.key == cut_key() => match &event.op {
            Op::Put(bytes) => Some(parse_cut(bytes)?),
            Op::Delete => None,
        },
        _ => None,
    };
    let monitors_at = cut.map_or(manager_seq, |cut| cut.min(manager_seq));
    let head = log.head().map_err(read_failed)?.seq;
    let mut changed = BTreeSet::new();
    for event in log
        .events(monitors_at + 1, head, usize::MAX)
        .map_err(read_failed)?
    {
        if is_monitor_key(&event.key) {
            changed.insert(event.key);
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    if monitors_at < log.base().map_err(read_failed)?.seq {
        return Err(Error::Build(format!(
            "the channel monitors must be set back to seq {monitors_at} to match the channel \
             manager at seq {manager_seq}, but this log starts after it"
        )));
    }
    let then = log.replay(monitors_at).map_err(read_failed)?;
    let mut writes = Vec::new();
    for key in changed {
        let now = log
            .get(&key)
            .map_err(read_failed)?
            .map(|stored| stored.value);
        match (then.get(&key), now) {
            (Some(old), Some(now)) if old == now.as_slice() => {}
            (Some(old), _) => writes.push(Write::put(key, old.to_vec())),
            (None, Some(_)) => writes.push(Write::delete(key)),
            (None, None) => {}
        }
    }
    let keys_reset = writes.len();
    if keys_reset == 0 {
        return Ok(None);
    }
    append(writes)?;
    Ok(Some(Alignment {
        manager_seq,
        monitors_at,
        keys_reset,
    }))
}

fn parse_cut(bytes: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        Error::Build(format!(
            "the monitor cut record is {} bytes, not 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn read_failed(e: impl fmt::Display) -> Error {
    Error::Build(format!("cannot read the log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalOnly, LogStore};
    use ldk_node::lightning::util::persist::KVStoreSync;

    fn log(dir: &tempfile::TempDir) -> Arc<Log> {
        Arc::new(Log::open(dir.path().join("log.redb")).unwrap())
    }

    fn monitor(key: &str) -> Key {
        Key::new(CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, "", key)
    }

    fn update(channel: &str, id: u64) -> Key {
        Key::new(
            CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
            channel,
            id.to_string(),
        )
    }

    fn align(log: &Log) -> Option<Alignment> {
        align_monitors(log, |writes| {
            log.append(writes)
                .map(|o| o.head_seq)
                .map_err(|e| Error::Build(e.to_string()))
        })
        .unwrap()
    }

    fn value(log: &Log, key: &Key) -> Option<Vec<u8>> {
        log.get(key).unwrap().map(|stored| stored.value)
    }

    #[test]
    fn monitor_writes_after_the_last_manager_are_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        log.put(monitor("ch"), b"monitor at 0".to_vec()).unwrap();
        log.put(update("ch", 1), b"update 1".to_vec()).unwrap();
        log.put(manager_key(), b"manager knows 1".to_vec()).unwrap(); // seq 3
        log.put(update("ch", 2), b"update 2".to_vec()).unwrap();
        log.put(monitor("ch"), b"monitor at 2".to_vec()).unwrap();
        log.delete(update("ch", 1)).unwrap();
        log.put(Key::new("", "", "scorer"), b"kept".to_vec())
            .unwrap();

        let aligned = align(&log).expect("monitors changed after the manager");
        assert_eq!(
            aligned,
            Alignment {
                manager_seq: 3,
                monitors_at: 3,
                keys_reset: 3
            }
        );
        assert_eq!(value(&log, &monitor("ch")), Some(b"monitor at 0".to_vec()));
        assert_eq!(value(&log, &update("ch", 1)), Some(b"update 1".to_vec()));
        assert_eq!(value(&log, &update("ch", 2)), None);
        assert_eq!(
            value(&log, &Key::new("", "", "scorer")),
            Some(b"kept".to_vec())
        );
        // Aligned monitors need nothing more, and the log still verifies.
        assert_eq!(align(&log), None);
        log.verify().unwrap();
    }

    #[test]
    fn the_cut_stored_with_the_manager_sets_back_writes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        log.put(monitor("ch"), b"monitor at 0".to_vec()).unwrap(); // seq 1
        log.put(
            update("ch", 1),
            b"update 1, unknown to the manager".to_vec(),
        )
        .unwrap(); // seq 2
        log.append(vec![
            Write::put(manager_key(), b"manager".to_vec()),
            Write::put(cut_key(), 1u64.to_be_bytes().to_vec()),
        ])
        .unwrap();
        let aligned = align(&log).unwrap();
        assert_eq!((aligned.manager_seq, aligned.monitors_at), (3, 1));
        assert_eq!(value(&log, &update("ch", 1)), None);
        assert_eq!(value(&log, &monitor("ch")), Some(b"monitor at 0".to_vec()));
    }

    #[test]
    fn a_log_without_a_manager_or_later_monitor_writes_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        assert_eq!(align(&log), None);
        log.put(monitor("ch"), b"m".to_vec()).unwrap();
        assert_eq!(align(&log), None, "no manager yet: nothing to align with");
        log.put(manager_key(), b"manager".to_vec()).unwrap();
        let head = log.head().unwrap().seq;
        assert_eq!(align(&log), None);
        assert_eq!(log.head().unwrap().seq, head, "nothing appended");
    }

    #[derive(Default)]
    struct Completions(Mutex<Vec<(ChannelId, u64)>>);

    impl MonitorCompleter for Completions {
        fn complete(&self, channel_id: ChannelId, update_id: u64) {
            self.0.lock().unwrap().push((channel_id, update_id));
        }
    }

    /// A new channel's monitor, stored through the gate the way ldk-node's persister does.
    fn new_channel(gate: &Gate, store: &LogStore, id: [u8; 32], name: &str) -> bool {
        gate.persist(ChannelId(id), 0, MonitorWrite::NewChannel, &mut || {
            KVStoreSync::write(
                store,
                CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
                "",
                name,
                b"monitor".to_vec(),
            )
            .unwrap();
            ChannelMonitorUpdateStatus::Completed
        })
        .unwrap()
    }

    fn write_manager(store: &LogStore, bytes: Vec<u8>) {
        KVStoreSync::write(
            store,
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
            bytes,
        )
        .unwrap();
    }

    /// A store over `log` gated on `gate`, and what its observer hears.
    fn observed_store(
        log: &Arc<Log>,
        gate: &Arc<Gate>,
    ) -> (LogStore, Arc<Mutex<Vec<BarrierPassed>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let observed = Arc::clone(&seen);
        let store = LogStore::new(Arc::clone(log), Arc::new(LocalOnly))
            .with_gate(Arc::clone(gate))
            .with_observer(move |p| observed.lock().unwrap().push(p.clone()));
        (store, seen)
    }

    #[test]
    fn a_gated_write_completes_only_with_a_durable_manager_that_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let gate = Arc::new(Gate::new());
        let completions = Arc::new(Completions::default());
        gate.attach(completions.clone());
        let (store, seen) = observed_store(&log, &gate);

        assert!(new_channel(&gate, &store, [7; 32], "seven"), "in progress");
        assert!(completions.0.lock().unwrap().is_empty());

        // A manager serialized before the channel existed does not record it: no completion,
        // and the cut says the monitors that go with it end before the channel's write.
        write_manager(&store, b"an older manager".to_vec());
        assert!(completions.0.lock().unwrap().is_empty());
        let cut = value(&log, &cut_key()).expect("a cut record");
        assert_eq!(u64::from_be_bytes(cut.try_into().unwrap()), 0);

        // A manager that holds the channel records it; once durable, the write completes and
        // the observer hears of the monitor's event before LDK does.
        let mut recording = b"manager with ".to_vec();
        recording.extend_from_slice(&[7; 32]);
        write_manager(&store, recording);
        assert_eq!(
            *completions.0.lock().unwrap(),
            vec![(ChannelId([7; 32]), 0)]
        );
        let observed = seen.lock().unwrap();
        assert!(
            observed
                .iter()
                .any(|p| p.key == monitor("seven") && p.seq == 1)
        );
        // Recorded by this manager: no new cut beside it.
        let manager_seq = log.history(&manager_key()).unwrap().last().unwrap().seq;
        assert_ne!(
            log.event(manager_seq + 1).unwrap().map(|e| e.key),
            Some(cut_key())
        );
    }

    /// A completer whose "channel manager" is whatever bytes the test puts in it.
    #[derive(Default)]
    struct Serializing {
        manager: Mutex<Vec<u8>>,
        completions: Completions,
        released: std::sync::atomic::AtomicUsize,
    }

    impl MonitorCompleter for Serializing {
        fn complete(&self, channel_id: ChannelId, update_id: u64) {
            self.completions.complete(channel_id, update_id);
        }

        fn encode_manager(&self) -> Option<Vec<u8>> {
            Some(self.manager.lock().unwrap().clone())
        }

        fn release(&self) {
            self.released
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_flusher_writes_a_manager_recording_a_gated_write_without_waiting_for_ldk() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let gate = Arc::new(Gate::new());
        let completer = Arc::new(Serializing::default());
        gate.attach(completer.clone());
        let (store, seen) = observed_store(&log, &gate);
        let store = Arc::new(store);
        gate.start_flusher(Arc::downgrade(&store)).unwrap();

        // The node's manager already holds the channel when its first monitor is persisted.
        let mut manager_bytes = b"manager with ".to_vec();
        manager_bytes.extend_from_slice(&[9; 32]);
        *completer.manager.lock().unwrap() = manager_bytes.clone();
        assert!(new_channel(&gate, &store, [9; 32], "nine"), "in progress");

        // No manager write from LDK: the flusher writes one, and its durability completes the
        // monitor write and releases the messages it held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while completer.completions.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher never completed the gated write"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            *completer.completions.0.lock().unwrap(),
            vec![(ChannelId([9; 32]), 0)]
        );
        assert_eq!(value(&log, &manager_key()), Some(manager_bytes.clone()));
        // The observer heard of the flusher's manager, then of the monitor write it completed.
        let manager_seq = log.history(&manager_key()).unwrap().last().unwrap().seq;
        let observed: Vec<(Key, u64)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.key.clone(), p.seq))
            .collect();
        assert_eq!(
            observed,
            vec![(manager_key(), manager_seq), (monitor("nine"), 1)]
        );
        assert!(completer.released.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(!gate.has_unrecorded());
    }

    #[test]
    fn every_manager_write_is_serialized_afresh_and_an_unchanged_one_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let gate = Arc::new(Gate::new());
        let completer = Arc::new(Serializing::default());
        gate.attach(completer.clone());
        let store =
            LogStore::new(Arc::clone(&log), Arc::new(LocalOnly)).with_gate(Arc::clone(&gate));

        // LDK hands over a manager it serialized earlier; the store writes the manager as it
        // is now, so an older serialization never lands after a newer one.
        *completer.manager.lock().unwrap() = b"the manager now".to_vec();
        write_manager(&store, b"serialized before the flusher's".to_vec());
        assert_eq!(
            value(&log, &manager_key()),
            Some(b"the manager now".to_vec())
        );
        let head = log.head().unwrap().seq;

        // Unchanged, with nothing new to record: nothing appended.
        write_manager(&store, b"serialized before the flusher's".to_vec());
        assert_eq!(log.head().unwrap().seq, head);

        // Changed: written.
        *completer.manager.lock().unwrap() = b"the manager later".to_vec();
        write_manager(&store, b"whatever LDK had".to_vec());
        assert_eq!(log.head().unwrap().seq, head + 1);
        assert_eq!(
            value(&log, &manager_key()),
            Some(b"the manager later".to_vec())
        );
    }

    #[test]
    fn whole_monitor_writes_are_not_gated() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let gate = Gate::new();
        let store = LogStore::new(Arc::clone(&log), Arc::new(LocalOnly));
        let answer = gate
            .persist(ChannelId([1; 32]), 5, MonitorWrite::Full, &mut || {
                KVStoreSync::write(
                    &store,
                    CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
                    "",
                    "one",
                    b"whole".to_vec(),
                )
                .unwrap();
                ChannelMonitorUpdateStatus::Completed
            })
            .unwrap();
        assert!(!answer);
        assert!(gate.pending.lock().unwrap().is_empty());
    }
}
