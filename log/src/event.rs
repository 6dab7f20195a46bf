//! Events, the facts the log is made of, and their versioned byte encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;

/// Format version of an encoded event record (the first byte of every record).
pub const EVENT_FORMAT_VERSION: u8 = 1;

/// Longest namespace, sub-namespace or key accepted, in bytes.
pub const MAX_KEY_PART_LEN: usize = 1024;

/// The name of one value: `(namespace, sub_namespace, key)`, as LDK's `KVStore` names them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The primary namespace (may be empty).
    pub namespace: String,
    /// The secondary namespace (may be empty).
    pub sub_namespace: String,
    /// The key within the namespaces (never empty).
    pub key: String,
}

impl Key {
    /// Builds a key from its three parts.
    pub fn new(
        namespace: impl Into<String>,
        sub_namespace: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            sub_namespace: sub_namespace.into(),
            key: key.into(),
        }
    }

    /// Checks the limits the log enforces: a non-empty key, every part at most
    /// [`MAX_KEY_PART_LEN`] bytes, and a sub-namespace only under a namespace.
    pub fn check(&self) -> Result<(), String> {
        if self.key.is_empty() {
            return Err(format!("{self}: the key is empty"));
        }
        for (name, part) in [
            ("namespace", &self.namespace),
            ("sub_namespace", &self.sub_namespace),
            ("key", &self.key),
        ] {
            if part.len() > MAX_KEY_PART_LEN {
                return Err(format!(
                    "{self}: the {name} is {} bytes, the limit is {MAX_KEY_PART_LEN}",
                    part.len()
                ));
            }
        }
        if self.namespace.is_empty() && !self.sub_namespace.is_empty() {
            return Err(format!("{self}: a sub_namespace needs a namespace"));
        }
        Ok(())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.sub_namespace, self.key)
    }
}

/// What an event did to its key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The key was set to these bytes.
    Put(Vec<u8>),
    /// The key was deleted (a tombstone; its version still counts).
    Delete,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(v) => write!(f, "Put({} bytes)", v.len()),
            Op::Delete => f.write_str("Delete"),
        }
    }
}

/// A change asked of the log: the key and what to do to it. The log turns each
/// effective write into an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The key to change.
    pub key: Key,
    /// The change.
    pub op: Op,
}

impl Write {
    /// Sets `key` to `value`.
    pub fn put(key: Key, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key,
            op: Op::Put(value.into()),
        }
    }

    /// Deletes `key` (no event if it is absent).
    pub fn delete(key: Key) -> Self {
        Self {
            key,
            op: Op::Delete,
        }
    }
}

/// A random 16-byte identity of one install of Till; never backed up.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    /// A fresh random device id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A blake3 hash of one encoded event record; the links of the hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event: all zeros.
    pub const GENESIS: Hash = Hash([0; 32]);

    /// The hash of an encoded event record.
    pub fn of_record(record: &[u8]) -> Self {
        Self(*blake3::hash(record).as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// One change to one key: an immutable fact in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: 1 for the first event, gapless.
    pub seq: u64,
    /// The key that changed.
    pub key: Key,
    /// The key's version after this event (L2: 0 on first put, +1 on every later put or delete).
    pub version: u64,
    /// What happened to the key.
    pub op: Op,
    /// When it was appended, in unix milliseconds; never less than the previous event's.
    pub at_ms: u64,
    /// The device that appended it.
    pub device: DeviceId,
    /// The lease epoch under which it was appended.
    pub epoch: u64,
    /// Hash of the previous event's record ([`Hash::GENESIS`] for seq 1).
    pub prev_hash: Hash,
}

impl Event {
    /// Encodes the event as a record: the format version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EVENT_FORMAT_VERSION];
        // Serializing plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("event serializes"));
        out
    }

    /// Decodes a record written by [`Event::encode`], refusing unknown versions,
    /// malformed bytes and trailing bytes.
    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = record.split_first().ok_or(DecodeError::Empty)?;
        if version != EVENT_FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: version,
                supported: EVENT_FORMAT_VERSION,
            });
        }
        let (event, rest): (Event, _) =
            postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(event)
    }

    /// The hash of this event's record, which the next event carries as `prev_hash`.
    pub fn hash(&self) -> Hash {
        Hash::of_record(&self.encode())
    }
}

/// The version a key gets from `op`, given its current entry (live or tombstone);
/// `None` when the op changes nothing (deleting an absent or deleted key).
pub(crate) fn next_version(current: Option<(u64, bool)>, op: &Op) -> Option<u64> {
    match (current, op) {
        (None, Op::Put(_)) => Some(0),
        (None, Op::Delete) => None,
        (Some((version, _)), Op::Put(_)) => Some(version + 1),
        (Some((version, true)), Op::Delete) => Some(version + 1),
        (Some((_, false)), Op::Delete) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            seq: 7,
            key: Key::new("ns", "sub", "k"),
            version: 3,
            op: Op::Put(b"value".to_vec()),
            at_ms: 1_700_000_000_000,
            device: DeviceId([9; 16]),
            epoch: 2,
            prev_hash: Hash([1; 32]),
        }
    }

    #[test]
    fn record_round_trips_and_starts_with_version() {
        let e = sample();
        let record = e.encode();
        assert_eq!(record[0], EVENT_FORMAT_VERSION);
        assert_eq!(Event::decode(&record).unwrap(), e);
    }

    #[test]
    fn unknown_version_and_trailing_bytes_are_refused() {
        let mut record = sample().encode();
        record[0] = 2;
        assert!(matches!(
            Event::decode(&record),
            Err(DecodeError::UnknownVersion { found: 2, .. })
        ));
        let mut record = sample().encode();
        record.push(0);
        assert!(matches!(
            Event::decode(&record),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(matches!(Event::decode(&[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn versions_follow_l2() {
        let put = Op::Put(vec![]);
        assert_eq!(next_version(None, &put), Some(0));
        assert_eq!(next_version(None, &Op::Delete), None);
        assert_eq!(next_version(Some((0, true)), &put), Some(1));
        assert_eq!(next_version(Some((4, true)), &Op::Delete), Some(5));
        assert_eq!(next_version(Some((5, false)), &Op::Delete), None);
        // Re-create after delete continues the count.
        assert_eq!(next_version(Some((5, false)), &put), Some(6));
    }

    #[test]
    fn key_limits() {
        assert!(Key::new("a", "b", "c").check().is_ok());
        assert!(Key::new("", "", "c").check().is_ok());
        assert!(Key::new("a", "b", "").check().is_err());
        assert!(Key::new("", "b", "c").check().is_err());
        assert!(Key::new("a", "b", "x".repeat(1025)).check().is_err());
    }
}
