//! Errors, one enum per operation, with the facts in the variants.

use std::sync::Arc;

use crate::event::{Hash, Key};
use crate::state::FoldError;

/// A failure of the redb file underneath (I/O, corruption, lock held by another process).
#[derive(Clone, Debug, thiserror::Error)]
#[error("log storage: {0}")]
pub struct StorageError(#[source] Arc<redb::Error>);

impl StorageError {
    /// Whether this failure only repeats an earlier one: after a write fails, redb refuses
    /// every later one ("Previous I/O error occurred") until the log is reopened. The earlier
    /// failure is the one that says what happened.
    pub fn follows_an_earlier_failure(&self) -> bool {
        matches!(*self.0, redb::Error::PreviousIo)
    }
}

impl<E: Into<redb::Error>> From<E> for StorageError {
    fn from(e: E) -> Self {
        Self(Arc::new(e.into()))
    }
}

/// Why a record (an event, a state entry) could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record has no bytes.
    #[error("the record is empty")]
    Empty,
    /// The record was written by a newer format this build does not know.
    #[error("record format version {found} is unknown; this build reads version {supported}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The bytes after the version do not decode.
    #[error("the record is malformed: {0}")]
    Malformed(String),
    /// The record decoded but bytes are left over.
    #[error("the record has {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The redb file could not be opened or created.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The file is a log of a format this build does not know.
    #[error("log format version {found} is unknown; this build reads version {supported}")]
    UnknownFormat {
        /// The version stored in the file.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The file's metadata is damaged.
    #[error("the log's metadata is damaged: {0}")]
    Corrupt(String),
}

impl AppendError {
    /// Whether this failure only repeats an earlier one ([`StorageError::follows_an_earlier_failure`]).
    pub fn follows_an_earlier_failure(&self) -> bool {
        matches!(self, AppendError::Storage(s) if s.follows_an_earlier_failure())
    }
}

/// Why an append failed. Nothing of a failed append is stored.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The storage failed; the whole commit (and every batch sharing it) was rolled back.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A key breaks the log's limits.
    #[error("invalid key {0}")]
    InvalidKey(String),
    /// The log is a read-only replica (a follower or a point-in-time copy).
    #[error("this log is a read-only replica; only the lease holder appends")]
    ReadOnly,
    /// The committing thread panicked; the commit's outcome is unknown until reopen.
    #[error("the group commit was interrupted; reopen the log")]
    Interrupted,
    /// The log's stored metadata is damaged.
    #[error("the log is damaged: {0}")]
    Corrupt(String),
}

/// Why a read failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored record is damaged.
    #[error("stored record at seq {seq} is damaged: {reason}")]
    Corrupt {
        /// The seq of the damaged event (0 for a state entry or metadata).
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A replay was asked for a point past the end of the log.
    #[error("seq {requested} is beyond the log's last event (seq {head})")]
    BeyondHead {
        /// The seq asked for.
        requested: u64,
        /// The log's last seq.
        head: u64,
    },
    /// A stored event does not follow its predecessor.
    #[error("the stored log does not fold: {0}")]
    Fold(#[from] FoldError),
}

/// Why events from elsewhere (a restore, a follower's pull) were refused.
/// Nothing of a refused batch is applied.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The events do not continue this log (seq, chain, versions or time).
    #[error("the events do not continue this log: {0}")]
    DoesNotContinue(#[from] FoldError),
    /// This log has local events that were never shipped; applying remote
    /// events on top would fork it.
    #[error(
        "this log has {pending} unshipped local events after seq {shipped}; applying events from elsewhere would fork it"
    )]
    UnshippedLocal {
        /// The last shipped seq.
        shipped: u64,
        /// How many events are waiting to ship.
        pending: u64,
    },
    /// A stored record is damaged.
    #[error("the log is damaged: {0}")]
    Corrupt(String),
    /// A snapshot or event claims a seq no log reaches (above [`crate::MAX_SEQ`]).
    #[error("seq {seq} is beyond the largest seq a log holds ({max})", max = crate::MAX_SEQ)]
    SeqOutOfRange {
        /// The seq claimed.
        seq: u64,
    },
}

/// Why marking the outbox as shipped was refused.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The seq is past the log's head.
    #[error("cannot mark seq {requested} shipped: the log ends at seq {head}")]
    BeyondHead {
        /// The seq asked for.
        requested: u64,
        /// The log's last seq.
        head: u64,
    },
    /// The log's stored metadata is damaged.
    #[error("the log is damaged: {0}")]
    Corrupt(String),
}

/// What `verify()` found wrong: the first bad seq, and what was expected there.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An event is missing.
    #[error("gap in the log: expected seq {expected}, found seq {found}")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
    /// An event's record does not decode.
    #[error("event at seq {seq} does not decode: {reason}")]
    Corrupt {
        /// The seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An event is stored under another seq than it carries.
    #[error("the record stored at seq {seq} says it is seq {found}")]
    Misplaced {
        /// The table position.
        seq: u64,
        /// The seq inside the record.
        found: u64,
    },
    /// The hash chain breaks at this seq.
    #[error("hash chain broken at seq {at_seq}: expected prev_hash {expected}, found {found}")]
    ChainBroken {
        /// The first seq whose link is wrong.
        at_seq: u64,
        /// The previous event's hash.
        expected: Hash,
        /// The link stored in the event.
        found: Hash,
    },
    /// An event breaks the version rule or the time order.
    #[error("event at seq {seq} does not follow: {reason}")]
    BadEvent {
        /// The seq.
        seq: u64,
        /// Which rule it breaks.
        reason: FoldError,
    },
    /// The materialized state differs from the fold of the events (L1).
    #[error("materialized state differs from the events at key {key}: {reason}")]
    StateMismatch {
        /// The first key that differs.
        key: Key,
        /// How it differs.
        reason: String,
    },
}
