//! Backup keys: everything the remote side needs, derived from one secret.

use std::fmt;

use till_log::segment::SealKey;

/// The keys of one backup, derived from a 32-byte backup secret (the engine
/// derives the secret from the wallet's mnemonic). Holding them opens and
/// writes the backup; the server never sees them.
///
/// Derivations (blake3 `derive_key` contexts, see `docs/FORMAT.md`):
/// - segment key: `"till backup v1 segment key"`, seals every object;
/// - object-name key: `"till backup v1 object name key"`, names objects as
///   keyed hashes of their logical names, so the server sees opaque names;
/// - store id: the first 16 bytes of `"till backup v1 store id"`, in hex.
#[derive(Clone)]
pub struct BackupKeys {
    seal: SealKey,
    name_key: [u8; 32],
    store_id: String,
}

impl BackupKeys {
    /// Derives the keys from the backup secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let seal = SealKey::from_bytes(blake3::derive_key("till backup v1 segment key", secret));
        let name_key = blake3::derive_key("till backup v1 object name key", secret);
        let id = blake3::derive_key("till backup v1 store id", secret);
        Self {
            seal,
            name_key,
            store_id: hex(&id[..16]),
        }
    }

    /// The key every object is sealed under.
    pub fn seal_key(&self) -> &SealKey {
        &self.seal
    }

    /// The store id derived from the secret (a paired device may be given
    /// another one by its server; see `Remote::with_store_id`).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The opaque server-side name of a logical object name: 32 hex digits of
    /// a keyed blake3 hash. Reveals nothing about the object.
    pub fn object_name(&self, logical: &str) -> String {
        hex(&blake3::keyed_hash(&self.name_key, logical.as_bytes()).as_bytes()[..16])
    }
}

impl fmt::Debug for BackupKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupKeys")
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Logical names of the objects of one store.
pub mod names {
    /// The head: manifest and lease.
    pub const HEAD: &str = "head";

    /// Segment number `ordinal` (0, 1, 2, ...).
    pub fn segment(ordinal: u64) -> String {
        format!("segment/{ordinal}")
    }

    /// Chunk `chunk` of the snapshot at `seq`.
    pub fn snapshot(seq: u64, chunk: u32) -> String {
        format!("snapshot/{seq}/{chunk}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_stable_and_separates_secrets() {
        let a = BackupKeys::from_secret(&[1; 32]);
        let a2 = BackupKeys::from_secret(&[1; 32]);
        let b = BackupKeys::from_secret(&[2; 32]);
        assert_eq!(a.store_id(), a2.store_id());
        assert_ne!(a.store_id(), b.store_id());
        assert_eq!(a.store_id().len(), 32);
        assert_eq!(a.object_name("head"), a2.object_name("head"));
        assert_ne!(a.object_name("head"), b.object_name("head"));
        assert_ne!(a.object_name("segment/0"), a.object_name("segment/1"));
        // Names reveal nothing of the logical name.
        let n = a.object_name(&names::segment(7));
        assert!(n.chars().all(|c| c.is_ascii_hexdigit()) && n.len() == 32);
        assert!(!format!("{a:?}").contains(&hex(&[1; 4])));
    }
}
