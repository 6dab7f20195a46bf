//! The materialized state and the fold that builds it from events (L1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Hash, Key, Op, next_version};

/// Format version of an encoded state entry in the `state` table.
pub(crate) const ENTRY_FORMAT_VERSION: u8 = 1;

/// The latest fact about one key: its version, the seq that set it, and its
/// value (`None` once deleted; the tombstone keeps the version counting).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key's current version.
    pub version: u64,
    /// The seq of the event that produced this entry.
    pub seq: u64,
    /// The value, or `None` for a deleted key.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT_VERSION];
        out.extend(postcard::to_stdvec(self).expect("entry serializes"));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&ENTRY_FORMAT_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| format!("state entry does not decode: {e}"))
            }
            Some((v, _)) => Err(format!(
                "state entry has format version {v}, this build reads {ENTRY_FORMAT_VERSION}"
            )),
            None => Err("state entry is empty".into()),
        }
    }

    /// Whether the key currently has a value.
    pub fn is_live(&self) -> bool {
        self.value.is_some()
    }
}

/// Why an event does not follow from the state it is folded onto.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    /// The event's seq is not the next one.
    #[error("expected seq {expected}, found seq {found}")]
    Seq {
        /// The seq that should come next.
        expected: u64,
        /// The seq the event carries.
        found: u64,
    },
    /// The event does not link to the previous event's hash.
    #[error("seq {seq} links to hash {found}, the previous event hashes to {expected}")]
    Chain {
        /// The event's seq.
        seq: u64,
        /// Hash of the previous event.
        expected: Hash,
        /// The event's `prev_hash`.
        found: Hash,
    },
    /// The event's version is not the one L2 gives.
    #[error("seq {seq} gives {key} version {found}, expected {expected:?}")]
    Version {
        /// The event's seq.
        seq: u64,
        /// The key.
        key: Key,
        /// The version L2 gives (`None`: the op changes nothing and should not exist).
        expected: Option<u64>,
        /// The event's version.
        found: u64,
    },
    /// The event's time is earlier than the previous event's.
    #[error("seq {seq} is at {found} ms, before the previous event at {previous} ms")]
    TimeWentBack {
        /// The event's seq.
        seq: u64,
        /// The previous event's time.
        previous: u64,
        /// The event's time.
        found: u64,
    },
}

/// A state as of some seq: the fold of every event up to it. What `replay`
/// returns, and what the `state` table holds for the head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    entries: BTreeMap<Key, Entry>,
    seq: u64,
    hash: Hash,
    at_ms: u64,
}

impl State {
    /// The empty state before the first event.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn from_parts(
        entries: BTreeMap<Key, Entry>,
        seq: u64,
        hash: Hash,
        at_ms: u64,
    ) -> Self {
        Self {
            entries,
            seq,
            hash,
            at_ms,
        }
    }

    /// Folds one event onto the state, refusing an event that does not follow
    /// (wrong seq, broken chain, wrong version, time going back).
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        self.check(event)?;
        self.apply_unchecked(event, event.hash());
        Ok(())
    }

    /// Checks that `event` follows this state, without changing it.
    pub fn check(&self, event: &Event) -> Result<(), FoldError> {
        let current = self
            .entries
            .get(&event.key)
            .map(|e| (e.version, e.is_live()));
        check_follows(self.seq, self.hash, self.at_ms, current, event)
    }

    pub(crate) fn apply_unchecked(&mut self, event: &Event, hash: Hash) {
        let value = match &event.op {
            Op::Put(v) => Some(v.clone()),
            Op::Delete => None,
        };
        self.entries.insert(
            event.key.clone(),
            Entry {
                version: event.version,
                seq: event.seq,
                value,
            },
        );
        self.seq = event.seq;
        self.hash = hash;
        self.at_ms = event.at_ms;
    }

    /// The seq this state is as of (0 before the first event).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Hash of the event at [`State::seq`] ([`Hash::GENESIS`] at seq 0).
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Time of the event at [`State::seq`] (0 at seq 0).
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// The value of a live key.
    pub fn get(&self, key: &Key) -> Option<&[u8]> {
        self.entries.get(key).and_then(|e| e.value.as_deref())
    }

    /// The entry of a key, live or deleted.
    pub fn entry(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every key ever written, with its entry (tombstones included), in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    /// The live keys and values, in key order.
    pub fn live(&self) -> impl Iterator<Item = (&Key, &[u8])> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_deref().map(|v| (k, v)))
    }

    /// Number of live keys.
    pub fn live_len(&self) -> usize {
        self.entries.values().filter(|e| e.is_live()).count()
    }

    /// Takes the entries out, for building a state elsewhere (snapshots).
    pub fn into_entries(self) -> BTreeMap<Key, Entry> {
        self.entries
    }

    /// A state from entries at a known point of the chain, as a snapshot holds it.
    /// The caller vouches for the entries (they come from an authenticated snapshot).
    pub fn from_snapshot(entries: BTreeMap<Key, Entry>, seq: u64, hash: Hash, at_ms: u64) -> Self {
        Self::from_parts(entries, seq, hash, at_ms)
    }
}

/// Checks that `event` follows a log whose last event is `(seq, hash, at_ms)` and
/// in which the event's key currently is `current` (version, live).
pub(crate) fn check_follows(
    seq: u64,
    hash: Hash,
    at_ms: u64,
    current: Option<(u64, bool)>,
    event: &Event,
) -> Result<(), FoldError> {
    if event.seq != seq + 1 {
        return Err(FoldError::Seq {
            expected: seq + 1,
            found: event.seq,
        });
    }
    if event.prev_hash != hash {
        return Err(FoldError::Chain {
            seq: event.seq,
            expected: hash,
            found: event.prev_hash,
        });
    }
    let expected = next_version(current, &event.op);
    if expected != Some(event.version) {
        return Err(FoldError::Version {
            seq: event.seq,
            key: event.key.clone(),
            expected,
            found: event.version,
        });
    }
    if event.at_ms < at_ms {
        return Err(FoldError::TimeWentBack {
            seq: event.seq,
            previous: at_ms,
            found: event.at_ms,
        });
    }
    Ok(())
}
