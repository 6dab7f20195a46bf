//! The storage seam: one trait, two backends (embedded redb, PostgreSQL).
//!
//! Everything a `putObjects` changes travels as one [`PutTransaction`] and each backend applies it in
//! one database transaction, checking every condition first. The store's lease (DESIGN.md R4),
//! which must change atomically with the head write that carries it, is a field of
//! [`PutTransaction`] and is checked and written inside the same backend transaction.

pub(crate) mod postgres;
pub(crate) mod redb;

use async_trait::async_trait;
use till_vss::replica::{
    LEASE_FORMAT_VERSION, LEASE_HEADER_LEN, LEASE_MAGIC, LeaseHeader, LeaseState,
};

/// The number a backend gave a user when it was created. Objects are keyed by it, never by name or
/// token, so a token can be replaced without moving data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UserId(pub(crate) i64);

/// The stored half of a bearer token: the public id that finds it, and the blake3 hash of its secret.
#[derive(Clone, Debug)]
pub(crate) struct Credential {
    pub(crate) token_id: [u8; 16],
    pub(crate) secret_hash: [u8; 32],
}

/// What a bearer token may do. Owner tokens are the merchant's devices (everything); cashier tokens
/// are for the point-of-sale page: create and view invoices, nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The merchant's devices: VSS, lease, hub, invoices, payments.
    Owner,
    /// The point-of-sale page: create and view invoices only.
    Cashier,
}

impl Role {
    /// The stored code: 1 owner, 2 cashier.
    pub(crate) fn code(self) -> u8 {
        match self {
            Role::Owner => 1,
            Role::Cashier => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Result<Role, StoreError> {
        match code {
            1 => Ok(Role::Owner),
            2 => Ok(Role::Cashier),
            other => Err(StoreError::new(
                "corrupt token record",
                format!("unknown role code {other}"),
            )),
        }
    }

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Cashier => "cashier",
        }
    }
}

/// A token as the store keeps it: whose it is, the hash of its secret, and its role.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredToken {
    pub(crate) user: UserId,
    pub(crate) secret_hash: [u8; 32],
    pub(crate) role: Role,
}

/// A single-use invitation: only the blake3 hash of its code is stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Invite {
    pub(crate) user: UserId,
    /// Unix milliseconds after which it no longer redeems.
    pub(crate) expires_ms: i64,
}

/// Why an invitation did not redeem.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedeemError {
    #[error("unknown invitation code")]
    Unknown,
    #[error("this invitation was already redeemed (at unix ms {at_ms})")]
    Used { at_ms: i64 },
    #[error("this invitation expired (at unix ms {expires_ms})")]
    Expired { expires_ms: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store invoice's status: `new` until paid or expired; `paid` is final, and `expired` turns
/// `paid` when the master reports the payment after all (see [`finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InvoiceStatus {
    New,
    Paid,
    Expired,
}

/// A store invoice as the server tracks it. Its id is the payment hash (hex), unique per invoice.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct InvoiceRecord {
    pub(crate) id: String,
    pub(crate) bolt11: String,
    pub(crate) amount_sat: u64,
    pub(crate) description: String,
    pub(crate) status: InvoiceStatus,
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) paid_ms: Option<i64>,
    /// What the master reported received, when paid.
    pub(crate) received_msat: Option<u64>,
}

/// The version byte in front of a stored invoice record (then JSON), in both backends.
pub(crate) const INVOICE_RECORD_V1: u8 = 1;

pub(crate) fn encode_invoice(record: &InvoiceRecord) -> Vec<u8> {
    let mut out = vec![INVOICE_RECORD_V1];
    out.extend_from_slice(&serde_json::to_vec(record).unwrap_or_default());
    out
}

pub(crate) fn decode_invoice(bytes: &[u8]) -> Result<InvoiceRecord, StoreError> {
    match bytes.split_first() {
        Some((&INVOICE_RECORD_V1, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::new("corrupt invoice record", e))
        }
        Some((v, _)) => Err(StoreError::new(
            "invoice record of unknown format",
            format!("version {v}"),
        )),
        None => Err(StoreError::new("corrupt invoice record", "empty")),
    }
}

/// A key's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) version: i64,
    pub(crate) value: Vec<u8>,
}

/// One write of a `putObjects`: `expected` is -1 (unconditional), 0 (create) or the current version.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) expected: i64,
    pub(crate) value: Vec<u8>,
}

/// One delete item of a `putObjects`: `expected` is -1 (any version) or the current version.
#[derive(Clone, Debug)]
pub(crate) struct Delete {
    pub(crate) key: String,
    pub(crate) expected: i64,
}

/// The lease header of a head write in a `putObjects`, to be recorded as the store's lease.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseWrite {
    pub(crate) header: LeaseHeader,
    /// Whether the write must pass [`lease_allows`]; off (`--no-lease-check`), the server behaves
    /// like a stock VSS server and only records the header.
    pub(crate) enforce: bool,
}

/// Everything one `putObjects` changes, applied all-or-nothing in one backend transaction, in this
/// order: the lease, then writes, then deletes, then the global version (a key named twice sees its
/// earlier item).
#[derive(Clone, Debug)]
pub(crate) struct PutTransaction {
    pub(crate) store_id: String,
    pub(crate) global_version: Option<i64>,
    pub(crate) writes: Vec<Write>,
    pub(crate) deletes: Vec<Delete>,
    /// Set when a write carries a lease header (a head object); stored as the store's lease when
    /// the transaction commits.
    pub(crate) lease: Option<LeaseWrite>,
}

/// Whether a head write under `new` may replace the `stored` lease (DESIGN.md R4): when the store
/// has no lease yet; with a higher epoch (an acquire after a release, or a confirmed takeover, both
/// bump it); or at the same epoch from the same device (the holder's own writes and its release).
/// A lower epoch, or the same epoch from another device, is refused. No clock is involved.
pub(crate) fn lease_allows(stored: Option<&LeaseHeader>, new: &LeaseHeader) -> bool {
    match stored {
        None => true,
        Some(s) => new.epoch > s.epoch || (new.epoch == s.epoch && new.device == s.device),
    }
}

/// Checks `write` against the `stored` lease of `store_id`; the conflict names the holder.
pub(crate) fn check_lease(
    store_id: &str,
    stored: Option<&LeaseHeader>,
    write: &LeaseWrite,
) -> Result<(), Conflict> {
    match stored {
        Some(holder) if write.enforce && !lease_allows(stored, &write.header) => {
            Err(Conflict::Lease {
                store_id: store_id.to_owned(),
                holder: *holder,
                writer: write.header,
            })
        }
        _ => Ok(()),
    }
}

/// What did not match when a transaction was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Conflict {
    #[error("key {key:?} was written at version {expected} but {}", found_text(*found))]
    Write {
        key: String,
        expected: i64,
        found: Option<i64>,
    },
    #[error("key {key:?} was to be deleted at version {expected} but {}", found_text(*found))]
    Delete {
        key: String,
        expected: i64,
        found: Option<i64>,
    },
    #[error("the global version was given as {expected} but is {found}")]
    GlobalVersion { expected: i64, found: i64 },
    #[error("{}", lease_text(store_id, holder, writer))]
    Lease {
        store_id: String,
        holder: LeaseHeader,
        writer: LeaseHeader,
    },
}

fn lease_text(store_id: &str, holder: &LeaseHeader, writer: &LeaseHeader) -> String {
    let held = match holder.state {
        LeaseState::Held => format!(
            "is held by device {} (epoch {})",
            holder.device, holder.epoch
        ),
        LeaseState::Released => format!(
            "was released by device {} (epoch {}); acquiring it takes epoch {}",
            holder.device,
            holder.epoch,
            holder.epoch.saturating_add(1)
        ),
    };
    format!(
        "the lease of store {store_id:?} {held}; device {} (epoch {}) may not write",
        writer.device, writer.epoch
    )
}

fn found_text(found: Option<i64>) -> String {
    match found {
        Some(v) => format!("is at version {v}"),
        None => "does not exist".to_owned(),
    }
}

/// Why a put was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PutError {
    #[error("{0}")]
    Conflict(Conflict),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backend failed (I/O, database down, corrupt record). Never a protocol answer.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct StoreError {
    context: &'static str,
    detail: String,
    cause: Cause,
}

/// What kind of failure a [`StoreError`] is, so that a client is told the cause (a full disk, an
/// unreachable database) without the internals, which go to the server's log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Anything else: a bug, a corrupt record.
    Other,
    /// The disk (or the database's disk) is full.
    Full,
    /// The disk failed to read or write.
    Io,
    /// The database cannot be reached (down, restarting, connection lost).
    Unavailable,
}

impl StoreError {
    pub(crate) fn new(context: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError {
            context,
            detail: detail.to_string(),
            cause: Cause::Other,
        }
    }

    /// The same error, of this cause.
    pub(crate) fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }

    pub(crate) fn cause(&self) -> Cause {
        self.cause
    }

    /// What a client is told: the HTTP status (503 for what goes away by itself) and a message
    /// that names the cause and nothing else.
    pub(crate) fn for_client(&self) -> (u16, &'static str) {
        match self.cause {
            Cause::Full => (
                503,
                "the server's disk is full, so nothing was written; retry later",
            ),
            Cause::Unavailable => (
                503,
                "the server's database is unreachable (down or restarting); retry later",
            ),
            Cause::Io => (500, "the server's disk failed (an I/O error); retry later"),
            Cause::Other => (500, "the server's store failed; retry later"),
        }
    }
}

/// One listed key: its name, current version and its creation cursor (the order of listings).
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) version: i64,
    pub(crate) created: i64,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateUserError {
    #[error("a user named {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A backend. Every object is scoped by (user, store_id, key).
#[async_trait]
pub(crate) trait Storage: Send + Sync + 'static {
    /// Succeeds when the backend answers a trivial read.
    async fn health(&self) -> Result<(), StoreError>;

    async fn create_user(
        &self,
        name: &str,
        credential: &Credential,
    ) -> Result<UserId, CreateUserError>;

    /// The token with this id, if it exists.
    async fn credential(&self, token_id: [u8; 16]) -> Result<Option<StoredToken>, StoreError>;

    /// The user (store) of this name, created without a token when `create` and missing.
    async fn user_by_name(&self, name: &str, create: bool) -> Result<Option<UserId>, StoreError>;

    /// The name of a user (store).
    async fn user_name(&self, user: UserId) -> Result<String, StoreError>;

    /// Adds a token of `role` to an existing user.
    async fn add_token(
        &self,
        user: UserId,
        credential: &Credential,
        role: Role,
    ) -> Result<(), StoreError>;

    /// Records an invitation under the hash of its code.
    async fn create_invite(&self, code_hash: [u8; 32], invite: Invite) -> Result<(), StoreError>;

    /// Redeems an invitation at `now_ms`, in one transaction: marks it used and adds `credential`
    /// as an owner token of its user. Returns the user.
    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        now_ms: i64,
        credential: &Credential,
    ) -> Result<UserId, RedeemError>;

    /// Every lease of the user's stores (VSS store id, lease).
    async fn leases(&self, user: UserId) -> Result<Vec<(String, LeaseHeader)>, StoreError>;

    /// Stores a new invoice; an invoice of the same id is replaced.
    async fn put_invoice(&self, user: UserId, invoice: &InvoiceRecord) -> Result<(), StoreError>;

    async fn invoice(&self, user: UserId, id: &str) -> Result<Option<InvoiceRecord>, StoreError>;

    /// The user's invoices, newest first.
    async fn invoices(&self, user: UserId) -> Result<Vec<InvoiceRecord>, StoreError>;

    /// Every user's invoices that are still `new` and were created at or after `since_ms`
    /// (older ones are past the longest expiry): what a starting server must expire in time.
    async fn open_invoices(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(UserId, InvoiceRecord)>, StoreError>;

    /// Moves invoice `id` from `new` to `to`, or from `expired` to `paid`, in one transaction
    /// (`paid_ms`, `received_msat` set for paid). Returns the changed record, or `None` if it is
    /// missing or cannot move (`paid` is final).
    async fn finish_invoice(
        &self,
        user: UserId,
        id: &str,
        to: InvoiceStatus,
        at_ms: i64,
        received_msat: Option<u64>,
    ) -> Result<Option<InvoiceRecord>, StoreError>;

    async fn get(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
    ) -> Result<Option<Object>, StoreError>;

    /// The store's global version: 0 when never written.
    async fn global_version(&self, user: UserId, store_id: &str) -> Result<i64, StoreError>;

    /// Applies the whole transaction or, on the first mismatch, nothing.
    async fn put(&self, user: UserId, tx: PutTransaction) -> Result<(), PutError>;

    /// The store's lease as the last accepted head write left it, if any head was ever written.
    async fn lease(&self, user: UserId, store_id: &str) -> Result<Option<LeaseHeader>, StoreError>;

    /// Deletes the key if it exists at `expected` (-1: at any version); otherwise does nothing.
    async fn delete(
        &self,
        user: UserId,
        store_id: &str,
        key: &str,
        expected: i64,
    ) -> Result<(), StoreError>;

    /// Up to `limit` keys starting with `prefix`, newest first, created before `before` if given.
    async fn list(
        &self,
        user: UserId,
        store_id: &str,
        prefix: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError>;
}

/// Applies a status change to a record that is still `new`; `None` if it is not.
pub(crate) fn finish(
    mut record: InvoiceRecord,
    to: InvoiceStatus,
    at_ms: i64,
    received_msat: Option<u64>,
) -> Option<InvoiceRecord> {
    // `paid` is what the master's node received, and it wins over `expired`, which is only the
    // server's clock: a payment made just before the expiry, whose update arrives after it (or
    // after a lost hub session), still turns the invoice paid. Nothing leaves `paid`.
    let moves = match record.status {
        InvoiceStatus::New => true,
        InvoiceStatus::Expired => to == InvoiceStatus::Paid,
        InvoiceStatus::Paid => false,
    };
    if !moves {
        return None;
    }
    record.status = to;
    if to == InvoiceStatus::Paid {
        record.paid_ms = Some(at_ms);
        record.received_msat = received_msat;
    }
    Some(record)
}

/// The lease state as stored: 1 held, 2 released (the lease header's own codes).
pub(crate) fn state_code(state: LeaseState) -> u8 {
    match state {
        LeaseState::Held => 1,
        LeaseState::Released => 2,
    }
}

/// A lease from its stored fields. It goes through the lease header's decoder, so a field no
/// writer produces reads as a corrupt record instead of a lease.
pub(crate) fn lease_from_fields(
    device: &[u8],
    epoch: u64,
    state: u8,
) -> Result<LeaseHeader, StoreError> {
    let device: [u8; 16] = device.try_into().map_err(|_| {
        StoreError::new(
            "corrupt lease record",
            format!("device id of {} bytes", device.len()),
        )
    })?;
    let mut header = [0u8; LEASE_HEADER_LEN];
    header[..4].copy_from_slice(&LEASE_MAGIC);
    header[4] = LEASE_FORMAT_VERSION;
    header[5] = state;
    header[8..24].copy_from_slice(&device);
    header[24..].copy_from_slice(&epoch.to_le_bytes());
    LeaseHeader::decode(&header).map_err(|e| StoreError::new("corrupt lease record", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(device: u8, epoch: u64, state: u8) -> LeaseHeader {
        lease_from_fields(&[device; 16], epoch, state).unwrap()
    }

    fn write(device: u8, epoch: u64, enforce: bool) -> LeaseWrite {
        LeaseWrite {
            header: lease(device, epoch, 1),
            enforce,
        }
    }

    #[test]
    fn paid_wins_over_expired_and_is_final() {
        let record = |status| InvoiceRecord {
            id: "ab".repeat(32),
            bolt11: "lnbcrt1".into(),
            amount_sat: 1,
            description: String::new(),
            status,
            created_ms: 0,
            expires_ms: 10,
            paid_ms: None,
            received_msat: None,
        };
        use InvoiceStatus::{Expired, New, Paid};
        let paid = finish(record(New), Paid, 5, Some(1000)).unwrap();
        assert_eq!(
            (paid.status, paid.paid_ms, paid.received_msat),
            (Paid, Some(5), Some(1000))
        );
        assert_eq!(
            finish(record(New), Expired, 11, None).unwrap().status,
            Expired
        );
        // A payment's update that arrives after the server expired the invoice.
        let late = finish(record(Expired), Paid, 12, Some(1000)).unwrap();
        assert_eq!((late.status, late.paid_ms), (Paid, Some(12)));
        assert!(finish(record(Expired), Expired, 12, None).is_none());
        assert!(finish(record(Paid), Expired, 12, None).is_none());
        assert!(finish(record(Paid), Paid, 12, Some(1)).is_none());
    }

    #[test]
    fn the_lease_rule_follows_r4() {
        let held = lease(0xa, 3, 1);
        let released = lease(0xa, 3, 2);
        // A new store takes any lease.
        assert!(lease_allows(None, &lease(0xb, 0, 1)));
        for stored in [held, released] {
            // The holder's own writes and its release.
            assert!(lease_allows(Some(&stored), &lease(0xa, 3, 1)));
            assert!(lease_allows(Some(&stored), &lease(0xa, 3, 2)));
            // An acquire after a release or a takeover bumps the epoch, by any device.
            assert!(lease_allows(Some(&stored), &lease(0xb, 4, 1)));
            assert!(lease_allows(Some(&stored), &lease(0xa, 9, 1)));
            // Another device at the same epoch, anyone at a lower one: refused.
            assert!(!lease_allows(Some(&stored), &lease(0xb, 3, 1)));
            assert!(!lease_allows(Some(&stored), &lease(0xa, 2, 1)));
            assert!(!lease_allows(Some(&stored), &lease(0xb, 2, 2)));
        }
    }

    #[test]
    fn a_refused_lease_names_the_holder_and_the_writer() {
        let holder = lease(0xa, 3, 1);
        let conflict = check_lease("S", Some(&holder), &write(0xb, 3, true)).unwrap_err();
        assert_eq!(
            conflict.to_string(),
            format!(
                "the lease of store \"S\" is held by device {} (epoch 3); device {} (epoch 3) may not write",
                "0a".repeat(16),
                "0b".repeat(16)
            )
        );
        let released = lease(0xa, 3, 2);
        let text = check_lease("S", Some(&released), &write(0xb, 2, true))
            .unwrap_err()
            .to_string();
        assert!(text.contains(&"0a".repeat(16)), "{text}");
        assert!(text.contains("takes epoch 4"), "{text}");
        // Without enforcement every write passes; the lease is only recorded.
        assert!(check_lease("S", Some(&holder), &write(0xb, 1, false)).is_ok());
        assert!(check_lease("S", None, &write(0xb, 1, true)).is_ok());
    }

    #[test]
    fn stored_lease_fields_round_trip_and_refuse_corruption() {
        let l = lease(7, u64::from(u32::MAX) + 5, 2);
        assert_eq!(
            (l.device.0, l.epoch, l.state),
            ([7; 16], u64::from(u32::MAX) + 5, LeaseState::Released)
        );
        assert_eq!(state_code(l.state), 2);
        assert!(lease_from_fields(&[7; 16], 1, 3).is_err());
        assert!(lease_from_fields(&[7; 15], 1, 1).is_err());
    }
}
