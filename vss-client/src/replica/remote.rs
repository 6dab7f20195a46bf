//! One backup store on a VSS server, seen through the backup keys: names are
//! opaque, values sealed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use till_log::segment::{self, Binding, Kind, SegmentError, open_segment};
use till_log::{Entry, Event, Key, State};

use super::head::{HeadError, Manifest, SnapshotRef};
use super::keys::{BackupKeys, names};
use crate::{Error as VssError, KeyValue, PutObjectRequest, VssClient};

/// Format version of a snapshot chunk's payload.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Why talking to the backup store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The VSS call failed.
    #[error(transparent)]
    Vss(#[from] VssError),
    /// The head is sealed under another key: the wrong mnemonic (or backup secret).
    #[error("this mnemonic does not open this backup")]
    WrongKey,
    /// The head does not open or makes no sense.
    #[error("the backup's head is damaged: {0}")]
    Head(HeadError),
    /// A segment does not open.
    #[error("segment {ordinal} of the backup is damaged: {error}")]
    Segment {
        /// The segment.
        ordinal: u64,
        /// Why.
        error: SegmentError,
    },
    /// A snapshot chunk does not open or does not match its reference.
    #[error("chunk {chunk} of the snapshot at seq {seq} is damaged: {reason}")]
    Snapshot {
        /// The snapshot's seq.
        seq: u64,
        /// The chunk.
        chunk: u32,
        /// Why.
        reason: String,
    },
}

/// The payload of one snapshot chunk.
#[derive(Serialize, Deserialize)]
struct SnapshotChunk {
    format: u8,
    seq: u64,
    chunk: u32,
    chunks: u32,
    entries: Vec<(Key, Entry)>,
}

/// A backup store: a VSS client, the backup keys and the store id.
#[derive(Clone, Debug)]
pub struct Remote {
    client: VssClient,
    keys: BackupKeys,
    store_id: String,
}

impl Remote {
    /// The store the keys derive, on the server `client` talks to.
    pub fn new(client: VssClient, keys: BackupKeys) -> Self {
        let store_id = keys.store_id().to_string();
        Self {
            client,
            keys,
            store_id,
        }
    }

    /// Uses another store id than the derived one (a server may assign it).
    pub fn with_store_id(mut self, store_id: impl Into<String>) -> Self {
        self.store_id = store_id.into();
        self
    }

    /// The store id.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The VSS client.
    pub fn client(&self) -> &VssClient {
        &self.client
    }

    /// The backup keys.
    pub fn keys(&self) -> &BackupKeys {
        &self.keys
    }

    /// The opaque name of a logical object name. The head's name is derived
    /// from the store id alone, so that a device holding the wrong keys still
    /// finds the head and learns that its keys do not open it; every other
    /// name is a keyed hash under the backup's name key.
    pub fn name(&self, logical: &str) -> String {
        if logical == names::HEAD {
            let id = blake3::derive_key("till backup v1 head name", self.store_id.as_bytes());
            return super::keys::hex(&id[..16]);
        }
        self.keys.object_name(logical)
    }

    /// Reads the head: the manifest and the head's VSS version, or `None` for
    /// a store nobody has written.
    pub async fn head(&self) -> Result<Option<(Manifest, i64)>, RemoteError> {
        let name = self.name(names::HEAD);
        match self.client.get_object(&self.store_id, &name).await {
            Ok(kv) => Ok(Some((self.open_head(&kv.value, &name)?, kv.version))),
            Err(VssError::NoSuchKey { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open_head(&self, value: &[u8], name: &str) -> Result<Manifest, RemoteError> {
        Manifest::open(value, self.keys.seal_key(), &self.store_id, name).map_err(|e| match e {
            HeadError::Seal(SegmentError::WrongKey) => RemoteError::WrongKey,
            other => RemoteError::Head(other),
        })
    }

    /// The head object's value for `manifest`.
    pub fn head_item(&self, manifest: &Manifest, version: i64) -> KeyValue {
        let name = self.name(names::HEAD);
        let value = manifest.seal(self.keys.seal_key(), &self.store_id, &name);
        KeyValue::new(name, version, value)
    }

    /// A new segment object (created at version 0: write-once).
    pub fn segment_item(&self, ordinal: u64, events: &[Event], compress: bool) -> KeyValue {
        let name = self.name(&names::segment(ordinal));
        let value = segment::seal_segment(
            events,
            self.keys.seal_key(),
            &Binding::new(&self.store_id, &name),
            compress,
        )
        .expect("segments are cut below the envelope limit");
        KeyValue::new(name, 0, value)
    }

    /// Snapshot chunk objects for `state` (created at version 0), and the
    /// reference the manifest keeps. Chunks hold at most `chunk_bytes` of values.
    pub fn snapshot_items(
        &self,
        state: &State,
        next_segment: u64,
        chunk_bytes: usize,
    ) -> (Vec<KeyValue>, SnapshotRef) {
        let mut groups: Vec<Vec<(Key, Entry)>> = vec![Vec::new()];
        let mut size = 0;
        for (k, e) in state.entries() {
            let len = e.value.as_ref().map_or(0, Vec::len) + k.key.len() + 64;
            if size + len > chunk_bytes && !groups.last().unwrap().is_empty() {
                groups.push(Vec::new());
                size = 0;
            }
            size += len;
            groups.last_mut().unwrap().push((k.clone(), e.clone()));
        }
        let chunks = groups.len() as u32;
        let items = groups
            .into_iter()
            .enumerate()
            .map(|(i, entries)| {
                let chunk = i as u32;
                let name = self.name(&names::snapshot(state.seq(), chunk));
                let payload = postcard::to_stdvec(&SnapshotChunk {
                    format: SNAPSHOT_FORMAT_VERSION,
                    seq: state.seq(),
                    chunk,
                    chunks,
                    entries,
                })
                .expect("snapshot serializes");
                let value = segment::seal(
                    Kind::Snapshot,
                    &payload,
                    self.keys.seal_key(),
                    &Binding::new(&self.store_id, &name),
                    true,
                )
                .expect("snapshot chunks are cut below the envelope limit");
                KeyValue::new(name, 0, value)
            })
            .collect();
        let reference = SnapshotRef {
            seq: state.seq(),
            hash: state.hash(),
            at_ms: state.at_ms(),
            chunks,
            next_segment,
        };
        (items, reference)
    }

    /// Fetches and opens segment `ordinal`.
    pub async fn segment(&self, ordinal: u64) -> Result<Vec<Event>, RemoteError> {
        let name = self.name(&names::segment(ordinal));
        let kv = self.client.get_object(&self.store_id, &name).await?;
        open_segment(
            &kv.value,
            self.keys.seal_key(),
            &Binding::new(&self.store_id, &name),
        )
        .map_err(|error| RemoteError::Segment { ordinal, error })
    }

    /// Fetches and opens every chunk of a snapshot, giving the state it holds.
    pub async fn snapshot(&self, reference: &SnapshotRef) -> Result<State, RemoteError> {
        let mut entries = std::collections::BTreeMap::new();
        for chunk in 0..reference.chunks {
            let name = self.name(&names::snapshot(reference.seq, chunk));
            let kv = self.client.get_object(&self.store_id, &name).await?;
            entries.extend(self.open_snapshot_chunk(&kv.value, reference, chunk)?);
        }
        Ok(State::from_snapshot(
            entries,
            reference.seq,
            reference.hash,
            reference.at_ms,
        ))
    }

    /// Opens the value of chunk `chunk` of the snapshot `reference` points to,
    /// refusing a chunk that does not open, is of an unknown format, or belongs
    /// to another snapshot or position.
    pub(crate) fn open_snapshot_chunk(
        &self,
        value: &[u8],
        reference: &SnapshotRef,
        chunk: u32,
    ) -> Result<Vec<(Key, Entry)>, RemoteError> {
        let bad = |reason: String| RemoteError::Snapshot {
            seq: reference.seq,
            chunk,
            reason,
        };
        let name = self.name(&names::snapshot(reference.seq, chunk));
        let payload = segment::open(
            Kind::Snapshot,
            value,
            self.keys.seal_key(),
            &Binding::new(&self.store_id, &name),
        )
        .map_err(|e| bad(e.to_string()))?;
        let c: SnapshotChunk =
            postcard::from_bytes(&payload).map_err(|e| bad(format!("payload: {e}")))?;
        if c.format != SNAPSHOT_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is unknown; this build reads {SNAPSHOT_FORMAT_VERSION}",
                c.format
            )));
        }
        if c.seq != reference.seq || c.chunk != chunk || c.chunks != reference.chunks {
            return Err(bad(
                "the chunk belongs to another snapshot or position".into()
            ));
        }
        Ok(c.entries)
    }

    /// Lists the whole store: opaque name -> version.
    pub async fn listing(&self) -> Result<HashMap<String, i64>, RemoteError> {
        let (all, _global) = self
            .client
            .list_all_key_versions(&self.store_id, None)
            .await?;
        Ok(all.into_iter().map(|kv| (kv.key, kv.version)).collect())
    }

    /// Sends one all-or-nothing `PutObjects`.
    pub async fn put(&self, items: Vec<KeyValue>, deletes: Vec<KeyValue>) -> Result<(), VssError> {
        self.client
            .put_objects(&PutObjectRequest {
                store_id: self.store_id.clone(),
                global_version: None,
                transaction_items: items,
                delete_items: deletes,
            })
            .await
    }
}
