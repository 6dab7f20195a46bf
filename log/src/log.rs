//! The log itself: a redb file with the events (each linked to its key's
//! previous event, which is the per-key history), the materialized state and
//! the outbox watermark, written together in one transaction per group commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

use crate::clock::{Clock, SystemClock};
use crate::error::{
    AppendError, ApplyError, OpenError, OutboxError, ReadError, StorageError, VerifyError,
};
use crate::event::{DeviceId, Event, Hash, Key, Op, Write, next_version};
use crate::state::{Entry, State, check_follows};

/// How many events [`Log::replay_with_progress`] folds between two progress calls.
pub const REPLAY_PROGRESS_STEP: u64 = 4096;

/// Format version of the log file, stored under `meta["format"]`.
pub const LOG_FORMAT_VERSION: u8 = 2;

type KeyTuple<'a> = (&'a str, &'a str, &'a str);

const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const STATE: TableDefinition<'_, KeyTuple<'_>, &[u8]> = TableDefinition::new("state");
const BASE: TableDefinition<'_, KeyTuple<'_>, &[u8]> = TableDefinition::new("base");
/// Format 1's per-key index; format 2 links each event to its key's previous
/// one instead, and an upgraded file no longer has this table.
const HISTORY_V1: TableDefinition<'_, (&str, &str, &str, u64), u64> =
    TableDefinition::new("history");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const LOCAL: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("local");

const META_FORMAT: &str = "format";
const META_BASE: &str = "base";
const META_SHIPPED: &str = "shipped";

/// How hard a commit works to survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk (fsync) before `append` returns. The default.
    #[default]
    Durable,
    /// Commits are visible at once but reach disk only with a later durable
    /// commit; a crash may lose them (never half of one). For replicas that can
    /// be pulled again, and for tests.
    Volatile,
}

/// Who appends: stamped into every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    /// This install's device id.
    pub device: DeviceId,
    /// The lease epoch this device holds.
    pub epoch: u64,
}

/// How to open a log.
#[derive(Clone)]
pub struct LogOptions {
    /// Commit durability (durable by default).
    pub durability: Durability,
    /// Who appends (device and epoch), changeable later with [`Log::set_writer`].
    pub writer: Writer,
    /// Clock for event times.
    pub clock: Arc<dyn Clock>,
    /// A read-only replica refuses local appends but accepts [`Log::apply`].
    pub read_only: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            writer: Writer::default(),
            clock: Arc::new(SystemClock),
            read_only: false,
        }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("durability", &self.durability)
            .field("writer", &self.writer)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// The last event of the log: its seq, hash and time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Seq of the last event (0 for an empty log).
    pub seq: u64,
    /// Hash of the last event ([`Hash::GENESIS`] for an empty log).
    pub hash: Hash,
    /// Time of the last event (0 for an empty log).
    pub at_ms: u64,
}

impl Head {
    fn encode(&self) -> [u8; 48] {
        let mut out = [0; 48];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..40].copy_from_slice(&self.hash.0);
        out[40..].copy_from_slice(&self.at_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 48 {
            return Err(format!("head record is {} bytes, expected 48", bytes.len()));
        }
        Ok(Self {
            seq: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            hash: Hash(bytes[8..40].try_into().unwrap()),
            at_ms: u64::from_le_bytes(bytes[40..].try_into().unwrap()),
        })
    }
}

/// One event an append produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its seq.
    pub seq: u64,
    /// The key's version it set.
    pub version: u64,
}

/// What one `append` call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// One entry per write, in order: the event it became, or `None` when it
    /// changed nothing (deleting an absent key).
    pub results: Vec<Option<Appended>>,
    /// The log's last seq once this batch was in; waiting for it to be durable
    /// covers every write of the batch, no-op deletes included.
    pub head_seq: u64,
}

/// A live value with its version and the seq that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// The key's version.
    pub version: u64,
    /// The seq that wrote it.
    pub seq: u64,
}

/// What a successful [`Log::verify`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// The log's first seq (1, or the seq after a snapshot base).
    pub first_seq: u64,
    /// The verified head.
    pub head: Head,
    /// Keys of the materialized state compared against the fold.
    pub keys: u64,
}

/// The append-only, versioned, hash-chained event log.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Appends from
/// many threads share commits (group commit, L5).
pub struct Log {
    db: Database,
    options: LogOptions,
    writer: Mutex<Writer>,
    group: Group,
    /// Every event up to this seq is on disk (see [`Log::append_unsynced`]).
    synced: AtomicU64,
    /// The file, when the log is one (not a storage backend's).
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The group-commit queue: the first appender to find no commit running
/// becomes the leader, takes every queued batch and commits them in one
/// transaction; the others wait for their results.
///
/// A leader whose last commit carried several appenders' batches waits up to
/// [`GATHER`] for as many to queue before it commits a durable group: those
/// appenders are on their way back from the last commit (waking, returning,
/// appending again), and without the wait the first of them back would commit
/// alone and the rest would wait out a whole commit (an fsync) behind it. A
/// lone appender never waits, and neither does a group of unsynced appends
/// only ([`Log::append_unsynced`]): there is no fsync to share, and the wait
/// would sit in the latency of every channel-state write.
#[derive(Default)]
struct Group {
    queue: Mutex<Queue>,
    done: Condvar,
    arrived: Condvar,
}

/// How the group commit has gone since the log was opened (see [`Log::commit_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed by appends.
    pub commits: u64,
    /// Appended batches (calls to [`Log::append`]) those commits carried.
    pub batches: u64,
    /// Commits whose leader waited (up to 0.5 ms) for appenders to queue; only durable
    /// commits wait.
    pub gathers: u64,
}

/// The longest a leader waits for the appenders of its last commit to queue again.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: Vec<(u64, Vec<Write>)>,
    /// A batch waiting in `waiting` must be on disk when its append returns.
    waiting_durable: bool,
    leading: bool,
    /// A leader is waiting for appenders to queue (see [`Group`]).
    gathering: bool,
    /// How many batches the last commit carried.
    last_group: usize,
    stats: CommitStats,
    results: HashMap<u64, Result<AppendOutcome, AppendError>>,
}

/// Resets the leader flag if the leader unwinds, so waiters are not stuck.
struct LeaderGuard<'a> {
    group: &'a Group,
    ids: Vec<u64>,
    finished: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut q = self.group.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.leading = false;
            for id in &self.ids {
                q.results.insert(*id, Err(AppendError::Interrupted));
            }
            self.group.done.notify_all();
        }
    }
}

/// Creates an empty redb database at `path` unless a file is there already, so
/// that it exists whole or not at all: redb writes a new file's header in
/// steps, and a crash between them leaves a file it refuses to open ("not a
/// redb database"). So the file is built under a temporary name beside `path`
/// (redb syncs it), renamed into place, and the rename synced. A temporary file
/// left by an earlier crash is removed first; it never held data.
///
/// [`Log::open`] creates its file this way; the server's redb store does too.
pub fn create_redb_file(path: &Path) -> Result<(), StorageError> {
    if path.exists() {
        return Ok(());
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    let temp = path.with_file_name(name);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    drop(Database::create(&temp)?);
    std::fs::rename(&temp, path)?;
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn corrupt_open(e: impl std::fmt::Display) -> OpenError {
    OpenError::Corrupt(e.to_string())
}

impl Log {
    /// Opens the log at `path`, creating it if it does not exist, with default
    /// options (durable commits, system clock).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, LogOptions::default())
    }

    /// Opens the log at `path` with `options`, creating it if needed. Refuses a
    /// file of an unknown format version.
    ///
    /// A new file is created with [`create_redb_file`], so a crash while
    /// creating it leaves either no file or an empty database, never a
    /// half-written file that will not open.
    pub fn open_with(path: impl AsRef<Path>, options: LogOptions) -> Result<Self, OpenError> {
        let path = path.as_ref();
        create_redb_file(path)?;
        let db = Database::create(path).map_err(StorageError::from)?;
        let mut log = Self::on_database(db, options)?;
        log.path = Some(path.to_path_buf());
        Ok(log)
    }

    /// The log's file, unless it was opened on a storage backend ([`Log::open_on`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Opens the log on `backend`, storage of redb's choosing, instead of a file. What the
    /// backend's `sync_data` returns from is what a durable commit relies on. For tests that cut
    /// the power under a log (a backend that drops what was written after its last sync) and
    /// for embedding the log elsewhere.
    pub fn open_on(backend: impl StorageBackend, options: LogOptions) -> Result<Self, OpenError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(StorageError::from)?;
        Self::on_database(db, options)
    }

    fn on_database(db: Database, options: LogOptions) -> Result<Self, OpenError> {
        let txn = db.begin_write().map_err(StorageError::from)?;
        {
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            let format = meta
                .get(META_FORMAT)
                .map_err(StorageError::from)?
                .map(|v| v.value().to_vec());
            match format.as_deref() {
                None => {
                    meta.insert(META_FORMAT, [LOG_FORMAT_VERSION].as_slice())
                        .map_err(StorageError::from)?;
                    meta.insert(META_SHIPPED, 0u64.to_le_bytes().as_slice())
                        .map_err(StorageError::from)?;
                }
                Some([LOG_FORMAT_VERSION]) => {}
                Some([1]) => {
                    drop(meta);
                    upgrade_from_v1(&txn).map_err(corrupt_open)?;
                    txn.open_table(META)
                        .map_err(StorageError::from)?
                        .insert(META_FORMAT, [LOG_FORMAT_VERSION].as_slice())
                        .map_err(StorageError::from)?;
                }
                Some([found]) => {
                    return Err(OpenError::UnknownFormat {
                        found: *found,
                        supported: LOG_FORMAT_VERSION,
                    });
                }
                Some(other) => {
                    return Err(corrupt_open(format!(
                        "format marker is {} bytes, expected 1",
                        other.len()
                    )));
                }
            }
            txn.open_table(STATE).map_err(StorageError::from)?;
            txn.open_table(BASE).map_err(StorageError::from)?;
            txn.open_table(LOCAL).map_err(StorageError::from)?;
        }
        // What an opened file holds is on disk: the head is the synced seq.
        let synced = {
            let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
            let meta = txn.open_table(META).map_err(StorageError::from)?;
            head_of(&events, &meta).map_err(corrupt_open)?.seq
        };
        txn.commit().map_err(StorageError::from)?;
        Ok(Self {
            db,
            writer: Mutex::new(options.writer),
            options,
            group: Group::default(),
            synced: AtomicU64::new(synced),
            path: None,
        })
    }

    /// Sets the device and epoch stamped into events appended from now on.
    pub fn set_writer(&self, writer: Writer) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = writer;
    }

    /// The device and epoch stamped into new events.
    pub fn writer(&self) -> Writer {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch of writes atomically: either every event of the batch is
    /// committed or none is. Returns once the commit is done (durable unless the
    /// log is [`Durability::Volatile`]). Concurrent callers share commits.
    pub fn append(&self, writes: Vec<Write>) -> Result<AppendOutcome, AppendError> {
        self.append_as(writes, true)
    }

    /// Like [`Log::append`], but returns before the commit is on disk: it is
    /// visible at once and reaches disk with the next durable commit (any
    /// [`Log::append`], or [`Log::sync`]). A crash before that loses it, and
    /// every batch appended after it, never half of a batch and never a batch
    /// before a synced one: the log on disk is always a prefix of the log.
    ///
    /// For a caller that will not act on the batch before [`Log::synced_seq`]
    /// covers it (Till's replicator syncs the log while it uploads, so a write
    /// that waits for the server waits for the disk in the same time).
    pub fn append_unsynced(&self, writes: Vec<Write>) -> Result<AppendOutcome, AppendError> {
        self.append_as(writes, false)
    }

    /// Makes every committed event durable on disk, sharing a commit with
    /// concurrent appends; at once if [`Log::synced_seq`] is already at the
    /// head. Returns the synced seq. A [`Durability::Volatile`] log never syncs:
    /// its commits reach disk only as that option says.
    pub fn sync(&self) -> Result<u64, AppendError> {
        if self.options.durability == Durability::Volatile {
            return Ok(self.synced_seq());
        }
        let head = self
            .head()
            .map_err(|e| AppendError::Corrupt(e.to_string()))?
            .seq;
        if self.synced_seq() >= head {
            return Ok(self.synced_seq());
        }
        self.append_as(Vec::new(), true)?;
        Ok(self.synced_seq())
    }

    /// Every event up to this seq is on disk: committed by a durable commit, or
    /// by an unsynced one that a durable commit followed.
    pub fn synced_seq(&self) -> u64 {
        self.synced.load(AtomicOrdering::SeqCst)
    }

    fn append_as(&self, writes: Vec<Write>, durable: bool) -> Result<AppendOutcome, AppendError> {
        if self.options.read_only {
            return Err(AppendError::ReadOnly);
        }
        for w in &writes {
            w.key.check().map_err(AppendError::InvalidKey)?;
        }
        let group = &self.group;
        let mut q = group.queue.lock().unwrap_or_else(|p| p.into_inner());
        let id = q.next_id;
        q.next_id += 1;
        q.waiting.push((id, writes));
        q.waiting_durable |= durable;
        if q.gathering {
            group.arrived.notify_one();
        }
        loop {
            if let Some(result) = q.results.remove(&id) {
                return result;
            }
            if !q.leading {
                q.leading = true;
                // Only a durable commit waits: an unsynced one has no fsync to share, and its
                // appenders (channel state on its way to the server) are waited for.
                if q.waiting_durable && q.waiting.len() < q.last_group {
                    let deadline = std::time::Instant::now() + GATHER;
                    q.gathering = true;
                    q.stats.gathers += 1;
                    while q.waiting.len() < q.last_group {
                        let now = std::time::Instant::now();
                        if now >= deadline {
                            break;
                        }
                        q = group
                            .arrived
                            .wait_timeout(q, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    q.gathering = false;
                }
                let batches = std::mem::take(&mut q.waiting);
                let durable = std::mem::take(&mut q.waiting_durable);
                q.last_group = batches.len();
                drop(q);
                let mut guard = LeaderGuard {
                    group,
                    ids: batches.iter().map(|(id, _)| *id).collect(),
                    finished: false,
                };
                let results = self.commit_group(&batches, durable);
                q = group.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.leading = false;
                match results {
                    Ok(outcomes) => {
                        q.stats.commits += 1;
                        q.stats.batches += batches.len() as u64;
                        for ((id, _), outcome) in batches.iter().zip(outcomes) {
                            q.results.insert(*id, Ok(outcome));
                        }
                    }
                    Err(e) => {
                        for (id, _) in &batches {
                            q.results.insert(*id, Err(e.clone()));
                        }
                    }
                }
                guard.finished = true;
                group.done.notify_all();
                continue;
            }
            q = group.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// How many commits the appends since opening took, and how many batches
    /// they carried: batches per commit is what group commit (L5) saves.
    pub fn commit_stats(&self) -> CommitStats {
        self.group
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
    }

    /// Sets `key` to `value`; a one-write [`Log::append`].
    pub fn put(&self, key: Key, value: impl Into<Vec<u8>>) -> Result<Appended, AppendError> {
        let outcome = self.append(vec![Write::put(key, value)])?;
        Ok(outcome.results[0].expect("a put always appends"))
    }

    /// Deletes `key`; `None` when it was absent (no event is written).
    pub fn delete(&self, key: Key) -> Result<Option<Appended>, AppendError> {
        let outcome = self.append(vec![Write::delete(key)])?;
        Ok(outcome.results[0])
    }

    /// Commits queued batches in one write transaction.
    fn commit_group(
        &self,
        batches: &[(u64, Vec<Write>)],
        durable: bool,
    ) -> Result<Vec<AppendOutcome>, AppendError> {
        let writer = self.writer();
        let mut txn = self.db.begin_write().map_err(StorageError::from)?;
        let syncs = durable && self.options.durability == Durability::Durable;
        txn.set_durability(if syncs {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })
        .map_err(|e| AppendError::Corrupt(e.to_string()))?;
        let mut outcomes = Vec::with_capacity(batches.len());
        let committed_head;
        {
            let mut events = txn.open_table(EVENTS).map_err(StorageError::from)?;
            let mut state = txn.open_table(STATE).map_err(StorageError::from)?;
            // The meta table is opened only for an empty log (its base): an
            // untouched table costs nothing in the commit.
            let mut head = match last_event_head(&events).map_err(AppendError::Corrupt)? {
                Some(head) => head,
                None => {
                    let meta = txn.open_table(META).map_err(StorageError::from)?;
                    read_base(&meta).map_err(AppendError::Corrupt)?
                }
            };
            let at_ms = self.options.clock.now_ms().max(head.at_ms);
            for (_, writes) in batches {
                let mut results = Vec::with_capacity(writes.len());
                for w in writes {
                    let k = &w.key;
                    let tuple = key_tuple(k);
                    let current = match state.get(tuple).map_err(StorageError::from)? {
                        Some(v) => Some(Entry::decode(v.value()).map_err(AppendError::Corrupt)?),
                        None => None,
                    };
                    let Some(version) =
                        next_version(current.as_ref().map(|e| (e.version, e.is_live())), &w.op)
                    else {
                        results.push(None);
                        continue;
                    };
                    let event = Event {
                        seq: head.seq + 1,
                        key: k.clone(),
                        version,
                        op: w.op.clone(),
                        at_ms,
                        device: writer.device,
                        epoch: writer.epoch,
                        prev_hash: head.hash,
                    };
                    head = Head {
                        seq: event.seq,
                        hash: store_event(&mut events, &mut state, current.map(|e| e.seq), &event)?,
                        at_ms,
                    };
                    results.push(Some(Appended {
                        seq: event.seq,
                        version,
                    }));
                }
                outcomes.push(AppendOutcome {
                    results,
                    head_seq: head.seq,
                });
            }
            committed_head = head.seq;
        }
        txn.commit().map_err(StorageError::from)?;
        if syncs {
            self.synced
                .fetch_max(committed_head, AtomicOrdering::SeqCst);
        }
        Ok(outcomes)
    }

    /// Applies events that come from elsewhere (a restore, a follower's pull),
    /// keeping their seqs, devices, epochs and times. They must continue this
    /// log exactly (next seq, hash chain, versions, time order), and this log
    /// must have nothing unshipped; otherwise nothing is applied. The applied
    /// events count as shipped (they came from the remote).
    pub fn apply(&self, incoming: &[Event]) -> Result<Head, ApplyError> {
        let txn = self.db.begin_write().map_err(StorageError::from)?;
        let head;
        {
            let mut events = txn.open_table(EVENTS).map_err(StorageError::from)?;
            let mut state = txn.open_table(STATE).map_err(StorageError::from)?;
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            let mut h = head_of(&events, &meta).map_err(ApplyError::Corrupt)?;
            let shipped = read_shipped(&meta).map_err(ApplyError::Corrupt)?;
            if shipped < h.seq {
                return Err(ApplyError::UnshippedLocal {
                    shipped,
                    pending: h.seq - shipped,
                });
            }
            for event in incoming {
                let k = &event.key;
                let tuple = key_tuple(k);
                let current = match state.get(tuple).map_err(StorageError::from)? {
                    Some(v) => Some(Entry::decode(v.value()).map_err(ApplyError::Corrupt)?),
                    None => None,
                };
                check_follows(
                    h.seq,
                    h.hash,
                    h.at_ms,
                    current.as_ref().map(|e| (e.version, e.is_live())),
                    event,
                )?;
                h = Head {
                    seq: event.seq,
                    hash: store_event(&mut events, &mut state, current.map(|e| e.seq), event)?,
                    at_ms: event.at_ms,
                };
            }
            meta.insert(META_SHIPPED, h.seq.to_le_bytes().as_slice())
                .map_err(StorageError::from)?;
            head = h;
        }
        txn.commit().map_err(StorageError::from)?;
        self.synced.fetch_max(head.seq, AtomicOrdering::SeqCst);
        Ok(head)
    }

    /// Starts an empty log from a snapshot: the state as of `snapshot.seq()`,
    /// whose events this log will not hold. Later events are applied on top with
    /// [`Log::apply`]. Refused unless the log is empty.
    pub fn install_snapshot(&self, snapshot: &State) -> Result<Head, ApplyError> {
        // Versions grow by at most one per event, so none exceeds the seq either.
        let largest = snapshot
            .entries()
            .map(|(_, e)| e.version.max(e.seq))
            .fold(snapshot.seq(), u64::max);
        if largest > crate::MAX_SEQ {
            return Err(ApplyError::SeqOutOfRange { seq: largest });
        }
        let txn = self.db.begin_write().map_err(StorageError::from)?;
        let head = Head {
            seq: snapshot.seq(),
            hash: snapshot.hash(),
            at_ms: snapshot.at_ms(),
        };
        {
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
            let current = head_of(&events, &meta).map_err(ApplyError::Corrupt)?;
            if current.seq != 0 {
                return Err(ApplyError::DoesNotContinue(crate::FoldError::Seq {
                    expected: current.seq + 1,
                    found: snapshot.seq() + 1,
                }));
            }
            let mut state = txn.open_table(STATE).map_err(StorageError::from)?;
            let mut base = txn.open_table(BASE).map_err(StorageError::from)?;
            for (k, entry) in snapshot.entries() {
                let tuple = key_tuple(k);
                let bytes = entry.encode();
                state
                    .insert(tuple, bytes.as_slice())
                    .map_err(StorageError::from)?;
                base.insert(tuple, bytes.as_slice())
                    .map_err(StorageError::from)?;
            }
            meta.insert(META_BASE, head.encode().as_slice())
                .map_err(StorageError::from)?;
            meta.insert(META_SHIPPED, head.seq.to_le_bytes().as_slice())
                .map_err(StorageError::from)?;
        }
        txn.commit().map_err(StorageError::from)?;
        Ok(head)
    }

    /// Reads a device-local record: bookkeeping that is not part of the state,
    /// never becomes an event and is never shipped (the device id, how far a
    /// replica has pulled).
    pub fn local_get(&self, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let local = txn.open_table(LOCAL).map_err(StorageError::from)?;
        Ok(local
            .get(name)
            .map_err(StorageError::from)?
            .map(|v| v.value().to_vec()))
    }

    /// Writes a device-local record (see [`Log::local_get`]), durably.
    pub fn local_put(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        let txn = self.db.begin_write()?;
        {
            let mut local = txn.open_table(LOCAL)?;
            local.insert(name, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The last event's seq, hash and time.
    pub fn head(&self) -> Result<Head, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        head_of(&events, &meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })
    }

    /// The point the log starts from: seq 0 for a log holding every event, or
    /// the snapshot it was started from.
    pub fn base(&self) -> Result<Head, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        read_base(&meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })
    }

    /// The live value of `key`.
    pub fn get(&self, key: &Key) -> Result<Option<Stored>, ReadError> {
        Ok(self.entry(key)?.and_then(|e| {
            e.value.map(|value| Stored {
                value,
                version: e.version,
                seq: e.seq,
            })
        }))
    }

    /// The entry of `key`, live or deleted (a tombstone keeps its version).
    pub fn entry(&self, key: &Key) -> Result<Option<Entry>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let state = txn.open_table(STATE).map_err(StorageError::from)?;
        let tuple = key_tuple(key);
        match state.get(tuple).map_err(StorageError::from)? {
            Some(v) => Ok(Some(
                Entry::decode(v.value()).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?,
            )),
            None => Ok(None),
        }
    }

    /// The live keys of one `(namespace, sub_namespace)`, in key order, with
    /// their versions.
    pub fn list(
        &self,
        namespace: &str,
        sub_namespace: &str,
    ) -> Result<Vec<(String, u64)>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let state = txn.open_table(STATE).map_err(StorageError::from)?;
        let mut out = Vec::new();
        for item in state
            .range((namespace, sub_namespace, "")..)
            .map_err(StorageError::from)?
        {
            let (k, v) = item.map_err(StorageError::from)?;
            let (ns, sub, key) = k.value();
            if ns != namespace || sub != sub_namespace {
                break;
            }
            let entry =
                Entry::decode(v.value()).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
            if entry.is_live() {
                out.push((key.to_string(), entry.version));
            }
        }
        Ok(out)
    }

    /// Every event of `key` this log holds, oldest first: the key's last event
    /// (from its state entry), then each event's link to the one before, down
    /// to the log's base.
    pub fn history(&self, key: &Key) -> Result<Vec<Event>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let state = txn.open_table(STATE).map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let base = read_base(&meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        let mut next = match state.get(key_tuple(key)).map_err(StorageError::from)? {
            Some(v) => {
                Entry::decode(v.value())
                    .map_err(|reason| ReadError::Corrupt { seq: 0, reason })?
                    .seq
            }
            None => 0,
        };
        let mut out = Vec::new();
        while next > base.seq {
            let seq = next;
            let stored = events
                .get(seq)
                .map_err(StorageError::from)?
                .ok_or_else(|| ReadError::Corrupt {
                    seq,
                    reason: format!("named as an event of {key} but missing"),
                })?;
            let (record, previous) = split_stored(stored.value())
                .map_err(|reason| ReadError::Corrupt { seq, reason })?;
            let event = decode_at(seq, record)?;
            if event.key != *key || previous >= seq {
                return Err(ReadError::Corrupt {
                    seq,
                    reason: format!("named as an event of {key} but it is not linked as one"),
                });
            }
            out.push(event);
            next = previous;
        }
        out.reverse();
        Ok(out)
    }

    /// The event at `seq`, if the log holds it.
    pub fn event(&self, seq: u64) -> Result<Option<Event>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        match events.get(seq).map_err(StorageError::from)? {
            Some(r) => Ok(Some(decode_stored(seq, r.value())?)),
            None => Ok(None),
        }
    }

    /// The events with `from <= seq <= to` (at most `limit` of them), in order.
    pub fn events(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Event>, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for item in events.range(from..=to).map_err(StorageError::from)? {
            if out.len() >= limit {
                break;
            }
            let (seq, stored) = item.map_err(StorageError::from)?;
            let seq = seq.value();
            out.push(decode_stored(seq, stored.value())?);
        }
        Ok(out)
    }

    /// The last seq marked shipped (the outbox holds every event after it).
    pub fn shipped(&self) -> Result<u64, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        read_shipped(&meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })
    }

    /// The outbox: events appended but not yet marked shipped, oldest first, at
    /// most `limit` of them.
    pub fn pending(&self, limit: usize) -> Result<Vec<Event>, ReadError> {
        let shipped = self.shipped()?;
        self.events(shipped + 1, u64::MAX, limit)
    }

    /// Marks every event up to `seq` as shipped (only after the remote answered).
    /// Marking an already-shipped prefix again changes nothing.
    pub fn mark_shipped(&self, seq: u64) -> Result<(), OutboxError> {
        self.write_shipped(seq, &[], redb::Durability::Immediate)
    }

    /// Like [`Log::mark_shipped`], and writes device-local records (see [`Log::local_get`]) in
    /// the same commit, which is not synced to disk: the next append or closing the log makes it
    /// durable, and a crash before that rolls it back, leaving the watermark behind. Only for a
    /// caller that rebuilds a lagging watermark, as the replicator does from the server's head
    /// when it resumes its lease; it saves the shipper a sync after every upload.
    pub fn mark_shipped_unsynced(
        &self,
        seq: u64,
        local: &[(&str, &[u8])],
    ) -> Result<(), OutboxError> {
        self.write_shipped(seq, local, redb::Durability::None)
    }

    fn write_shipped(
        &self,
        seq: u64,
        local: &[(&str, &[u8])],
        durability: redb::Durability,
    ) -> Result<(), OutboxError> {
        let mut txn = self.db.begin_write().map_err(StorageError::from)?;
        txn.set_durability(durability)
            .map_err(|e| OutboxError::Corrupt(e.to_string()))?;
        {
            let mut records = txn.open_table(LOCAL).map_err(StorageError::from)?;
            for (name, value) in local {
                records.insert(*name, *value).map_err(StorageError::from)?;
            }
        }
        {
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
            let head = head_of(&events, &meta).map_err(OutboxError::Corrupt)?;
            if seq > head.seq {
                return Err(OutboxError::BeyondHead {
                    requested: seq,
                    head: head.seq,
                });
            }
            let shipped = read_shipped(&meta).map_err(OutboxError::Corrupt)?;
            if seq > shipped {
                meta.insert(META_SHIPPED, seq.to_le_bytes().as_slice())
                    .map_err(StorageError::from)?;
            }
        }
        txn.commit().map_err(StorageError::from)?;
        Ok(())
    }

    /// The materialized state at the head, read from the state table.
    pub fn state(&self) -> Result<State, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let head =
            head_of(&events, &meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        let state = txn.open_table(STATE).map_err(StorageError::from)?;
        let entries = read_entries(&state)?;
        Ok(State::from_parts(entries, head.seq, head.hash, head.at_ms))
    }

    /// The state as it was right after event `to_seq`, rebuilt by folding the
    /// events (L1). `to_seq` 0 is the empty log; past the head is refused, and
    /// so is a point before the snapshot this log was started from.
    pub fn replay(&self, to_seq: u64) -> Result<State, ReadError> {
        self.replay_with_progress(to_seq, &mut |_, _| {})
    }

    /// [`Log::replay`], calling `progress(done, total)` with the events folded so far and the
    /// number to fold, every [`REPLAY_PROGRESS_STEP`] events and at the end.
    pub fn replay_with_progress(
        &self,
        to_seq: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<State, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let head =
            head_of(&events, &meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        if to_seq > head.seq {
            return Err(ReadError::BeyondHead {
                requested: to_seq,
                head: head.seq,
            });
        }
        let base = read_base(&meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        if to_seq < base.seq {
            return Err(ReadError::Corrupt {
                seq: to_seq,
                reason: format!(
                    "this log was restored from a snapshot at seq {}; earlier points are only on the remote",
                    base.seq
                ),
            });
        }
        let mut state = if base.seq == 0 {
            State::new()
        } else {
            let table = txn.open_table(BASE).map_err(StorageError::from)?;
            State::from_parts(read_entries(&table)?, base.seq, base.hash, base.at_ms)
        };
        let total = to_seq - base.seq;
        let mut done = 0;
        for item in events
            .range(base.seq + 1..=to_seq)
            .map_err(StorageError::from)?
        {
            let (seq, stored) = item.map_err(StorageError::from)?;
            let record = record_at(seq.value(), stored.value())?;
            let event = decode_at(seq.value(), record)?;
            state.check(&event)?;
            state.apply_unchecked(&event, Hash::of_record(record));
            done += 1;
            if done % REPLAY_PROGRESS_STEP == 0 {
                progress(done, total);
            }
        }
        progress(done, total);
        Ok(state)
    }

    /// The last seq whose event time is at or before `at_ms` (0 if none).
    /// Event times never go back along the log, so this is a binary search.
    pub fn seq_at(&self, at_ms: u64) -> Result<u64, ReadError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let head =
            head_of(&events, &meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        let base = read_base(&meta).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        // Invariant: every seq <= lo is at or before `at_ms`, every seq > hi after it.
        let (mut lo, mut hi) = (base.seq, head.seq);
        if base.seq > 0 && base.at_ms > at_ms {
            return Ok(0);
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let stored = events
                .get(mid)
                .map_err(StorageError::from)?
                .ok_or_else(|| ReadError::Corrupt {
                    seq: mid,
                    reason: "missing".into(),
                })?;
            if decode_stored(mid, stored.value())?.at_ms <= at_ms {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// The state as it was at time `at_ms`: after the last event at or before it.
    pub fn replay_at(&self, at_ms: u64) -> Result<State, ReadError> {
        self.replay(self.seq_at(at_ms)?)
    }

    /// Recomputes the whole chain (L3) from the base and checks seqs, versions
    /// (L2), time order and the materialized state (L1) against the events.
    /// Names the first bad seq.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let meta = txn.open_table(META).map_err(StorageError::from)?;
        let corrupt_meta = |reason: String| VerifyError::Corrupt { seq: 0, reason };
        let base = read_base(&meta).map_err(corrupt_meta)?;
        let mut state = if base.seq == 0 {
            State::new()
        } else {
            let table = txn.open_table(BASE).map_err(StorageError::from)?;
            let entries = read_entries(&table).map_err(|e| VerifyError::Corrupt {
                seq: 0,
                reason: e.to_string(),
            })?;
            State::from_parts(entries, base.seq, base.hash, base.at_ms)
        };
        let events = txn.open_table(EVENTS).map_err(StorageError::from)?;
        let mut count = 0;
        for item in events.range(0..).map_err(StorageError::from)? {
            let (seq, stored) = item.map_err(StorageError::from)?;
            let seq = seq.value();
            let expected = state.seq() + 1;
            if seq != expected {
                return Err(VerifyError::Gap {
                    expected,
                    found: seq,
                });
            }
            let (record, previous) = split_stored(stored.value())
                .map_err(|reason| VerifyError::Corrupt { seq, reason })?;
            let event = Event::decode(record).map_err(|e| VerifyError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
            if event.seq != seq {
                return Err(VerifyError::Misplaced {
                    seq,
                    found: event.seq,
                });
            }
            match state.check(&event) {
                Ok(()) => {}
                Err(crate::FoldError::Chain {
                    seq,
                    expected,
                    found,
                }) => {
                    return Err(VerifyError::ChainBroken {
                        at_seq: seq,
                        expected,
                        found,
                    });
                }
                Err(reason) => return Err(VerifyError::BadEvent { seq, reason }),
            }
            let linked = state.entry(&event.key).map_or(0, |e| e.seq);
            if previous != linked {
                return Err(VerifyError::Corrupt {
                    seq,
                    reason: format!(
                        "links to seq {previous} as its key's previous event; the events give {linked}"
                    ),
                });
            }
            state.apply_unchecked(&event, Hash::of_record(record));
            count += 1;
        }
        let head = Head {
            seq: state.seq(),
            hash: state.hash(),
            at_ms: state.at_ms(),
        };
        let table = txn.open_table(STATE).map_err(StorageError::from)?;
        let stored = read_entries(&table).map_err(|e| VerifyError::Corrupt {
            seq: 0,
            reason: e.to_string(),
        })?;
        let folded = state.into_entries();
        for (key, entry) in &folded {
            match stored.get(key) {
                Some(s) if s == entry => {}
                Some(s) => {
                    return Err(VerifyError::StateMismatch {
                        key: key.clone(),
                        reason: format!(
                            "stored version {} (seq {}), events give version {} (seq {})",
                            s.version, s.seq, entry.version, entry.seq
                        ),
                    });
                }
                None => {
                    return Err(VerifyError::StateMismatch {
                        key: key.clone(),
                        reason: "missing from the state table".into(),
                    });
                }
            }
        }
        if let Some(key) = stored.keys().find(|k| !folded.contains_key(*k)) {
            return Err(VerifyError::StateMismatch {
                key: key.clone(),
                reason: "in the state table but never written by an event".into(),
            });
        }
        Ok(VerifyReport {
            events: count,
            first_seq: base.seq + 1,
            head,
            keys: folded.len() as u64,
        })
    }
}

/// A key as the `state` and `base` tables order it.
fn key_tuple(key: &Key) -> KeyTuple<'_> {
    (
        key.namespace.as_str(),
        key.sub_namespace.as_str(),
        key.key.as_str(),
    )
}

/// Writes one event, linked to `previous` (the seq of its key's last event,
/// from the key's state entry), and its state entry, in the caller's
/// transaction; returns its record's hash.
fn store_event(
    events: &mut redb::Table<'_, u64, &'static [u8]>,
    state: &mut redb::Table<'_, KeyTuple<'static>, &'static [u8]>,
    previous: Option<u64>,
    event: &Event,
) -> Result<Hash, StorageError> {
    let k = &event.key;
    let tuple = key_tuple(k);
    let record = event.encode();
    let entry = Entry {
        version: event.version,
        seq: event.seq,
        value: match &event.op {
            Op::Put(v) => Some(v.clone()),
            Op::Delete => None,
        },
    };
    let hash = Hash::of_record(&record);
    let mut stored = record;
    stored.extend_from_slice(&previous.unwrap_or(0).to_le_bytes());
    events.insert(event.seq, stored.as_slice())?;
    state.insert(tuple, entry.encode().as_slice())?;
    Ok(hash)
}

/// The bytes of an event as the `events` table stores them: the record, then
/// the seq of the key's previous event (little-endian u64, 0 for none).
fn split_stored(stored: &[u8]) -> Result<(&[u8], u64), String> {
    if stored.len() < 8 {
        return Err(format!(
            "stored event is {} bytes, too short for its link",
            stored.len()
        ));
    }
    let (record, link) = stored.split_at(stored.len() - 8);
    Ok((
        record,
        u64::from_le_bytes(link.try_into().expect("8 bytes")),
    ))
}

/// The record of the event stored at `seq`.
fn record_at(seq: u64, stored: &[u8]) -> Result<&[u8], ReadError> {
    split_stored(stored)
        .map(|(record, _)| record)
        .map_err(|reason| ReadError::Corrupt { seq, reason })
}

/// The event stored at `seq`.
fn decode_stored(seq: u64, stored: &[u8]) -> Result<Event, ReadError> {
    decode_at(seq, record_at(seq, stored)?)
}

/// How many events [`upgrade_from_v1`] rewrites per read of the `events` table.
const UPGRADE_CHUNK: usize = 1024;

/// Upgrades a format 1 file in the caller's transaction: each stored event
/// gets its key's link, from a fold over the events (starting from the
/// snapshot base's entries), and the `history` index is dropped.
fn upgrade_from_v1(txn: &redb::WriteTransaction) -> Result<(), String> {
    let mut last: HashMap<(String, String, String), u64> = HashMap::new();
    {
        let base = txn.open_table(BASE).map_err(|e| e.to_string())?;
        for item in base.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let (ns, sub, key) = k.value();
            let entry = Entry::decode(v.value())?;
            last.insert((ns.into(), sub.into(), key.into()), entry.seq);
        }
    }
    let mut events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
    // A chunk of records at a time (a table cannot be written while it is read), so a long log
    // with large channel monitors is never held in memory whole.
    let mut from = 0;
    loop {
        let chunk = events
            .range(from..)
            .map_err(|e| e.to_string())?
            .take(UPGRADE_CHUNK)
            .map(|item| {
                let (seq, record) = item.map_err(|e| e.to_string())?;
                Ok((seq.value(), record.value().to_vec()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let Some(&(last_seq, _)) = chunk.last() else {
            break;
        };
        for (seq, mut stored) in chunk {
            let event = Event::decode(&stored)
                .map_err(|e| format!("upgrading the log file: event {seq} does not decode: {e}"))?;
            let k = event.key;
            let previous = last
                .insert((k.namespace, k.sub_namespace, k.key), seq)
                .unwrap_or(0);
            stored.extend_from_slice(&previous.to_le_bytes());
            events
                .insert(seq, stored.as_slice())
                .map_err(|e| e.to_string())?;
        }
        from = last_seq + 1;
    }
    txn.delete_table(HISTORY_V1).map_err(|e| e.to_string())?;
    Ok(())
}

fn decode_at(seq: u64, record: &[u8]) -> Result<Event, ReadError> {
    Event::decode(record).map_err(|e| ReadError::Corrupt {
        seq,
        reason: e.to_string(),
    })
}

fn read_entries(
    table: &impl ReadableTable<KeyTuple<'static>, &'static [u8]>,
) -> Result<BTreeMap<Key, Entry>, ReadError> {
    let mut entries = BTreeMap::new();
    for item in table.iter().map_err(StorageError::from)? {
        let (k, v) = item.map_err(StorageError::from)?;
        let (ns, sub, key) = k.value();
        let entry =
            Entry::decode(v.value()).map_err(|reason| ReadError::Corrupt { seq: 0, reason })?;
        entries.insert(Key::new(ns, sub, key), entry);
    }
    Ok(entries)
}

/// The head is the last event (its seq, record hash and time), or the
/// snapshot base when the log holds no event. Nothing else stores it, so it
/// cannot disagree with the events.
fn head_of(
    events: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Head, String> {
    match last_event_head(events)? {
        Some(head) => Ok(head),
        None => read_base(meta),
    }
}

/// The head given by the last event, if the log holds any.
fn last_event_head(
    events: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<Head>, String> {
    match events.last().map_err(|e| e.to_string())? {
        Some((seq, stored)) => {
            let (record, _) = split_stored(stored.value())
                .map_err(|e| format!("the last event (seq {}): {e}", seq.value()))?;
            let event = Event::decode(record).map_err(|e| {
                format!("the last event (seq {}) does not decode: {e}", seq.value())
            })?;
            Ok(Some(Head {
                seq: seq.value(),
                hash: Hash::of_record(record),
                at_ms: event.at_ms,
            }))
        }
        None => Ok(None),
    }
}

fn read_base(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Head, String> {
    match meta.get(META_BASE).map_err(|e| e.to_string())? {
        Some(v) => Head::decode(v.value()),
        None => Ok(Head::default()),
    }
}

fn read_shipped(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, String> {
    match meta.get(META_SHIPPED).map_err(|e| e.to_string())? {
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| "the shipped marker is not 8 bytes".to_string())?;
            Ok(u64::from_le_bytes(bytes))
        }
        None => Err("the shipped marker is missing".into()),
    }
}
