//! The wallet's keys: the BIP39 mnemonic, what ldk-node takes from it, the backup secret, and the
//! device id.
//!
//! Everything secret here is derived from the mnemonic (and its optional passphrase) and never
//! leaves the device: no `Debug` or `Display` impl and no error message shows a word, a seed or a
//! key. The device id is the one random, per-install value; it lives in the log file's local table
//! and is never backed up, so a restored device gets a new one.

use std::fmt;

use bip39::Mnemonic;
use bitcoin::NetworkKind;
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::secp256k1::Secp256k1;
use till_log::{DeviceId, Log};
use zeroize::Zeroizing;

use crate::error::Error;

/// The hardened BIP32 path, from the BIP39 seed, of the backup secret: `9735'` is Till's purpose
/// (Lightning's port number, unused by the BIP43/44/84 purposes ldk-node and BDK derive), `1'` the
/// backup, `0'` its first generation. ldk-node's own keys are at `m/0'` (LDK) and `m/84'` (the
/// on-chain wallet), and its VSS key at `m/877'`, so none of them overlap.
pub const BACKUP_SECRET_PATH: &str = "m/9735'/1'/0'";

/// Name of the device-local record holding this install's [`DeviceId`].
pub const DEVICE_ID_RECORD: &str = "device_id";

/// Format version of the device-id record (its first byte).
pub const DEVICE_ID_FORMAT_VERSION: u8 = 1;

/// Words of a generated mnemonic.
const GENERATED_WORDS: usize = 12;

/// The wallet's secret: a BIP39 mnemonic and its optional passphrase.
///
/// Cheap to clone. `Debug` shows nothing secret.
#[derive(Clone)]
pub struct Keys {
    mnemonic: Mnemonic,
    passphrase: Zeroizing<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { .. }")
    }
}

impl Keys {
    /// A fresh 12-word English mnemonic from the operating system's random source, without a
    /// passphrase.
    pub fn generate() -> Self {
        let mnemonic = Mnemonic::generate(GENERATED_WORDS)
            .expect("12 is a valid BIP39 word count and the OS has randomness");
        Self {
            mnemonic,
            passphrase: Zeroizing::new(String::new()),
        }
    }

    /// Imports a mnemonic phrase (English, 12 to 24 words, checksum verified) with an optional
    /// BIP39 passphrase. The error says what is wrong without repeating any word.
    pub fn from_phrase(phrase: &str, passphrase: Option<&str>) -> Result<Self, Error> {
        let phrase = Zeroizing::new(phrase.trim().to_lowercase());
        let mnemonic = Mnemonic::parse_in_normalized(bip39::Language::English, &phrase)
            .map_err(|e| Error::InvalidMnemonic(describe_bip39_error(&e)))?;
        Ok(Self {
            mnemonic,
            passphrase: Zeroizing::new(passphrase.unwrap_or_default().to_owned()),
        })
    }

    /// The words, for showing to the merchant once so they can write them down. Zeroed on drop.
    pub fn phrase(&self) -> Zeroizing<String> {
        Zeroizing::new(self.mnemonic.to_string())
    }

    /// The 32-byte backup secret: the private key at [`BACKUP_SECRET_PATH`] from the BIP39 seed
    /// (mnemonic and passphrase). The replication layer derives the segment key, the object-name
    /// key and the store id from it. Zeroed on drop; deref it to get the array.
    pub fn backup_secret(&self) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.mnemonic.to_seed(self.passphrase.as_str()));
        let secp = Secp256k1::signing_only();
        let master = Xpriv::new_master(NetworkKind::Main, seed.as_slice())
            .expect("a 64-byte seed always makes a master key");
        let path: DerivationPath = BACKUP_SECRET_PATH.parse().expect("a valid constant path");
        let child = master
            .derive_priv(&secp, &path)
            .expect("hardened derivation from a valid key succeeds");
        Zeroizing::new(child.private_key.secret_bytes())
    }

    /// The 32-byte seed ldk-node gives LDK's `KeysManager`: the private key of the BIP32 master
    /// key of the BIP39 seed, as ldk-node 0.7 derives it. A follower uses it to open the channel
    /// monitors of its replica without running a node. Zeroed on drop.
    pub(crate) fn ldk_seed(&self) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.mnemonic.to_seed(self.passphrase.as_str()));
        let master = Xpriv::new_master(NetworkKind::Main, seed.as_slice())
            .expect("a 64-byte seed always makes a master key");
        Zeroizing::new(master.private_key.secret_bytes())
    }

    /// Hands the mnemonic to ldk-node, which derives its node and wallet keys from the BIP39 seed.
    pub(crate) fn set_node_entropy(&self, builder: &mut ldk_node::Builder) {
        let passphrase = (!self.passphrase.is_empty()).then(|| self.passphrase.to_string());
        builder.set_entropy_bip39_mnemonic(self.mnemonic.clone(), passphrase);
    }
}

/// Describes a BIP39 parse failure without the words themselves.
fn describe_bip39_error(e: &bip39::Error) -> String {
    match e {
        bip39::Error::BadWordCount(n) => {
            format!("{n} words; a mnemonic has 12, 15, 18, 21 or 24")
        }
        bip39::Error::UnknownWord(i) => {
            format!("word {} is not in the English BIP39 word list", i + 1)
        }
        bip39::Error::InvalidChecksum => {
            "the checksum does not match; a word is wrong or the order is".to_owned()
        }
        bip39::Error::BadEntropyBitCount(_) => "the entropy has an invalid length".to_owned(),
        bip39::Error::AmbiguousLanguages(_) => "the language is ambiguous".to_owned(),
    }
}

/// This install's device id: read from the log file's device-local table, or created at random
/// and stored there on first use. Never part of the event log, so never backed up.
pub fn device_id(log: &Log) -> Result<DeviceId, Error> {
    let stored = log
        .local_get(DEVICE_ID_RECORD)
        .map_err(|e| Error::Log(e.to_string()))?;
    match stored.as_deref() {
        Some([DEVICE_ID_FORMAT_VERSION, rest @ ..]) => {
            let id: [u8; 16] = rest.try_into().map_err(|_| Error::CorruptRecord {
                what: DEVICE_ID_RECORD.to_owned(),
                reason: format!("{} bytes after the version, expected 16", rest.len()),
            })?;
            Ok(DeviceId(id))
        }
        Some([found, ..]) => Err(Error::UnknownRecordVersion {
            what: DEVICE_ID_RECORD.to_owned(),
            found: *found,
            supported: DEVICE_ID_FORMAT_VERSION,
        }),
        Some([]) => Err(Error::CorruptRecord {
            what: DEVICE_ID_RECORD.to_owned(),
            reason: "the record is empty".to_owned(),
        }),
        None => {
            let id = DeviceId::random();
            let mut record = vec![DEVICE_ID_FORMAT_VERSION];
            record.extend_from_slice(&id.0);
            log.local_put(DEVICE_ID_RECORD, &record)
                .map_err(|e| Error::Log(e.to_string()))?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                           abandon abandon about";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn backup_secret_is_fixed_by_mnemonic_and_passphrase() {
        let keys = Keys::from_phrase(ABANDON, None).unwrap();
        let secret = keys.backup_secret();
        // The test vector in docs/FORMAT.md: changing the path or the derivation breaks every
        // existing backup, so this value must never change.
        assert_eq!(hex(secret.as_slice()), ABANDON_BACKUP_SECRET);
        let with_passphrase = Keys::from_phrase(ABANDON, Some("TREZOR")).unwrap();
        assert_ne!(*with_passphrase.backup_secret(), *secret);
        assert_ne!(*Keys::generate().backup_secret(), *secret);
    }

    /// The backup secret of the all-`abandon` mnemonic (no passphrase) at `m/9735'/1'/0'`,
    /// computed independently of this code (PBKDF2 and HMAC-SHA512 by hand, per BIP39/BIP32).
    const ABANDON_BACKUP_SECRET: &str =
        "dc904038e950ba91fc76cebcdf3634001ebd82e889ccca88225df84f70f71e33";

    #[test]
    fn generated_phrases_import_back() {
        let keys = Keys::generate();
        let phrase = keys.phrase();
        assert_eq!(phrase.split(' ').count(), 12);
        let again = Keys::from_phrase(&phrase, None).unwrap();
        assert_eq!(*again.backup_secret(), *keys.backup_secret());
    }

    #[test]
    fn errors_and_debug_never_show_words() {
        let keys = Keys::from_phrase(ABANDON, Some("secret passphrase")).unwrap();
        let debug = format!("{keys:?}");
        assert!(!debug.contains("abandon") && !debug.contains("secret"));

        let wrong_word = ABANDON.replace("about", "zzzzz");
        let err = Keys::from_phrase(&wrong_word, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("word 12"), "{err}");
        assert!(!err.contains("zzzzz") && !err.contains("abandon"), "{err}");

        let bad_checksum = ABANDON.replace("about", "abandon");
        let err = Keys::from_phrase(&bad_checksum, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(!err.contains("abandon"), "{err}");

        let err = Keys::from_phrase("abandon abandon", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 words"), "{err}");
    }

    #[test]
    fn device_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("till.redb");
        let first = {
            let log = Log::open(&path).unwrap();
            let id = device_id(&log).unwrap();
            assert_eq!(device_id(&log).unwrap(), id);
            // Device-local: no event was written, so nothing of it is ever shipped.
            assert_eq!(log.head().unwrap().seq, 0);
            id
        };
        let log = Log::open(&path).unwrap();
        assert_eq!(device_id(&log).unwrap(), first);

        let other = tempfile::tempdir().unwrap();
        let log = Log::open(other.path().join("till.redb")).unwrap();
        assert_ne!(device_id(&log).unwrap(), first);
    }

    #[test]
    fn device_id_of_an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("till.redb")).unwrap();
        log.local_put(DEVICE_ID_RECORD, &[2; 17]).unwrap();
        assert!(matches!(
            device_id(&log),
            Err(Error::UnknownRecordVersion { found: 2, .. })
        ));
        log.local_put(DEVICE_ID_RECORD, &[1; 5]).unwrap();
        assert!(matches!(device_id(&log), Err(Error::CorruptRecord { .. })));
    }
}
