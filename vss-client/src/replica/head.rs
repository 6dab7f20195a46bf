//! The head object: a plaintext lease header followed by the sealed manifest.
//!
//! ```text
//! head value = lease header (32 bytes) || envelope(kind Head, manifest, extra = lease header)
//! ```
//!
//! The lease header lets a lease-aware server see who holds the lease; the
//! envelope authenticates it (it is the envelope's extra associated data), so a
//! client detects any change to it.

use serde::{Deserialize, Serialize};
use till_log::segment::{self, Binding, Kind, SealKey, SegmentError};
use till_log::{DeviceId, Hash};

/// Magic bytes of the lease header.
pub const LEASE_MAGIC: [u8; 4] = *b"TLSE";
/// Format version of the lease header.
pub const LEASE_FORMAT_VERSION: u8 = 1;
/// Length of the lease header.
pub const LEASE_HEADER_LEN: usize = 32;
/// Format version of the manifest payload.
pub const MANIFEST_FORMAT_VERSION: u8 = 1;

/// Whether the lease is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// A device holds it and may write.
    Held,
    /// Nobody holds it; the next device to acquire bumps the epoch.
    Released,
}

/// The plaintext lease header in front of the head: who holds the lease, under
/// which epoch, and whether it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseHeader {
    /// The device that holds (or last held) the lease.
    pub device: DeviceId,
    /// The lease epoch; every acquire or takeover adds 1.
    pub epoch: u64,
    /// Held or released.
    pub state: LeaseState,
}

/// Why a lease header could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseHeaderError {
    /// Fewer than 32 bytes.
    #[error("lease header truncated: {0} bytes, expected {LEASE_HEADER_LEN}")]
    Truncated(usize),
    /// Not a head object.
    #[error("not a lease header (bad magic bytes)")]
    NotAHead,
    /// A newer format.
    #[error(
        "lease header format version {0} is unknown; this build reads version {LEASE_FORMAT_VERSION}"
    )]
    UnknownVersion(u8),
    /// A field has a value no writer produces.
    #[error("lease header is malformed: {0}")]
    Malformed(&'static str),
}

impl LeaseHeader {
    /// Encodes the header: magic, version, state (1 held, 2 released), two
    /// reserved zero bytes, the 16-byte device id, the epoch (u64 LE).
    pub fn encode(&self) -> [u8; LEASE_HEADER_LEN] {
        let mut out = [0u8; LEASE_HEADER_LEN];
        out[..4].copy_from_slice(&LEASE_MAGIC);
        out[4] = LEASE_FORMAT_VERSION;
        out[5] = match self.state {
            LeaseState::Held => 1,
            LeaseState::Released => 2,
        };
        out[8..24].copy_from_slice(&self.device.0);
        out[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        out
    }

    /// Decodes the header at the start of `bytes` (a head object's value).
    pub fn decode(bytes: &[u8]) -> Result<Self, LeaseHeaderError> {
        if bytes.len() >= 4 && bytes[..4] != LEASE_MAGIC {
            return Err(LeaseHeaderError::NotAHead);
        }
        if bytes.len() < LEASE_HEADER_LEN {
            return Err(LeaseHeaderError::Truncated(bytes.len()));
        }
        if bytes[4] != LEASE_FORMAT_VERSION {
            return Err(LeaseHeaderError::UnknownVersion(bytes[4]));
        }
        let state = match bytes[5] {
            1 => LeaseState::Held,
            2 => LeaseState::Released,
            _ => return Err(LeaseHeaderError::Malformed("unknown lease state")),
        };
        if bytes[6] != 0 || bytes[7] != 0 {
            return Err(LeaseHeaderError::Malformed("reserved bytes are not zero"));
        }
        Ok(Self {
            device: DeviceId(bytes[8..24].try_into().unwrap()),
            epoch: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            state,
        })
    }
}

/// A snapshot the manifest points to: the state at `seq`, in `chunks` objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The seq the snapshot is the state after.
    pub seq: u64,
    /// Hash of the event at `seq`.
    pub hash: Hash,
    /// Time of the event at `seq`.
    pub at_ms: u64,
    /// How many chunk objects it has.
    pub chunks: u32,
    /// The first segment holding events after `seq`.
    pub next_segment: u64,
}

/// The manifest inside the head: how far the remote log goes and where its
/// pieces are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Payload format version ([`MANIFEST_FORMAT_VERSION`]).
    pub format: u8,
    /// The lease, repeated from the header (and checked against it).
    pub device: DeviceId,
    /// The lease epoch.
    pub epoch: u64,
    /// Held or released.
    pub state: LeaseState,
    /// Last seq on the remote (0 when nothing was shipped).
    pub last_seq: u64,
    /// Hash of the event at `last_seq`.
    pub last_hash: Hash,
    /// Time of the event at `last_seq`.
    pub last_at_ms: u64,
    /// Segments written so far: ordinals `0..segments`.
    pub segments: u64,
    /// The oldest segment kept (a retention policy may delete older ones).
    pub first_segment: u64,
    /// The snapshots, oldest first.
    pub snapshots: Vec<SnapshotRef>,
    /// How many times the head has been written, this write included; equals
    /// the head's VSS version, so a head put back to an older copy shows.
    pub writes: u64,
}

impl Manifest {
    /// The manifest of a store nobody has written yet, about to be acquired.
    pub fn new(device: DeviceId) -> Self {
        Self {
            format: MANIFEST_FORMAT_VERSION,
            device,
            epoch: 0,
            state: LeaseState::Released,
            last_seq: 0,
            last_hash: Hash::GENESIS,
            last_at_ms: 0,
            segments: 0,
            first_segment: 0,
            snapshots: Vec::new(),
            writes: 0,
        }
    }

    /// The lease header this manifest goes out with.
    pub fn lease(&self) -> LeaseHeader {
        LeaseHeader {
            device: self.device,
            epoch: self.epoch,
            state: self.state,
        }
    }

    /// Seals the manifest into a head object value.
    pub fn seal(&self, key: &SealKey, store_id: &str, name: &str) -> Vec<u8> {
        let header = self.lease().encode();
        let payload = postcard::to_stdvec(self).expect("manifest serializes");
        let sealed = segment::seal(
            Kind::Head,
            &payload,
            key,
            &Binding {
                store_id,
                name,
                extra: &header,
            },
            false,
        )
        .expect("a manifest is far below the envelope limit");
        let mut out = Vec::with_capacity(header.len() + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a head object value, checking the header against the manifest.
    pub fn open(
        bytes: &[u8],
        key: &SealKey,
        store_id: &str,
        name: &str,
    ) -> Result<Self, HeadError> {
        let header = LeaseHeader::decode(bytes)?;
        let payload = segment::open(
            Kind::Head,
            &bytes[LEASE_HEADER_LEN..],
            key,
            &Binding {
                store_id,
                name,
                extra: &bytes[..LEASE_HEADER_LEN],
            },
        )?;
        let manifest: Manifest = postcard::from_bytes(&payload)
            .map_err(|e| HeadError::Malformed(format!("manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT_VERSION {
            return Err(HeadError::Malformed(format!(
                "manifest format version {} is unknown; this build reads {MANIFEST_FORMAT_VERSION}",
                manifest.format
            )));
        }
        if manifest.lease() != header {
            return Err(HeadError::Malformed(
                "the lease header disagrees with the sealed manifest".into(),
            ));
        }
        Ok(manifest)
    }
}

/// Why a head object could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The plaintext lease header is bad.
    #[error(transparent)]
    Header(#[from] LeaseHeaderError),
    /// The sealed manifest does not open (wrong key, altered, moved).
    #[error("the head does not open: {0}")]
    Seal(#[from] SegmentError),
    /// The manifest opened but makes no sense.
    #[error("the head is malformed: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips_and_binds_the_header() {
        let key = SealKey::from_bytes([5; 32]);
        let mut m = Manifest::new(DeviceId([1; 16]));
        m.epoch = 4;
        m.state = LeaseState::Held;
        m.last_seq = 99;
        let bytes = m.seal(&key, "s", "h");
        assert_eq!(LeaseHeader::decode(&bytes).unwrap(), m.lease());
        assert_eq!(Manifest::open(&bytes, &key, "s", "h").unwrap(), m);
        // A server that rewrites the plaintext header is caught.
        let mut forged = bytes.clone();
        forged[8] ^= 1;
        assert!(matches!(
            Manifest::open(&forged, &key, "s", "h"),
            Err(HeadError::Seal(SegmentError::Altered(_)))
        ));
        let mut forged = bytes.clone();
        forged[5] = 2; // claims released
        assert!(Manifest::open(&forged, &key, "s", "h").is_err());
        assert_eq!(
            LeaseHeader::decode(b"TILL").unwrap_err(),
            LeaseHeaderError::NotAHead
        );
    }
}
