//! The embedded backend: one redb file, `till-server.redb`, in the data directory.
//!
//! Writes go through one writer thread that commits whatever puts are queued in one durable redb
//! transaction (group commit), checking each put against the state left by the ones before it, so
//! 64 concurrent clients share fsyncs instead of queueing for one each. Table layouts are in
//! `docs/FORMAT.md` ("till-server store").

use super::{
    Cause, Conflict, CreateUserError, Credential, Invite, InvoiceRecord, InvoiceStatus, Listed,
    Object, PutError, PutTransaction, RedeemError, Role, Storage, StoreError, StoredToken, UserId,
    check_lease, decode_invoice, encode_invoice, finish, lease_from_fields, state_code,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use till_vss::replica::LeaseHeader;
use tokio::sync::{mpsc, oneshot};

/// The file name inside the data directory.
pub(crate) const FILE_NAME: &str = "till-server.redb";
/// The layout version this code reads and writes (META "format"). Older files are upgraded on
/// open: version 1 lacks the `leases` table, version 2 the `invites` and `invoices` tables; the
/// upgrade only adds the empty tables (version 1 token records still read, as owner tokens).
const FORMAT: u64 = 3;
/// The version byte in front of every record value.
const RECORD_V1: u8 = 1;
/// Token records since format 3: version 1's fields, then the role code.
const TOKEN_V2: u8 = 2;
/// At most this many puts share one commit.
const MAX_BATCH: usize = 512;

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const USER_NAMES: TableDefinition<'static, &str, i64> = TableDefinition::new("user_names");
const TOKENS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("tokens");
const OBJECTS: TableDefinition<'static, (i64, &str, &str), &[u8]> = TableDefinition::new("objects");
const BY_CREATION: TableDefinition<'static, (i64, &str, i64), &str> =
    TableDefinition::new("objects_by_creation");
const GLOBALS: TableDefinition<'static, (i64, &str), i64> = TableDefinition::new("global_versions");
const LEASES: TableDefinition<'static, (i64, &str), &[u8]> = TableDefinition::new("leases");
/// Invitation code hash -> record (version, user, expires ms, redeemed ms or 0).
const INVITES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("invites");
/// (user, invoice id) -> versioned invoice record.
const INVOICES: TableDefinition<'static, (i64, &str), &[u8]> = TableDefinition::new("invoices");

enum Job {
    Put {
        user: UserId,
        tx: PutTransaction,
        reply: oneshot::Sender<Result<(), PutError>>,
    },
    Delete {
        user: UserId,
        store_id: String,
        key: String,
        expected: i64,
        reply: oneshot::Sender<Result<(), PutError>>,
    },
}

pub(crate) struct RedbStorage {
    db: Arc<Db>,
    writer: mpsc::Sender<Job>,
}

fn err(context: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| {
        let cause = match &e {
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Cause::Full,
            redb::Error::Io(_) | redb::Error::PreviousIo => Cause::Io,
            _ => Cause::Other,
        };
        StoreError::new(context, e).with_cause(cause)
    }
}

/// How often a closed store is opened again at most, while that keeps failing.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a failed store waits for the transactions still using it before closing.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The open redb database, opened again after an I/O failure.
///
/// redb latches the first failed write (a full disk, say): every later transaction of that
/// `Database` fails with "Previous I/O error occurred. Please close and re-open the database". So
/// after an I/O failure the database is closed, once the transactions still using it are done,
/// and the file is opened again (redb repairs it back to its last durable commit, which holds
/// every put that was answered). Until it is open again, requests fail at once, naming the cause;
/// a full disk heals without a restart once space is freed.
struct Db {
    /// The file, opened again after a failure; `None` for a store on a storage backend (in
    /// memory, or a test's disk), which stays closed.
    path: Option<PathBuf>,
    state: Mutex<DbState>,
}

struct DbState {
    /// The open database and its generation; `None` while closed after a failure.
    open: Option<(Arc<Database>, u64)>,
    generation: u64,
    /// The cause of the failure that closed it.
    cause: Cause,
    /// Another thread is opening it again.
    reopening: bool,
    /// When opening it again was last tried.
    tried: Option<Instant>,
}

/// An error that may carry a store failure, whose cause decides whether the database is closed.
trait Failure {
    fn store_cause(&self) -> Option<Cause>;
}

impl Failure for StoreError {
    fn store_cause(&self) -> Option<Cause> {
        Some(self.cause())
    }
}

impl Failure for CreateUserError {
    fn store_cause(&self) -> Option<Cause> {
        match self {
            CreateUserError::Store(e) => Some(e.cause()),
            _ => None,
        }
    }
}

impl Failure for RedeemError {
    fn store_cause(&self) -> Option<Cause> {
        match self {
            RedeemError::Store(e) => Some(e.cause()),
            _ => None,
        }
    }
}

impl Db {
    fn new(db: Database, path: Option<PathBuf>) -> Db {
        Db {
            path,
            state: Mutex::new(DbState {
                open: Some((Arc::new(db), 0)),
                generation: 0,
                cause: Cause::Other,
                reopening: false,
                tried: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DbState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the database (opening it again first if a failure closed it). If `f` fails
    /// with an I/O error, the database is closed, to be opened again by the next caller.
    fn run<T, E: From<StoreError> + Failure>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, E>,
    ) -> Result<T, E> {
        let (db, generation) = self.get()?;
        let result = f(&db);
        drop(db);
        if let Err(e) = &result
            && let Some(cause @ (Cause::Io | Cause::Full)) = e.store_cause()
        {
            self.close(generation, cause);
        }
        result
    }

    /// The open database, opened again first if a failure closed it.
    fn get(&self) -> Result<(Arc<Database>, u64), StoreError> {
        let mut state = self.lock();
        if let Some((db, generation)) = &state.open {
            return Ok((db.clone(), *generation));
        }
        let cause = state.cause;
        let Some(path) = &self.path else {
            return Err(StoreError::new(
                "the redb store is closed after an I/O failure",
                "it has no file to open again; restart the server",
            )
            .with_cause(cause));
        };
        let closed = move || {
            StoreError::new(
                "the redb store is closed after an I/O failure",
                "it is opened again at the next request",
            )
            .with_cause(cause)
        };
        if state.reopening || state.tried.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
            return Err(closed());
        }
        state.reopening = true;
        state.tried = Some(Instant::now());
        drop(state);
        // `open`, not `create`: the file exists.
        let opened = Database::open(path);
        let mut state = self.lock();
        state.reopening = false;
        match opened {
            Ok(db) => {
                state.generation += 1;
                let db = Arc::new(db);
                state.open = Some((db.clone(), state.generation));
                eprintln!(
                    "till-server: the redb store {} is open again after an I/O failure",
                    path.display()
                );
                Ok((db, state.generation))
            }
            Err(e) => {
                let e = err("opening the redb store again")(e.into());
                eprintln!("till-server: {e}");
                if e.cause() != Cause::Other {
                    state.cause = e.cause();
                }
                Err(closed())
            }
        }
    }

    /// Closes the database of `generation` after an I/O failure of `cause` (if no one did yet),
    /// waiting a little for the transactions still using it, so that it can be opened again.
    fn close(&self, generation: u64, cause: Cause) {
        let db = {
            let mut state = self.lock();
            match &state.open {
                Some((_, g)) if *g == generation => {}
                _ => return,
            }
            state.cause = cause;
            state.tried = None;
            state.open.take().map(|(db, _)| db)
        };
        let Some(mut db) = db else { return };
        match &self.path {
            Some(path) => eprintln!(
                "till-server: closing the redb store {} after an I/O failure, to open it again",
                path.display()
            ),
            None => eprintln!(
                "till-server: closing the redb store after an I/O failure; it has no file to open again"
            ),
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    drop(db);
                    return;
                }
                // The last user closes it; the next open tries again.
                Err(_) if Instant::now() > deadline => return,
                Err(still) => {
                    db = still;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

impl RedbStorage {
    /// Opens (creating if needed) the store in `dir`. Refuses a file of an unknown format version,
    /// and a file another process has open.
    pub(crate) fn open(dir: &Path) -> Result<RedbStorage, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::new(
                "could not create the data directory",
                format!("{}: {e}", dir.display()),
            )
        })?;
        let path: PathBuf = dir.join(FILE_NAME);
        // Whole or not at all: a crash while redb writes a new file's header
        // would leave a file it refuses to open.
        till_log::create_redb_file(&path).map_err(|e| {
            StoreError::new(
                "could not create the redb store",
                format!("{}: {e}", path.display()),
            )
        })?;
        let db = Database::create(&path).map_err(|e| {
            StoreError::new(
                "could not open the redb store",
                format!(
                    "{}: {e} (is another till-server using this data directory?)",
                    path.display()
                ),
            )
        })?;
        RedbStorage::start(db, Some(&path))
    }

    /// A store in memory, empty, gone when dropped: for the fuzz targets, which need a fresh
    /// server per input without touching the disk.
    pub(crate) fn open_in_memory() -> Result<RedbStorage, StoreError> {
        RedbStorage::open_on(redb::backends::InMemoryBackend::new())
    }

    /// The store `backend` keeps (created if it is empty), instead of a file: for the fuzz
    /// targets and for the tests that cut the power under the server. Having no file, it cannot
    /// be opened again after an I/O failure; it stays closed.
    pub(crate) fn open_on(backend: impl redb::StorageBackend) -> Result<RedbStorage, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| StoreError::new("could not open the redb store on its backend", e))?;
        RedbStorage::start(db, None)
    }

    /// Checks or creates the layout of `db` (in the file at `path`, if any) and starts its writer.
    fn start(db: Database, path: Option<&Path>) -> Result<RedbStorage, StoreError> {
        let wtx = db.begin_write().map_err(|e| err("begin write")(e.into()))?;
        {
            let mut meta = wtx
                .open_table(META)
                .map_err(|e| err("open meta")(e.into()))?;
            let found = meta
                .get("format")
                .map_err(|e| err("read format")(e.into()))?
                .map(|g| g.value());
            match found {
                // A new file, or a version 1 file: the tables below are created if missing,
                // which is all the upgrade from 1 takes.
                None | Some(1) | Some(2) => {
                    meta.insert("format", FORMAT)
                        .map_err(|e| err("write format")(e.into()))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::new(
                        "refusing the redb store",
                        format!(
                            "{} has format version {other}; this till-server reads versions 1 to {FORMAT} only",
                            path.map_or("the store".into(), |p| p.display().to_string())
                        ),
                    ));
                }
            }
            wtx.open_table(USER_NAMES)
                .map_err(|e| err("open user_names")(e.into()))?;
            wtx.open_table(TOKENS)
                .map_err(|e| err("open tokens")(e.into()))?;
            wtx.open_table(OBJECTS)
                .map_err(|e| err("open objects")(e.into()))?;
            wtx.open_table(BY_CREATION)
                .map_err(|e| err("open objects_by_creation")(e.into()))?;
            wtx.open_table(GLOBALS)
                .map_err(|e| err("open global_versions")(e.into()))?;
            wtx.open_table(LEASES)
                .map_err(|e| err("open leases")(e.into()))?;
            wtx.open_table(INVITES)
                .map_err(|e| err("open invites")(e.into()))?;
            wtx.open_table(INVOICES)
                .map_err(|e| err("open invoices")(e.into()))?;
        }
        wtx.commit().map_err(|e| err("commit")(e.into()))?;
        let db = Arc::new(Db::new(db, path.map(Path::to_path_buf)));
        let (writer, jobs) = mpsc::channel(4096);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("till-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, jobs))
            .map_err(|e| StoreError::new("could not start the redb writer thread", e))?;
        Ok(RedbStorage { db, writer })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            db.run(|db| {
                let rtx = db.begin_read().map_err(|e| err("begin read")(e.into()))?;
                f(&rtx)
            })
        })
        .await
        .map_err(|e| StoreError::new("read task failed", e))?
    }

    async fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), PutError>>) -> Job,
    ) -> Result<(), PutError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(make(reply)).await.map_err(|_| {
            StoreError::new("the redb writer has stopped", "earlier commit failure")
        })?;
        answer
            .await
            .map_err(|_| StoreError::new("the redb writer has stopped", "no answer"))?
    }
}

/// Encodes an object record: version byte, version, creation cursor, value.
fn encode_object(version: i64, created: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(RECORD_V1);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&created.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes an object record into (version, created, value).
fn decode_object(bytes: &[u8]) -> Result<(i64, i64, &[u8]), StoreError> {
    match bytes.first() {
        Some(&RECORD_V1) if bytes.len() >= 17 => {
            let version = i64::from_be_bytes(bytes[1..9].try_into().unwrap_or_default());
            let created = i64::from_be_bytes(bytes[9..17].try_into().unwrap_or_default());
            Ok((version, created, &bytes[17..]))
        }
        Some(&RECORD_V1) => Err(StoreError::new(
            "corrupt object record",
            format!("{} bytes", bytes.len()),
        )),
        Some(v) => Err(StoreError::new(
            "object record of unknown format",
            format!("version {v}"),
        )),
        None => Err(StoreError::new("corrupt object record", "empty")),
    }
}

/// Encodes a lease record: version byte, state (1 held, 2 released), device id, epoch.
fn encode_lease(lease: &LeaseHeader) -> [u8; 26] {
    let mut out = [0u8; 26];
    out[0] = RECORD_V1;
    out[1] = state_code(lease.state);
    out[2..18].copy_from_slice(&lease.device.0);
    out[18..].copy_from_slice(&lease.epoch.to_be_bytes());
    out
}

fn decode_lease(bytes: &[u8]) -> Result<LeaseHeader, StoreError> {
    if bytes.len() != 26 || bytes[0] != RECORD_V1 {
        return Err(StoreError::new(
            "lease record of unknown format or corrupt",
            format!("{} bytes", bytes.len()),
        ));
    }
    let epoch = u64::from_be_bytes(bytes[18..26].try_into().unwrap_or_default());
    lease_from_fields(&bytes[2..18], epoch, bytes[1])
}

struct WriteTables<'t> {
    meta: Table<'t, &'static str, u64>,
    objects: Table<'t, (i64, &'static str, &'static str), &'static [u8]>,
    by_creation: Table<'t, (i64, &'static str, i64), &'static str>,
    globals: Table<'t, (i64, &'static str), i64>,
    leases: Table<'t, (i64, &'static str), &'static [u8]>,
}

fn writer_loop(db: &Db, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match db.run(|db| commit_batch(db, &batch)) {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let reply = match job {
                        Job::Put { reply, .. } | Job::Delete { reply, .. } => reply,
                    };
                    let _ = reply.send(result.map_err(PutError::Conflict));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in batch {
                    let reply = match job {
                        Job::Put { reply, .. } | Job::Delete { reply, .. } => reply,
                    };
                    let _ = reply.send(Err(PutError::Store(
                        StoreError::new("redb commit failed", &message).with_cause(e.cause()),
                    )));
                }
            }
        }
    }
}

/// Applies every job of the batch in one write transaction and commits it durably. A job that
/// conflicts changes nothing (all its checks run before any of its writes); a storage error aborts
/// the whole batch.
fn commit_batch(db: &Database, batch: &[Job]) -> Result<Vec<Result<(), Conflict>>, StoreError> {
    let wtx = db.begin_write().map_err(|e| err("begin write")(e.into()))?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = WriteTables {
            meta: wtx
                .open_table(META)
                .map_err(|e| err("open meta")(e.into()))?,
            objects: wtx
                .open_table(OBJECTS)
                .map_err(|e| err("open objects")(e.into()))?,
            by_creation: wtx
                .open_table(BY_CREATION)
                .map_err(|e| err("open objects_by_creation")(e.into()))?,
            globals: wtx
                .open_table(GLOBALS)
                .map_err(|e| err("open global_versions")(e.into()))?,
            leases: wtx
                .open_table(LEASES)
                .map_err(|e| err("open leases")(e.into()))?,
        };
        let first_created = t
            .meta
            .get("next_created")
            .map_err(|e| err("read next_created")(e.into()))?
            .map_or(1, |g| g.value());
        let mut next_created = first_created;
        for job in batch {
            results.push(match job {
                Job::Put { user, tx, .. } => apply_put(&mut t, &mut next_created, *user, tx)?,
                Job::Delete {
                    user,
                    store_id,
                    key,
                    expected,
                    ..
                } => {
                    apply_delete(&mut t, *user, store_id, key, *expected)?;
                    Ok(())
                }
            });
        }
        // Only what changed is written: every table a commit touches costs pages to write and
        // sync, and a running master's upload changes neither the counter nor the lease when it
        // overwrites its head.
        if next_created != first_created {
            t.meta
                .insert("next_created", next_created)
                .map_err(|e| err("write next_created")(e.into()))?;
        }
    }
    wtx.commit().map_err(|e| err("commit")(e.into()))?;
    Ok(results)
}

/// (version, created) of a stored key.
fn current(
    t: &WriteTables<'_>,
    user: UserId,
    store_id: &str,
    key: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let guard = t
        .objects
        .get((user.0, store_id, key))
        .map_err(|e| err("read object")(e.into()))?;
    match guard {
        Some(g) => {
            let (version, created, _) = decode_object(g.value())?;
            Ok(Some((version, created)))
        }
        None => Ok(None),
    }
}

fn apply_put(
    t: &mut WriteTables<'_>,
    next_created: &mut u64,
    user: UserId,
    tx: &PutTransaction,
) -> Result<Result<(), Conflict>, StoreError> {
    let store = tx.store_id.as_str();
    // Phase 1: check every condition in request order against the stored state as changed by the
    // earlier items (and by the earlier puts of this batch, already applied to the tables);
    // nothing is written yet, so a conflict leaves nothing to undo.
    let mut stored_lease = None;
    if let Some(write) = &tx.lease {
        let stored = t
            .leases
            .get((user.0, store))
            .map_err(|e| err("read lease")(e.into()))?
            .map(|g| decode_lease(g.value()))
            .transpose()?;
        if let Err(conflict) = check_lease(store, stored.as_ref(), write) {
            return Ok(Err(conflict));
        }
        stored_lease = stored;
    }
    let mut original: HashMap<&str, Option<(i64, i64)>> = HashMap::new();
    // The final state of each touched key: (version, created, value) or deleted.
    let mut planned: HashMap<&str, Planned<'_>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut fresh = *next_created;
    for w in &tx.writes {
        let key = w.key.as_str();
        let cur = state_of(t, user, store, key, &mut original, &planned, &mut order)?;
        let found = cur.map(|c| c.0);
        let next = match (w.expected, cur) {
            (-1, Some((_, created))) => (1, created),
            (-1, None) | (0, None) => (1, take(&mut fresh)),
            (n, Some((v, created))) if n > 0 && v == n => (n + 1, created),
            _ => {
                return Ok(Err(Conflict::Write {
                    key: w.key.clone(),
                    expected: w.expected,
                    found,
                }));
            }
        };
        planned.insert(key, Some((next.0, next.1, &w.value)));
    }
    for d in &tx.deletes {
        let key = d.key.as_str();
        let cur = state_of(t, user, store, key, &mut original, &planned, &mut order)?;
        match cur {
            Some((v, _)) if d.expected == -1 || d.expected == v => {
                planned.insert(key, None);
            }
            _ => {
                return Ok(Err(Conflict::Delete {
                    key: d.key.clone(),
                    expected: d.expected,
                    found: cur.map(|c| c.0),
                }));
            }
        }
    }
    let mut new_global = None;
    if let Some(expected) = tx.global_version {
        let found = t
            .globals
            .get((user.0, store))
            .map_err(|e| err("read global version")(e.into()))?
            .map_or(0, |g| g.value());
        if found != expected {
            return Ok(Err(Conflict::GlobalVersion { expected, found }));
        }
        new_global = Some(expected + 1);
    }
    // Phase 2: write the final state of every touched key.
    *next_created = fresh;
    for key in order {
        let before = original.get(key).copied().flatten();
        let after = planned.get(key).copied().flatten();
        if let Some((_, created)) = before
            && after.is_none_or(|a| a.1 != created)
        {
            t.by_creation
                .remove((user.0, store, created))
                .map_err(|e| err("remove creation index")(e.into()))?;
        }
        match after {
            Some((version, created, value)) => {
                t.objects
                    .insert(
                        (user.0, store, key),
                        encode_object(version, created, value).as_slice(),
                    )
                    .map_err(|e| err("write object")(e.into()))?;
                // An overwrite keeps its creation cursor, and the index already holds it.
                if before.is_none_or(|b| b.1 != created) {
                    t.by_creation
                        .insert((user.0, store, created), key)
                        .map_err(|e| err("write creation index")(e.into()))?;
                }
            }
            None => {
                if before.is_some() {
                    t.objects
                        .remove((user.0, store, key))
                        .map_err(|e| err("remove object")(e.into()))?;
                }
            }
        }
    }
    if let Some(g) = new_global {
        t.globals
            .insert((user.0, store), g)
            .map_err(|e| err("write global version")(e.into()))?;
    }
    if let Some(write) = &tx.lease
        && stored_lease != Some(write.header)
    {
        t.leases
            .insert((user.0, store), encode_lease(&write.header).as_slice())
            .map_err(|e| err("write lease")(e.into()))?;
    }
    Ok(Ok(()))
}

/// A key's state as a transaction plans it: (version, creation cursor, value), or deleted.
type Planned<'v> = Option<(i64, i64, &'v [u8])>;

fn take(counter: &mut u64) -> i64 {
    let v = *counter;
    *counter += 1;
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The state of `key` as the transaction sees it so far: its own earlier items, else the store.
fn state_of<'k>(
    t: &WriteTables<'_>,
    user: UserId,
    store: &str,
    key: &'k str,
    original: &mut HashMap<&'k str, Option<(i64, i64)>>,
    planned: &HashMap<&'k str, Planned<'_>>,
    order: &mut Vec<&'k str>,
) -> Result<Option<(i64, i64)>, StoreError> {
    if let Some(p) = planned.get(key) {
        return Ok(p.map(|(v, c, _)| (v, c)));
    }
    if let Some(o) = original.get(key) {
        return Ok(*o);
    }
    let cur = current(t, user, store, key)?;
    original.insert(key, cur);
    order.push(key);
    Ok(cur)
}

fn apply_delete(
    t: &mut WriteTables<'_>,
    user: UserId,
    store: &str,
    key: &str,
    expected: i64,
) -> Result<(), StoreError> {
    if let Some((version, created)) = current(t, user, store, key)?
        && (expected == -1 || expected == version)
    {
        t.objects
            .remove((user.0, store, key))
            .map_err(|e| err("remove object")(e.into()))?;
        t.by_creation
            .remove((user.0, store, created))
            .map_err(|e| err("remove creation index")(e.into()))?;
    }
    Ok(())
}

/// Encodes a token record: version byte (2), user id, secret hash, role code.
fn encode_token(user: UserId, secret_hash: &[u8; 32], role: Role) -> Vec<u8> {
    let mut out = Vec::with_capacity(42);
    out.push(TOKEN_V2);
    out.extend_from_slice(&user.0.to_be_bytes());
    out.extend_from_slice(secret_hash);
    out.push(role.code());
    out
}

/// Decodes a token record; version 1 records (no role byte) are owner tokens.
fn decode_token(bytes: &[u8]) -> Result<StoredToken, StoreError> {
    let role = match (bytes.first(), bytes.len()) {
        (Some(&RECORD_V1), 41) => Role::Owner,
        (Some(&TOKEN_V2), 42) => Role::from_code(bytes[41])?,
        _ => {
            return Err(StoreError::new(
                "token record of unknown format or corrupt",
                format!("{} bytes", bytes.len()),
            ));
        }
    };
    let user = i64::from_be_bytes(bytes[1..9].try_into().unwrap_or_default());
    let mut secret_hash = [0u8; 32];
    secret_hash.copy_from_slice(&bytes[9..41]);
    Ok(StoredToken {
        user: UserId(user),
        secret_hash,
        role,
    })
}

/// Encodes an invitation record: version byte, user, expiry (ms), redeemed at (ms, 0: not yet).
fn encode_invite(invite: &Invite, redeemed_ms: i64) -> [u8; 25] {
    let mut out = [0u8; 25];
    out[0] = RECORD_V1;
    out[1..9].copy_from_slice(&invite.user.0.to_be_bytes());
    out[9..17].copy_from_slice(&invite.expires_ms.to_be_bytes());
    out[17..25].copy_from_slice(&redeemed_ms.to_be_bytes());
    out
}

fn decode_invite(bytes: &[u8]) -> Result<(Invite, i64), StoreError> {
    if bytes.len() != 25 || bytes[0] != RECORD_V1 {
        return Err(StoreError::new(
            "invitation record of unknown format or corrupt",
            format!("{} bytes", bytes.len()),
        ));
    }
    let field =
        |r: std::ops::Range<usize>| i64::from_be_bytes(bytes[r].try_into().unwrap_or_default());
    Ok((
        Invite {
            user: UserId(field(1..9)),
            expires_ms: field(9..17),
        },
        field(17..25),
    ))
}

/// Creates the user `name` in `wtx` without a token, or returns the existing one.
fn ensure_user(wtx: &redb::WriteTransaction, name: &str) -> Result<UserId, StoreError> {
    let mut names = wtx
        .open_table(USER_NAMES)
        .map_err(|e| err("open user_names")(e.into()))?;
    if let Some(found) = names.get(name).map_err(|e| err("read user")(e.into()))? {
        return Ok(UserId(found.value()));
    }
    let mut meta = wtx
        .open_table(META)
        .map_err(|e| err("open meta")(e.into()))?;
    let next = meta
        .get("next_user")
        .map_err(|e| err("read next_user")(e.into()))?
        .map_or(1, |g| g.value());
    meta.insert("next_user", next + 1)
        .map_err(|e| err("write next_user")(e.into()))?;
    let user = UserId(i64::try_from(next).map_err(|e| StoreError::new("user id overflow", e))?);
    names
        .insert(name, user.0)
        .map_err(|e| err("write user")(e.into()))?;
    Ok(user)
}

fn insert_token(
    wtx: &redb::WriteTransaction,
    user: UserId,
    credential: &Credential,
    role: Role,
) -> Result<(), StoreError> {
    let mut tokens = wtx
        .open_table(TOKENS)
        .map_err(|e| err("open tokens")(e.into()))?;
    tokens
        .insert(
            credential.token_id.as_slice(),
            encode_token(user, &credential.secret_hash, role).as_slice(),
        )
        .map_err(|e| err("write token")(e.into()))?;
    Ok(())
}

impl RedbStorage {
    /// Runs `f` in its own durable write transaction on a blocking thread.
    async fn write<T: Send + 'static, E: From<StoreError> + Failure + Send + 'static>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            db.run(|db| {
                let wtx = db.begin_write().map_err(|e| err("begin write")(e.into()))?;
                let out = f(&wtx)?;
                wtx.commit().map_err(|e| err("commit")(e.into()))?;
                Ok(out)
            })
        })
        .await
        .map_err(|e| StoreError::new("write task failed", e))?
    }
}

#[async_trait]
impl Storage for RedbStorage {
    async fn health(&self) -> Result<(), StoreError> {
        self.read(|rtx| {
            rtx.open_table(META)
                .map_err(|e| err("open meta")(e.into()))?;
            Ok(())
        })
        .await
    }

    async fn create_user(
        &self,
        name: &str,
        credential: &Credential,
    ) -> Result<UserId, CreateUserError> {
        let db = self.db.clone();
        let name = name.to_owned();
        let credential = credential.clone();
        tokio::task::spawn_blocking(move || {
            db.run(|db| {
                let wtx = db.begin_write().map_err(|e| err("begin write")(e.into()))?;
                let user;
                {
                    let mut names = wtx
                        .open_table(USER_NAMES)
                        .map_err(|e| err("open user_names")(e.into()))?;
                    if names
                        .get(name.as_str())
                        .map_err(|e| err("read user")(e.into()))?
                        .is_some()
                    {
                        return Err(CreateUserError::Exists(name));
                    }
                    let mut meta = wtx
                        .open_table(META)
                        .map_err(|e| err("open meta")(e.into()))?;
                    let next = meta
                        .get("next_user")
                        .map_err(|e| err("read next_user")(e.into()))?
                        .map_or(1, |g| g.value());
                    meta.insert("next_user", next + 1)
                        .map_err(|e| err("write next_user")(e.into()))?;
                    user = UserId(
                        i64::try_from(next).map_err(|e| StoreError::new("user id overflow", e))?,
                    );
                    names
                        .insert(name.as_str(), user.0)
                        .map_err(|e| err("write user")(e.into()))?;
                    let mut tokens = wtx
                        .open_table(TOKENS)
                        .map_err(|e| err("open tokens")(e.into()))?;
                    tokens
                        .insert(
                            credential.token_id.as_slice(),
                            encode_token(user, &credential.secret_hash, Role::Owner).as_slice(),
                        )
                        .map_err(|e| err("write token")(e.into()))?;
                }
                wtx.commit().map_err(|e| err("commit")(e.into()))?;
                Ok(user)
            })
        })
        .await
        .map_err(|e| StoreError::new("user task failed", e))?
    }

    async fn credential(&self, token_id: [u8; 16]) -> Result<Option<StoredToken>, StoreError> {
        self.read(move |rtx| {
            let tokens = rtx
                .open_table(TOKENS)
                .map_err(|e| err("open tokens")(e.into()))?;
            let found = tokens
                .get(token_id.as_slice())
                .map_err(|e| err("read token")(e.into()))?;
            found.map(|g| decode_token(g.value())).transpose()
        })
        .await
    }

    async fn user_by_name(&self, name: &str, create: bool) -> Result<Option<UserId>, StoreError> {
        let name = name.to_owned();
        if create {
            return self
                .write(move |wtx| ensure_user(wtx, &name).map(Some))
                .await;
        }
        self.read(move |rtx| {
            let names = rtx
                .open_table(USER_NAMES)
                .map_err(|e| err("open user_names")(e.into()))?;
            let found = names
                .get(name.as_str())
                .map_err(|e| err("read user")(e.into()))?;
            Ok(found.map(|g| UserId(g.value())))
        })
        .await
    }

    async fn user_name(&self, user: UserId) -> Result<String, StoreError> {
        self.read(move |rtx| {
            let names = rtx
                .open_table(USER_NAMES)
                .map_err(|e| err("open user_names")(e.into()))?;
            for entry in names.iter().map_err(|e| err("scan user_names")(e.into()))? {
                let (name, id) = entry.map_err(|e| err("scan user_names")(e.into()))?;
                if id.value() == user.0 {
                    return Ok(name.value().to_owned());
                }
            }
            Err(StoreError::new("unknown user id", user.0))
        })
        .await
    }

    async fn add_token(
        &self,
        user: UserId,
        credential: &Credential,
        role: Role,
    ) -> Result<(), StoreError> {
        let credential = credential.clone();
        self.write(move |wtx| insert_token(wtx, user, &credential, role))
            .await
    }

    async fn create_invite(&self, code_hash: [u8; 32], invite: Invite) -> Result<(), StoreError> {
        self.write(move |wtx| {
            let mut invites = wtx
                .open_table(INVITES)
                .map_err(|e| err("open invites")(e.into()))?;
            invites
                .insert(code_hash.as_slice(), encode_invite(&invite, 0).as_slice())
                .map_err(|e| err("write invite")(e.into()))?;
            Ok(())
        })
        .await
    }

    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        now_ms: i64,
        credential: &Credential,
    ) -> Result<UserId, RedeemError> {
        let credential = credential.clone();
        self.write(move |wtx| {
            let (invite, redeemed) = {
                let invites = wtx
                    .open_table(INVITES)
                    .map_err(|e| err("open invites")(e.into()))?;
                let found = invites
                    .get(code_hash.as_slice())
                    .map_err(|e| err("read invite")(e.into()))?
                    .ok_or(RedeemError::Unknown)?;
                decode_invite(found.value())?
            };
            if redeemed != 0 {
                return Err(RedeemError::Used { at_ms: redeemed });
            }
            if now_ms > invite.expires_ms {
                return Err(RedeemError::Expired {
                    expires_ms: invite.expires_ms,
                });
            }
            wtx.open_table(INVITES)
                .map_err(|e| err("open invites")(e.into()))?
                .insert(
                    code_hash.as_slice(),
                    encode_invite(&invite, now_ms.max(1)).as_slice(),
                )
                .map_err(|e| err("write invite")(e.into()))?;
            insert_token(wtx, invite.user, &credential, Role::Owner)?;
            Ok(invite.user)
        })
        .await
    }

    async fn leases(&self, user: UserId) -> Result<Vec<(String, LeaseHeader)>, StoreError> {
        self.read(move |rtx| {
            let leases = rtx
                .open_table(LEASES)
                .map_err(|e| err("open leases")(e.into()))?;
            let range = leases
                .range((user.0, "")..(user.0 + 1, ""))
                .map_err(|e| err("scan leases")(e.into()))?;
            let mut out = Vec::new();
            for entry in range {
                let (k, v) = entry.map_err(|e| err("scan leases")(e.into()))?;
                out.push((k.value().1.to_owned(), decode_lease(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    async fn put_invoice(&self, user: UserId, invoice: &InvoiceRecord) -> Result<(), StoreError> {
        let invoice = invoice.clone();
        self.write(move |wtx| {
            wtx.open_table(INVOICES)
                .map_err(|e| err("open invoices")(e.into()))?
                .insert(
                    (user.0, invoice.id.as_str()),
                    encode_invoice(&invoice).as_slice(),
                )
                .map_err(|e| err("write invoice")(e.into()))?;
            Ok(())
        })
        .await
    }

    async fn invoice(&self, user: UserId, id: &str) -> Result<Option<InvoiceRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |rtx| {
            let invoices = rtx
                .open_table(INVOICES)
                .map_err(|e| err("open invoices")(e.into()))?;
            let found = invoices
                .get((user.0, id.as_str()))
                .map_err(|e| err("read invoice")(e.into()))?;
            found.map(|g| decode_invoice(g.value())).transpose()
        })
        .await
    }

    async fn invoices(&self, user: UserId) -> Result<Vec<InvoiceRecord>, StoreError> {
        let mut all = self
            .read(move |rtx| {
                let invoices = rtx
                    .open_table(INVOICES)
                    .map_err(|e| err("open invoices")(e.into()))?;
                let range = invoices
                    .range((user.0, "")..(user.0 + 1, ""))
                    .map_err(|e| err("scan invoices")(e.into()))?;
                let mut out = Vec::new();
                for entry in range {
                    let (_, v) = entry.map_err(|e| err("scan invoices")(e.into()))?;
                    out.push(decode_invoice(v.value())?);
                }
                Ok(out)
            })
            .await?;
        all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    async fn open_invoices(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(UserId, InvoiceRecord)>, StoreError> {
        self.read(move |rtx| {
            let invoices = rtx
                .open_table(INVOICES)
                .map_err(|e| err("open invoices")(e.into()))?;
            let mut out = Vec::new();
            for entry in invoices
                .iter()
                .map_err(|e| err("scan invoices")(e.into()))?
            {
                let (k, v) = entry.map_err(|e| err("scan invoices")(e.into()))?;
                let record = decode_invoice(v.value())?;
                if record.status == InvoiceStatus::New && record.created_ms >= since_ms {
                    out.push((UserId(k.value().0), record));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn finish_invoice(
        &self,
        user: UserId,
        id: &str,
        to: InvoiceStatus,
        at_ms: i64,
        received_msat: Option<u64>,
    ) -> Result<Option<InvoiceRecord>, StoreError> {
        let id = id.to_owned();
        self.write(move |wtx| {
            let mut invoices = wtx
                .open_table(INVOICES)
                .map_err(|e| err("open invoices")(e.into()))?;
            let current = invoices
                .get((user.0, id.as_str()))
                .map_err(|e| err("read invoice")(e.into()))?
                .map(|g| decode_invoice(g.value()))
                .transpose()?;
            let Some(changed) = current.and_then(|r| finish(r, to, at_ms, received_msat)) else {
                return Ok(None);
            };
            invoices
                .insert((user.0, id.as_str()), encode_invoice(&changed).as_slice())
                .map_err(|e| err("write invoice")(e.into()))?;
            Ok(Some(changed))
        })
        .await
    }

    async fn get(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
    ) -> Result<Option<Object>, StoreError> {
        let (store_id, key) = (store_id.to_owned(), key.to_owned());
        self.read(move |rtx| {
            let objects = rtx
                .open_table(OBJECTS)
                .map_err(|e| err("open objects")(e.into()))?;
            let found = objects
                .get((user.0, store_id.as_str(), key.as_str()))
                .map_err(|e| err("read object")(e.into()))?;
            match found {
                Some(g) => {
                    let (version, _, value) = decode_object(g.value())?;
                    Ok(Some(Object {
                        version,
                        value: value.to_vec(),
                    }))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn global_version(&self, user: UserId, store_id: &str) -> Result<i64, StoreError> {
        let store_id = store_id.to_owned();
        self.read(move |rtx| {
            let globals = rtx
                .open_table(GLOBALS)
                .map_err(|e| err("open global_versions")(e.into()))?;
            let found = globals
                .get((user.0, store_id.as_str()))
                .map_err(|e| err("read global version")(e.into()))?;
            Ok(found.map_or(0, |g| g.value()))
        })
        .await
    }

    async fn put(&self, user: UserId, tx: PutTransaction) -> Result<(), PutError> {
        self.submit(|reply| Job::Put { user, tx, reply }).await
    }

    async fn lease(&self, user: UserId, store_id: &str) -> Result<Option<LeaseHeader>, StoreError> {
        let store_id = store_id.to_owned();
        self.read(move |rtx| {
            let leases = rtx
                .open_table(LEASES)
                .map_err(|e| err("open leases")(e.into()))?;
            let found = leases
                .get((user.0, store_id.as_str()))
                .map_err(|e| err("read lease")(e.into()))?;
            found.map(|g| decode_lease(g.value())).transpose()
        })
        .await
    }

    async fn delete(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
        expected: i64,
    ) -> Result<(), StoreError> {
        let (store_id, key) = (store_id.to_owned(), key.to_owned());
        match self
            .submit(|reply| Job::Delete {
                user,
                store_id,
                key,
                expected,
                reply,
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(PutError::Store(e)) => Err(e),
            Err(PutError::Conflict(c)) => Err(StoreError::new("unexpected conflict on delete", c)),
        }
    }

    async fn list(
        &self,
        user: UserId,
        store_id: &str,
        prefix: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let (store_id, prefix) = (store_id.to_owned(), prefix.to_owned());
        self.read(move |rtx| {
            let index = rtx
                .open_table(BY_CREATION)
                .map_err(|e| err("open objects_by_creation")(e.into()))?;
            let objects = rtx
                .open_table(OBJECTS)
                .map_err(|e| err("open objects")(e.into()))?;
            let store = store_id.as_str();
            let end = before.unwrap_or(i64::MAX);
            let range = index
                .range((user.0, store, i64::MIN)..(user.0, store, end))
                .map_err(|e| err("scan objects_by_creation")(e.into()))?;
            let mut out = Vec::new();
            for entry in range.rev() {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(|e| err("scan objects_by_creation")(e.into()))?;
                let key = v.value();
                if !key.starts_with(prefix.as_str()) {
                    continue;
                }
                let created = k.value().2;
                let object = objects
                    .get((user.0, store, key))
                    .map_err(|e| err("read object")(e.into()))?
                    .ok_or_else(|| {
                        StoreError::new("creation index points at a missing object", key)
                    })?;
                let (version, _, _) = decode_object(object.value())?;
                out.push(Listed {
                    key: key.to_owned(),
                    version,
                    created,
                });
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LeaseWrite, Write};

    /// A file of `format` with one object and no `leases` table, as an older server left it.
    fn old_file(dir: &Path, format: u64) {
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(META)
            .unwrap()
            .insert("format", format)
            .unwrap();
        wtx.open_table(OBJECTS)
            .unwrap()
            .insert((1, "s", "k"), encode_object(1, 1, b"v").as_slice())
            .unwrap();
        wtx.commit().unwrap();
    }

    /// A file written before the `leases` table (format 1) opens, gains the table and format 2,
    /// and keeps its objects; a file of a later format is refused.
    #[test]
    fn format_1_is_upgraded_and_later_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        old_file(dir.path(), 1);
        let storage = RedbStorage::open(dir.path()).unwrap();
        let (db, _) = storage.db.get().unwrap();
        let rtx = db.begin_read().unwrap();
        let format = rtx
            .open_table(META)
            .unwrap()
            .get("format")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(format, FORMAT);
        assert!(
            rtx.open_table(LEASES)
                .unwrap()
                .iter()
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            rtx.open_table(OBJECTS)
                .unwrap()
                .get((1, "s", "k"))
                .unwrap()
                .is_some()
        );

        let later = tempfile::tempdir().unwrap();
        old_file(later.path(), FORMAT + 1);
        let refused = RedbStorage::open(later.path()).err().unwrap().to_string();
        assert!(
            refused.contains(&format!("format version {}", FORMAT + 1)),
            "{refused}"
        );
    }

    /// One upload of a master: a new segment and its head, which carries `lease`.
    fn upload(segment: &str, head_version: i64, lease: LeaseHeader) -> PutTransaction {
        PutTransaction {
            store_id: "s".into(),
            global_version: None,
            writes: vec![
                Write {
                    key: segment.into(),
                    expected: 0,
                    value: b"segment".to_vec(),
                },
                Write {
                    key: "head".into(),
                    expected: head_version,
                    value: b"head".to_vec(),
                },
            ],
            deletes: Vec::new(),
            lease: Some(LeaseWrite {
                header: lease,
                enforce: true,
            }),
        }
    }

    /// Rows of the creation index, oldest first.
    fn creation_index(storage: &RedbStorage) -> Vec<(i64, String)> {
        let (db, _) = storage.db.get().unwrap();
        let rtx = db.begin_read().unwrap();
        let table = rtx.open_table(BY_CREATION).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                (k.value().2, v.value().to_owned())
            })
            .collect()
    }

    /// An upload writes only what changed (the head's overwrite keeps its creation cursor and
    /// the running master's lease), and what it leaves unwritten still reads back as it was.
    #[tokio::test]
    async fn an_upload_leaves_the_unchanged_lease_and_creation_index_as_they_were() {
        let storage = RedbStorage::open_in_memory().unwrap();
        let user = UserId(1);
        let held = lease_from_fields(&[7; 16], 1, 1).unwrap();
        storage.put(user, upload("seg0", 0, held)).await.unwrap();
        storage.put(user, upload("seg1", 1, held)).await.unwrap();
        assert_eq!(storage.lease(user, "s").await.unwrap(), Some(held));
        // The head keeps the cursor of its creation; each segment has its own, in order.
        let index = creation_index(&storage);
        let keys: Vec<&str> = index.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["seg0", "head", "seg1"]);
        let listed = storage.list(user, "s", "", None, 10).await.unwrap();
        let listed: Vec<(&str, i64)> = listed.iter().map(|l| (l.key.as_str(), l.version)).collect();
        assert_eq!(listed, [("seg1", 1), ("head", 2), ("seg0", 1)]);

        // A changed lease is written: the release, then another device's acquire.
        let released = lease_from_fields(&[7; 16], 1, 2).unwrap();
        storage
            .put(user, upload("seg2", 2, released))
            .await
            .unwrap();
        assert_eq!(storage.lease(user, "s").await.unwrap(), Some(released));
        let next = lease_from_fields(&[8; 16], 2, 1).unwrap();
        storage.put(user, upload("seg3", 3, next)).await.unwrap();
        assert_eq!(storage.lease(user, "s").await.unwrap(), Some(next));
        // The old holder's write is refused against the lease as stored.
        let refused = storage.put(user, upload("seg4", 4, held)).await;
        assert!(matches!(
            refused,
            Err(PutError::Conflict(Conflict::Lease { .. }))
        ));
        // The counter of creation cursors moved on only for new keys.
        let index = creation_index(&storage);
        let cursors: Vec<i64> = index.iter().map(|(c, _)| *c).collect();
        assert_eq!(cursors, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn lease_records_round_trip() {
        let lease = lease_from_fields(&[9; 16], 1 << 40, 1).unwrap();
        assert_eq!(decode_lease(&encode_lease(&lease)).unwrap(), lease);
        let mut bad = encode_lease(&lease);
        bad[1] = 0;
        assert!(decode_lease(&bad).is_err());
        assert!(decode_lease(&bad[..25]).is_err());
    }
}
