//! `till-log`: the append-only, versioned, hash-chained event log every part of
//! Till stands on.
//!
//! State is a set of keys named `(namespace, sub_namespace, key)`. Every change
//! to a key is an [`Event`] with a gapless `seq`, the key's new `version`, the
//! device and lease epoch that wrote it, and the blake3 hash of the previous
//! event. A [`Log`] keeps the events, the materialized state (the latest entry
//! per key) and the outbox watermark in one redb file and changes them in one
//! transaction, so a crash leaves all of a commit or none of it. Concurrent
//! appenders share commits. [`Log::replay`] rebuilds the state as it was after
//! any event, [`Log::verify`] recomputes the chain and names the first bad seq,
//! and [`Log::apply`] takes events from elsewhere (a restore, a follower) only
//! if they continue this log exactly.
//!
//! The [`segment`] module seals runs of events into encrypted, versioned blobs
//! for shipping, bound to their store and object name.
//!
//! The log knows nothing about the network or Lightning. Byte layouts are in
//! `docs/FORMAT.md`.
//!
//! ```
//! use till_log::{Key, Log};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path().join("till.redb")).unwrap();
//! let key = Key::new("payments", "", "p1");
//! assert_eq!(log.put(key.clone(), b"pending".to_vec()).unwrap().version, 0);
//! assert_eq!(log.put(key.clone(), b"paid".to_vec()).unwrap().version, 1);
//! assert_eq!(log.get(&key).unwrap().unwrap().value, b"paid");
//! assert_eq!(log.replay(1).unwrap().get(&key), Some(&b"pending"[..]));
//! log.verify().unwrap();
//! ```

mod clock;
mod error;
mod event;
#[doc(hidden)]
pub mod fuzzing;
mod log;
pub mod segment;
mod state;

pub use clock::{Clock, ManualClock, SystemClock};

/// The largest seq a log holds. Snapshots claiming more are refused: seqs must stay below
/// `u64::MAX` so the next one is always defined, and the backup's counters are `i64`.
pub const MAX_SEQ: u64 = i64::MAX as u64;
pub use error::{
    AppendError, ApplyError, DecodeError, OpenError, OutboxError, ReadError, StorageError,
    VerifyError,
};
pub use event::{DeviceId, EVENT_FORMAT_VERSION, Event, Hash, Key, MAX_KEY_PART_LEN, Op, Write};
pub use log::{
    AppendOutcome, Appended, CommitStats, Durability, Head, LOG_FORMAT_VERSION, Log, LogOptions,
    REPLAY_PROGRESS_STEP, Stored, VerifyReport, Writer, create_redb_file,
};
pub use state::{Entry, FoldError, State};

/// The storage a log can be opened on instead of a file ([`Log::open_on`]).
pub use redb::StorageBackend;
