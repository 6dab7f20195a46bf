//! Replay and audit for developers (DESIGN.md section 4): the node's state at any seq or time,
//! the keys changed between two points, the local hash chain checked against the server's head,
//! and decoded views of the records whose types Till knows.
//!
//! Everything here reads; nothing writes to the log or the remote, and no node is started from a
//! past state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ldk_node::bitcoin::hashes::Hash as _;
use ldk_node::bitcoin::p2p::Magic;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{BlockHash, Network, OutPoint, ScriptBuf, Txid};
use ldk_node::lightning::chain::channelmonitor::ChannelMonitorUpdate;
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
    MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use ldk_node::lightning::util::ser::{BigSize, CollectionLength, Readable};
use ldk_node::payment::PaymentDetails;
use till_log::{Hash, Key, Log, Op, State, VerifyReport};
use till_vss::replica::{Remote, RemoteError, RestoreError, Target, restore_state};

use crate::error::Error;
use crate::node::{PAYMENTS, PaymentRecord, REFUNDS, RefundRecord, TILL_NAMESPACE, decode};

/// ldk-node's payment store: one `PaymentDetails` (LDK TLV encoding) per payment, keyed by the
/// payment id in hex (ldk-node 0.7.1 `io::PAYMENT_INFO_PERSISTENCE_PRIMARY_NAMESPACE`, which it
/// does not export).
pub const LDK_PAYMENTS_NAMESPACE: &str = "payments";
/// ldk-node's on-chain wallet: BDK changesets in ldk-node's own encoding, one key per part
/// (ldk-node 0.7.1 `io::BDK_WALLET_*_PRIMARY_NAMESPACE`).
pub const BDK_WALLET_NAMESPACE: &str = "bdk_wallet";

/// ldk-node's version byte in front of each BDK changeset (`wallet/ser.rs`).
const BDK_CHANGESET_VERSION: u8 = 1;

/// A point in the log's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The latest event.
    Head,
    /// Right after the event with this seq (0: before the first event).
    Seq(u64),
    /// At this time, unix milliseconds: after the last event at or before it.
    Time(u64),
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Head => write!(f, "the head"),
            Point::Seq(seq) => write!(f, "seq {seq}"),
            Point::Time(ms) => write!(f, "time {ms} ms"),
        }
    }
}

/// How one key changed between two points.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// Absent (or deleted) before, live after, at `version`.
    Added {
        /// The version it has after.
        version: u64,
    },
    /// Live before and after, with another version.
    Changed {
        /// The version before.
        from: u64,
        /// The version after.
        to: u64,
    },
    /// Live before, deleted after.
    Removed {
        /// The last live version.
        version: u64,
        /// The tombstone's version.
        tombstone: u64,
    },
    /// Absent before and after, but written (and removed again) in between.
    Transient {
        /// The tombstone's version after.
        tombstone: u64,
    },
}

/// One key that changed between two points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Key,
    /// How it changed.
    pub kind: ChangeKind,
    /// Events of this key in the range.
    pub events: u64,
    /// Value size before, if it was live.
    pub size_before: Option<usize>,
    /// Value size after, if it is live.
    pub size_after: Option<usize>,
}

/// The keys changed between two points, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// The seq of the earlier point.
    pub from_seq: u64,
    /// The seq of the later point.
    pub to_seq: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

/// One version of a key, from [`Audit::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// The event's seq.
    pub seq: u64,
    /// The key's version it set.
    pub version: u64,
    /// The event's time, unix ms.
    pub at_ms: u64,
    /// The value, or `None` for a removal.
    pub value: Option<Vec<u8>>,
}

/// How the local log stands against the server's head.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteStatus {
    /// The store holds no backup yet.
    NoBackup,
    /// Both end at the same event.
    InSync {
        /// The common last seq.
        seq: u64,
    },
    /// The local log continues the remote one: events after `remote_seq` are not shipped yet.
    Ahead {
        /// The local head.
        local_seq: u64,
        /// The remote's last seq.
        remote_seq: u64,
    },
    /// The remote log continues the local one (another device wrote after this one last
    /// synced). `checked` tells whether the remote history at the local head was fetched and
    /// matched; it is not when the remote no longer keeps that point (a snapshot after it).
    Behind {
        /// The local head.
        local_seq: u64,
        /// The remote's last seq.
        remote_seq: u64,
        /// Whether the local head was found on the remote.
        checked: bool,
    },
    /// The two histories differ at `seq`: the same seq has different events.
    Diverged {
        /// Where they differ (the first point both have and compare).
        seq: u64,
        /// The local hash there.
        local: Hash,
        /// The remote hash there.
        remote: Hash,
    },
    /// The local log starts from a snapshot after the remote's last seq, so they cannot be
    /// compared.
    Incomparable {
        /// The local log's first point.
        local_base: u64,
        /// The remote's last seq.
        remote_seq: u64,
    },
}

/// The result of [`Audit::verify_remote`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCheck {
    /// The local chain's verification (it passed, or `verify_remote` failed).
    pub local: VerifyReport,
    /// The remote's lease epoch, if it has a head.
    pub remote_epoch: Option<u64>,
    /// The comparison.
    pub status: RemoteStatus,
}

/// Replay and audit over one log.
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a> {
    log: &'a Log,
}

impl<'a> Audit<'a> {
    /// Audits `log`.
    pub fn new(log: &'a Log) -> Self {
        Self { log }
    }

    /// The seq a point stands for.
    pub fn seq_of(&self, point: Point) -> Result<u64, Error> {
        Ok(match point {
            Point::Head => self.log.head()?.seq,
            Point::Seq(seq) => seq,
            Point::Time(ms) => self.log.seq_at(ms)?,
        })
    }

    /// The state as it was at `point`, rebuilt from the events (till-log's replay). Refuses a
    /// seq past the head, or before the snapshot a restored log starts from.
    pub fn state_at(&self, point: Point) -> Result<State, Error> {
        match point {
            Point::Head => Ok(self.log.state()?),
            Point::Seq(seq) => Ok(self.log.replay(seq)?),
            Point::Time(ms) => Ok(self.log.replay_at(ms)?),
        }
    }

    /// The keys that changed from `from` to `to` (`from` must not be later than `to`), with
    /// their versions before and after.
    pub fn diff(&self, from: Point, to: Point) -> Result<Diff, Error> {
        let (from_seq, to_seq) = (self.seq_of(from)?, self.seq_of(to)?);
        if from_seq > to_seq {
            return Err(Error::InvalidInput(format!(
                "{from} (seq {from_seq}) is after {to} (seq {to_seq})"
            )));
        }
        let before = self.log.replay(from_seq)?;
        let after = self.log.replay(to_seq)?;
        let mut touched: BTreeMap<Key, u64> = BTreeMap::new();
        let mut next = from_seq + 1;
        while next <= to_seq {
            let events = self.log.events(next, to_seq, 4096)?;
            let Some(last) = events.last() else { break };
            next = last.seq + 1;
            for event in events {
                *touched.entry(event.key).or_default() += 1;
            }
        }
        let changes = touched
            .into_iter()
            .filter_map(|(key, events)| {
                let old = before.entry(&key).filter(|e| e.is_live());
                let new = after.entry(&key)?;
                let kind = match (old, new.is_live()) {
                    (None, true) => ChangeKind::Added {
                        version: new.version,
                    },
                    (Some(old), true) => ChangeKind::Changed {
                        from: old.version,
                        to: new.version,
                    },
                    (Some(old), false) => ChangeKind::Removed {
                        version: old.version,
                        tombstone: new.version,
                    },
                    (None, false) => ChangeKind::Transient {
                        tombstone: new.version,
                    },
                };
                Some(Change {
                    size_before: old.and_then(|e| e.value.as_ref()).map(Vec::len),
                    size_after: new.value.as_ref().map(Vec::len),
                    key,
                    kind,
                    events,
                })
            })
            .collect();
        Ok(Diff {
            from_seq,
            to_seq,
            changes,
        })
    }

    /// Every version a key had, oldest first (a removal has no value).
    pub fn history(&self, key: &Key) -> Result<Vec<KeyVersion>, Error> {
        Ok(self
            .log
            .history(key)?
            .into_iter()
            .map(|e| KeyVersion {
                seq: e.seq,
                version: e.version,
                at_ms: e.at_ms,
                value: match e.op {
                    Op::Put(v) => Some(v),
                    Op::Delete => None,
                },
            })
            .collect())
    }

    /// Verifies the local chain (till-log's `verify`), then compares it with the server's head:
    /// the local event at the remote's last seq must hash to the head's `last_hash`. When the
    /// remote is ahead, fetches the remote history up to the local head (read-only) and compares
    /// there. Fails with [`Error::Log`] when the local chain itself is broken, and with
    /// [`Error::Replication`] (or [`Error::WrongKey`]) when the server cannot be read or its
    /// objects do not open.
    pub async fn verify_remote(&self, remote: &Remote) -> Result<RemoteCheck, Error> {
        let local = self
            .log
            .verify()
            .map_err(|e| Error::Log(format!("the local chain does not verify: {e}")))?;
        let Some((manifest, _version)) = remote.head().await.map_err(remote_error)? else {
            return Ok(RemoteCheck {
                local,
                remote_epoch: None,
                status: RemoteStatus::NoBackup,
            });
        };
        let base = self.log.base()?;
        let local_seq = local.head.seq;
        let remote_seq = manifest.last_seq;
        let status = if remote_seq < base.seq {
            RemoteStatus::Incomparable {
                local_base: base.seq,
                remote_seq,
            }
        } else if remote_seq <= local_seq {
            let here = self.hash_at(remote_seq)?;
            if here != manifest.last_hash {
                RemoteStatus::Diverged {
                    seq: remote_seq,
                    local: here,
                    remote: manifest.last_hash,
                }
            } else if remote_seq == local_seq {
                RemoteStatus::InSync { seq: local_seq }
            } else {
                RemoteStatus::Ahead {
                    local_seq,
                    remote_seq,
                }
            }
        } else {
            match restore_state(remote, Target::Seq(local_seq), |_| {}).await {
                Ok(state) if state.seq() == local_seq && state.hash() == local.head.hash => {
                    RemoteStatus::Behind {
                        local_seq,
                        remote_seq,
                        checked: true,
                    }
                }
                Ok(state) if state.seq() == local_seq => RemoteStatus::Diverged {
                    seq: local_seq,
                    local: local.head.hash,
                    remote: state.hash(),
                },
                // The remote keeps that point only inside a later snapshot.
                Ok(_) | Err(RestoreError::Plan(_)) => RemoteStatus::Behind {
                    local_seq,
                    remote_seq,
                    checked: false,
                },
                Err(RestoreError::Remote(e)) => return Err(remote_error(e)),
                Err(e) => return Err(Error::Replication(e.to_string())),
            }
        };
        Ok(RemoteCheck {
            local,
            remote_epoch: Some(manifest.epoch),
            status,
        })
    }

    /// Hash of the event at `seq` (the genesis hash at 0, the base's at a restored log's base).
    fn hash_at(&self, seq: u64) -> Result<Hash, Error> {
        if seq == 0 {
            return Ok(Hash::GENESIS);
        }
        let base = self.log.base()?;
        if seq == base.seq {
            return Ok(base.hash);
        }
        self.log
            .event(seq)?
            .map(|e| e.hash())
            .ok_or_else(|| Error::Log(format!("the local log does not hold seq {seq}")))
    }
}

fn remote_error(e: RemoteError) -> Error {
    match e {
        RemoteError::WrongKey => Error::WrongKey,
        other => Error::Replication(other.to_string()),
    }
}

/// A payment the till's event loop recorded under `till/payments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedPayment {
    /// The payment.
    pub payment_id: PaymentId,
    /// Received (true) or sent.
    pub inbound: bool,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// Its amount, if known.
    pub amount_msat: Option<u64>,
    /// The routing fee paid, for a sent payment.
    pub fee_paid_msat: Option<u64>,
    /// When the event loop recorded it, unix ms.
    pub at_ms: u64,
}

/// A refund recorded under `till/refunds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRefund {
    /// The refund's own payment.
    pub payment_id: PaymentId,
    /// The payment it refunds.
    pub original: PaymentId,
    /// The amount refunded.
    pub amount_msat: u64,
    /// When it was recorded, unix ms.
    pub at_ms: u64,
}

/// What the start of a channel monitor says (LDK 0.2's layout, which ldk-node 0.7.1 pins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorView {
    /// The channel's funding outpoint.
    pub funding_txo: OutPoint,
    /// The channel's capacity.
    pub channel_value_sats: u64,
    /// The last monitor update folded into this copy.
    pub latest_update_id: u64,
}

/// A channel monitor update (`monitor_updates/<monitor>/<update id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorUpdateView {
    /// The monitor it applies to (its key).
    pub monitor: String,
    /// The update's id.
    pub update_id: u64,
    /// The channel, if the update names it.
    pub channel_id: Option<[u8; 32]>,
}

/// Which of the on-chain wallet's two descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keychain {
    /// Receive addresses.
    External,
    /// Change addresses.
    Internal,
}

/// One part of the on-chain wallet's BDK changeset, as ldk-node persists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalletRecord {
    /// A public descriptor (no private keys are ever stored).
    Descriptor {
        /// Which one.
        keychain: Keychain,
        /// The descriptor string.
        descriptor: String,
    },
    /// The wallet's network.
    Network(Network),
    /// The wallet's local chain: block heights it keeps.
    LocalChain {
        /// Blocks kept.
        blocks: usize,
        /// The highest.
        tip: Option<u32>,
    },
    /// The wallet's transaction graph.
    TxGraph {
        /// Full transactions.
        txs: u64,
        /// Floating outputs.
        txouts: u64,
        /// Confirmation anchors.
        anchors: u64,
    },
    /// The last revealed derivation index per descriptor.
    Indexer {
        /// Last revealed index of each descriptor.
        last_revealed: Vec<u32>,
    },
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// ldk-node's payment record.
    Payment(PaymentDetails),
    /// Till's record of a payment outcome.
    TillPayment(RecordedPayment),
    /// Till's record of a refund.
    Refund(RecordedRefund),
    /// A channel monitor.
    Monitor(MonitorView),
    /// A channel monitor update.
    MonitorUpdate(MonitorUpdateView),
    /// A part of the on-chain wallet.
    Wallet(WalletRecord),
}

/// Decodes a record whose key names a known kind: `Ok(None)` for keys of other kinds, an error
/// for a known kind whose bytes do not decode.
pub fn decode_record(key: &Key, value: &[u8]) -> Result<Option<Record>, Error> {
    let corrupt = |reason: String| Error::CorruptRecord {
        what: key.to_string(),
        reason,
    };
    let (ns, sub, name) = (
        key.namespace.as_str(),
        key.sub_namespace.as_str(),
        key.key.as_str(),
    );
    Ok(Some(match (ns, sub) {
        (TILL_NAMESPACE, PAYMENTS) => {
            let record: PaymentRecord = decode(key, value)?;
            Record::TillPayment(RecordedPayment {
                payment_id: payment_id(key)?,
                inbound: record.inbound,
                succeeded: record.succeeded,
                amount_msat: record.amount_msat,
                fee_paid_msat: record.fee_paid_msat,
                at_ms: record.at_ms,
            })
        }
        (TILL_NAMESPACE, REFUNDS) => {
            let record: RefundRecord = decode(key, value)?;
            Record::Refund(RecordedRefund {
                payment_id: payment_id(key)?,
                original: PaymentId(record.original),
                amount_msat: record.amount_msat,
                at_ms: record.at_ms,
            })
        }
        (LDK_PAYMENTS_NAMESPACE, "") => Record::Payment(
            PaymentDetails::read(&mut &value[..]).map_err(|e| corrupt(format!("{e:?}")))?,
        ),
        (CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, "") => {
            Record::Monitor(decode_monitor(value).map_err(corrupt)?)
        }
        (CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE, monitor) if !monitor.is_empty() => {
            let update = ChannelMonitorUpdate::read(&mut &value[..])
                .map_err(|e| corrupt(format!("{e:?}")))?;
            Record::MonitorUpdate(MonitorUpdateView {
                monitor: monitor.to_owned(),
                update_id: update.update_id,
                channel_id: update.channel_id.map(|c| c.0),
            })
        }
        (BDK_WALLET_NAMESPACE, "") => match decode_wallet(name, value) {
            Some(record) => Record::Wallet(record.map_err(corrupt)?),
            None => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

/// A one-line description of a record for people (the CLI's `audit export`): what the record
/// says for known kinds, `None` for other keys. A known kind that does not decode is described
/// as damaged rather than skipped.
pub fn describe(key: &Key, value: &[u8]) -> Option<String> {
    let record = match decode_record(key, value) {
        Ok(Some(record)) => record,
        Ok(None) => return describe_other(key, value),
        Err(e) => return Some(format!("undecodable: {e}")),
    };
    Some(match record {
        Record::Payment(p) => format!(
            "ldk payment {:?} {:?}{}{}, kind {}, updated at {} s",
            p.direction,
            p.status,
            msat(" ", p.amount_msat),
            msat(" fee ", p.fee_paid_msat),
            payment_kind(&p.kind),
            p.latest_update_timestamp
        ),
        Record::TillPayment(p) => format!(
            "till payment {} {}{}{} at {} ms",
            if p.inbound { "received" } else { "sent" },
            if p.succeeded { "succeeded" } else { "failed" },
            msat(" ", p.amount_msat),
            msat(" fee ", p.fee_paid_msat),
            p.at_ms
        ),
        Record::Refund(r) => format!(
            "refund of {} msat against payment {} at {} ms",
            r.amount_msat,
            hex(&r.original.0),
            r.at_ms
        ),
        Record::Monitor(m) => format!(
            "channel monitor: funding {}, {} sat, update {}",
            m.funding_txo, m.channel_value_sats, m.latest_update_id
        ),
        Record::MonitorUpdate(u) => {
            format!("monitor update {} for {}", u.update_id, u.monitor)
        }
        Record::Wallet(w) => match w {
            WalletRecord::Descriptor {
                keychain,
                descriptor,
            } => format!(
                "wallet {keychain:?} descriptor {}",
                descriptor.split('(').next().unwrap_or("?")
            ),
            WalletRecord::Network(n) => format!("wallet network {n}"),
            WalletRecord::LocalChain { blocks, tip } => {
                format!("wallet local chain: {blocks} blocks, tip {tip:?}")
            }
            WalletRecord::TxGraph {
                txs,
                txouts,
                anchors,
            } => format!("wallet tx graph: {txs} txs, {txouts} txouts, {anchors} anchors"),
            WalletRecord::Indexer { last_revealed } => {
                format!("wallet indexer: last revealed {last_revealed:?}")
            }
        },
    })
}

/// Kinds Till knows by name but does not decode.
fn describe_other(key: &Key, value: &[u8]) -> Option<String> {
    let what = if key.namespace == CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE
        && key.key == CHANNEL_MANAGER_PERSISTENCE_KEY
    {
        "channel manager"
    } else if key.namespace.is_empty() {
        match key.key.as_str() {
            "network_graph" => "network graph",
            "scorer" => "scorer",
            "events" => "ldk-node event queue",
            "peers" => "peer list",
            "node_metrics" => "node metrics",
            _ => return None,
        }
    } else {
        return None;
    };
    Some(format!("{what}, {} bytes", value.len()))
}

/// One key of a state in summary: what every record gets, decoded or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySummary {
    /// The key.
    pub key: Key,
    /// Its version.
    pub version: u64,
    /// The seq that wrote it.
    pub seq: u64,
    /// Its value's size.
    pub size: usize,
    /// What it says, for known kinds.
    pub description: Option<String>,
}

/// A channel as the log's monitors show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelView {
    /// The monitor's key (`<funding txid>_<index>`, or a channel id for v2 channels).
    pub monitor_key: String,
    /// The monitor key's version (how many times the full monitor was rewritten).
    pub monitor_version: u64,
    /// The monitor's size.
    pub monitor_bytes: usize,
    /// What the monitor says, if it decodes.
    pub monitor: Option<MonitorView>,
    /// Why it did not decode.
    pub undecodable: Option<String>,
    /// Updates stored beside the monitor (not yet folded into it).
    pub pending_updates: usize,
}

/// Decoded views over one state (the head, or any past point from [`Audit::state_at`]).
#[derive(Clone, Copy, Debug)]
pub struct Records<'s> {
    state: &'s State,
}

impl<'s> Records<'s> {
    /// Views over `state`.
    pub fn new(state: &'s State) -> Self {
        Self { state }
    }

    fn namespace(&self, ns: &'s str, sub: &'s str) -> impl Iterator<Item = (&'s Key, &'s [u8])> {
        self.state
            .live()
            .filter(move |(k, _)| k.namespace == ns && k.sub_namespace == sub)
    }

    /// ldk-node's payment records, oldest update first.
    pub fn payments(&self) -> Result<Vec<PaymentDetails>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.namespace(LDK_PAYMENTS_NAMESPACE, "") {
            if let Some(Record::Payment(p)) = decode_record(key, value)? {
                out.push(p);
            }
        }
        out.sort_by_key(|p| p.latest_update_timestamp);
        Ok(out)
    }

    /// The payment outcomes Till's event loop recorded, in record time order.
    pub fn recorded_payments(&self) -> Result<Vec<RecordedPayment>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.namespace(TILL_NAMESPACE, PAYMENTS) {
            if let Some(Record::TillPayment(p)) = decode_record(key, value)? {
                out.push(p);
            }
        }
        out.sort_by_key(|p| p.at_ms);
        Ok(out)
    }

    /// The refunds Till recorded.
    pub fn refunds(&self) -> Result<Vec<RecordedRefund>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.namespace(TILL_NAMESPACE, REFUNDS) {
            if let Some(Record::Refund(r)) = decode_record(key, value)? {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.at_ms);
        Ok(out)
    }

    /// The channels, one per channel monitor, with what the monitor says where it decodes.
    pub fn channels(&self) -> Vec<ChannelView> {
        let mut updates: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, _) in self.state.live() {
            if key.namespace == CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE {
                *updates.entry(key.sub_namespace.as_str()).or_default() += 1;
            }
        }
        self.state
            .entries()
            .filter(|(k, e)| {
                e.is_live()
                    && k.namespace == CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE
                    && k.sub_namespace.is_empty()
            })
            .map(|(key, entry)| {
                let value = entry.value.as_deref().unwrap_or_default();
                let (monitor, undecodable) = match decode_monitor(value) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e)),
                };
                ChannelView {
                    monitor_key: key.key.clone(),
                    monitor_version: entry.version,
                    monitor_bytes: value.len(),
                    monitor,
                    undecodable,
                    pending_updates: updates.get(key.key.as_str()).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// The on-chain wallet's persisted parts that decode.
    pub fn wallet(&self) -> Result<Vec<WalletRecord>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.namespace(BDK_WALLET_NAMESPACE, "") {
            if let Some(Record::Wallet(w)) = decode_record(key, value)? {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Every live key with its version, seq, size and, for known kinds, description.
    pub fn summary(&self) -> Vec<KeySummary> {
        self.state
            .entries()
            .filter_map(|(key, entry)| {
                let value = entry.value.as_deref()?;
                Some(KeySummary {
                    key: key.clone(),
                    version: entry.version,
                    seq: entry.seq,
                    size: value.len(),
                    description: describe(key, value),
                })
            })
            .collect()
    }

    /// Namespaces with their live key count and total value bytes.
    pub fn namespaces(&self) -> BTreeMap<(String, String), (usize, usize)> {
        let mut out: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for (key, value) in self.state.live() {
            let slot = out
                .entry((key.namespace.clone(), key.sub_namespace.clone()))
                .or_default();
            slot.0 += 1;
            slot.1 += value.len();
        }
        out
    }
}

fn payment_id(key: &Key) -> Result<PaymentId, Error> {
    unhex32(&key.key)
        .map(PaymentId)
        .ok_or_else(|| Error::CorruptRecord {
            what: key.to_string(),
            reason: "the key is not a payment id".to_owned(),
        })
}

fn msat(prefix: &str, amount: Option<u64>) -> String {
    amount.map_or(String::new(), |a| format!("{prefix}{a} msat"))
}

fn payment_kind(kind: &ldk_node::payment::PaymentKind) -> &'static str {
    use ldk_node::payment::PaymentKind::*;
    match kind {
        Onchain { .. } => "on-chain",
        Bolt11 { .. } => "bolt11",
        Bolt11Jit { .. } => "bolt11 (JIT channel)",
        Bolt12Offer { .. } => "bolt12 offer",
        Bolt12Refund { .. } => "bolt12 refund",
        Spontaneous { .. } => "spontaneous",
    }
}

fn read<T: Readable>(r: &mut &[u8], what: &str) -> Result<T, String> {
    T::read(r).map_err(|e| format!("{what}: {e:?}"))
}

fn skip(r: &mut &[u8], len: u64, what: &str) -> Result<(), String> {
    let len = usize::try_from(len)
        .ok()
        .filter(|n| *n <= r.len())
        .ok_or_else(|| format!("{what} overrun the record"))?;
    *r = &r[len..];
    Ok(())
}

/// Reads the start of a serialized `ChannelMonitor` (LDK 0.2.x
/// `write_chanmon_internal`) up to the channel value. The layout is LDK's, pinned through
/// ldk-node `=0.7.1`; a test against a real node's monitor checks it.
fn decode_monitor(value: &[u8]) -> Result<MonitorView, String> {
    let mut r = value
        .strip_prefix(MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL)
        .unwrap_or(value);
    let r = &mut r;
    let _version: u8 = read(r, "version")?;
    let min_version: u8 = read(r, "minimum version")?;
    if min_version > 1 {
        return Err(format!(
            "monitor serialization version {min_version} is newer than this build reads"
        ));
    }
    let latest_update_id: u64 = read(r, "latest update id")?;
    skip(r, 6, "commitment number obscure factor")?;
    let _destination: ScriptBuf = read(r, "destination script")?;
    match read::<u8>(r, "revokable script flag")? {
        0 => {
            let _script: ScriptBuf = read(r, "revokable script")?;
            let _key: PublicKey = read(r, "revokable script key")?;
            let _revocation: PublicKey = read(r, "revocation key")?;
        }
        1 => {}
        other => return Err(format!("unknown revokable script flag {other}")),
    }
    let _counterparty_payment_script: ScriptBuf = read(r, "counterparty payment script")?;
    let _shutdown_script: ScriptBuf = read(r, "shutdown script")?;
    let _keys_id: [u8; 32] = read(r, "channel keys id")?;
    let _revocation_basepoint: PublicKey = read(r, "revocation basepoint")?;
    let txid: [u8; 32] = read(r, "funding txid")?;
    let vout: u16 = read(r, "funding output index")?;
    let _funding_script: ScriptBuf = read(r, "funding script")?;
    let _current: Option<Txid> = read(r, "current counterparty commitment")?;
    let _previous: Option<Txid> = read(r, "previous counterparty commitment")?;
    let per_htlc: u64 = read(r, "counterparty commitment parameters")?;
    if per_htlc != 0 {
        return Err("a pre-0.0.100 monitor layout".to_owned());
    }
    let tlv_len: BigSize = read(r, "counterparty parameters length")?;
    skip(r, tlv_len.0, "counterparty parameters")?;
    let _redeem_script: ScriptBuf = read(r, "funding redeem script")?;
    let channel_value_sats: u64 = read(r, "channel value")?;
    Ok(MonitorView {
        funding_txo: OutPoint {
            txid: Txid::from_byte_array(txid),
            vout: u32::from(vout),
        },
        channel_value_sats,
        latest_update_id,
    })
}

/// Decodes one of ldk-node's BDK changeset keys; `None` for a key it does not write.
fn decode_wallet(name: &str, value: &[u8]) -> Option<Result<WalletRecord, String>> {
    let decode = |value: &[u8]| -> Result<WalletRecord, String> {
        let (&version, mut body) = value.split_first().ok_or("empty")?;
        if version != BDK_CHANGESET_VERSION {
            return Err(format!(
                "changeset version {version}; this build reads {BDK_CHANGESET_VERSION}"
            ));
        }
        let r = &mut body;
        match name {
            "descriptor" | "change_descriptor" => Ok(WalletRecord::Descriptor {
                keychain: if name == "descriptor" {
                    Keychain::External
                } else {
                    Keychain::Internal
                },
                descriptor: read(r, "descriptor")?,
            }),
            "network" => {
                let magic: [u8; 4] = read(r, "network magic")?;
                Network::from_magic(Magic::from_bytes(magic))
                    .map(WalletRecord::Network)
                    .ok_or_else(|| format!("unknown network magic {}", hex(&magic)))
            }
            "local_chain" => {
                let records = tlv_records(body)?;
                let mut blocks: BTreeMap<u32, Option<BlockHash>> = BTreeMap::new();
                if let Some(mut v) = records.iter().find(|(t, _)| *t == 0).map(|(_, v)| *v) {
                    blocks = read(&mut v, "blocks")?;
                }
                Ok(WalletRecord::LocalChain {
                    blocks: blocks.values().filter(|b| b.is_some()).count(),
                    tip: blocks
                        .iter()
                        .rev()
                        .find(|(_, b)| b.is_some())
                        .map(|(h, _)| *h),
                })
            }
            "tx_graph" => {
                let records = tlv_records(body)?;
                let count = |t: u64, collection: bool| -> Result<u64, String> {
                    let Some(mut v) = records.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v)
                    else {
                        return Ok(0);
                    };
                    if collection {
                        Ok(read::<CollectionLength>(&mut v, "count")?.0)
                    } else {
                        Ok(read::<BigSize>(&mut v, "count")?.0)
                    }
                };
                Ok(WalletRecord::TxGraph {
                    txs: count(0, false)?,
                    txouts: count(2, true)?,
                    anchors: count(4, false)?,
                })
            }
            "indexer" => {
                let records = tlv_records(body)?;
                let mut last_revealed = Vec::new();
                if let Some(mut v) = records.iter().find(|(t, _)| *t == 0).map(|(_, v)| *v) {
                    let n: BigSize = read(&mut v, "descriptor count")?;
                    for _ in 0..n.0 {
                        let len: BigSize = read(&mut v, "entry length")?;
                        let len = usize::try_from(len.0)
                            .ok()
                            .filter(|l| *l <= v.len())
                            .ok_or("an indexer entry overruns the record")?;
                        let (entry, rest) = v.split_at(len);
                        v = rest;
                        if let Some((_, mut index)) =
                            tlv_records(entry)?.into_iter().find(|(t, _)| *t == 2)
                        {
                            last_revealed.push(read::<u32>(&mut index, "last revealed")?);
                        }
                    }
                }
                Ok(WalletRecord::Indexer { last_revealed })
            }
            _ => unreachable!("only known names are decoded"),
        }
    };
    matches!(
        name,
        "descriptor" | "change_descriptor" | "network" | "local_chain" | "tx_graph" | "indexer"
    )
    .then(|| decode(value))
}

/// Splits an LDK TLV stream into its records.
fn tlv_records(mut bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    while !bytes.is_empty() {
        let t: BigSize = read(&mut bytes, "TLV type")?;
        let len: BigSize = read(&mut bytes, "TLV length")?;
        let len = usize::try_from(len.0)
            .ok()
            .filter(|l| *l <= bytes.len())
            .ok_or_else(|| format!("TLV record {} overruns the stream", t.0))?;
        if !seen.insert(t.0) {
            return Err(format!("TLV record {} repeats", t.0));
        }
        let (value, rest) = bytes.split_at(len);
        out.push((t.0, value));
        bytes = rest;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ldk_node::lightning::util::ser::Writeable;
    use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
    use till_log::{LogOptions, ManualClock, Write};

    use super::*;
    use crate::node::encode;

    fn log_with_clock() -> (tempfile::TempDir, Log, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let log = Log::open_with(
            dir.path().join("till.redb"),
            LogOptions {
                clock: clock.clone(),
                ..LogOptions::default()
            },
        )
        .unwrap();
        (dir, log, clock)
    }

    #[test]
    fn state_at_a_seq_or_a_time_and_the_diff_between_two_points() {
        let (_dir, log, clock) = log_with_clock();
        let (a, b, c, d) = (
            Key::new("ns", "", "a"),
            Key::new("ns", "", "b"),
            Key::new("ns", "", "c"),
            Key::new("ns", "", "d"),
        );
        log.put(a.clone(), b"a0".to_vec()).unwrap(); // seq 1, t 1000
        log.put(b.clone(), b"b0".to_vec()).unwrap(); // seq 2
        clock.set(2_000);
        log.put(a.clone(), b"a1-longer".to_vec()).unwrap(); // seq 3, t 2000
        log.delete(b.clone()).unwrap(); // seq 4
        log.put(c.clone(), b"c0".to_vec()).unwrap(); // seq 5
        log.put(d.clone(), b"d0".to_vec()).unwrap(); // seq 6
        log.delete(d.clone()).unwrap(); // seq 7
        clock.set(3_000);
        log.put(a.clone(), b"a2".to_vec()).unwrap(); // seq 8, t 3000

        let audit = Audit::new(&log);
        assert_eq!(audit.seq_of(Point::Head).unwrap(), 8);
        assert_eq!(audit.seq_of(Point::Time(1_999)).unwrap(), 2);
        assert_eq!(audit.seq_of(Point::Time(999)).unwrap(), 0);
        let at_2 = audit.state_at(Point::Seq(2)).unwrap();
        assert_eq!(at_2.get(&a), Some(&b"a0"[..]));
        assert_eq!(at_2.get(&b), Some(&b"b0"[..]));
        let at_time = audit.state_at(Point::Time(2_500)).unwrap();
        assert_eq!(at_time.seq(), 7);
        assert_eq!(at_time.get(&a), Some(&b"a1-longer"[..]));
        assert_eq!(at_time.get(&b), None);
        assert_eq!(audit.state_at(Point::Head).unwrap(), log.replay(8).unwrap());
        assert!(audit.state_at(Point::Seq(9)).is_err());

        let diff = audit.diff(Point::Seq(2), Point::Time(2_500)).unwrap();
        assert_eq!((diff.from_seq, diff.to_seq), (2, 7));
        let kinds: Vec<_> = diff
            .changes
            .iter()
            .map(|c| (c.key.key.as_str(), c.kind.clone(), c.events))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a", ChangeKind::Changed { from: 0, to: 1 }, 1),
                (
                    "b",
                    ChangeKind::Removed {
                        version: 0,
                        tombstone: 1
                    },
                    1
                ),
                ("c", ChangeKind::Added { version: 0 }, 1),
                ("d", ChangeKind::Transient { tombstone: 1 }, 2),
            ]
        );
        assert_eq!(diff.changes[0].size_before, Some(2));
        assert_eq!(diff.changes[0].size_after, Some(9));
        assert_eq!(diff.changes[1].size_after, None);
        // An empty range, and a backwards one refused.
        assert!(
            audit
                .diff(Point::Seq(8), Point::Head)
                .unwrap()
                .changes
                .is_empty()
        );
        assert!(matches!(
            audit.diff(Point::Head, Point::Seq(1)),
            Err(Error::InvalidInput(_))
        ));
        // A key's history.
        let history = audit.history(&b).unwrap();
        let history: Vec<_> = history
            .into_iter()
            .map(|v| (v.seq, v.version, v.at_ms, v.value))
            .collect();
        assert_eq!(
            history,
            vec![(2, 0, 1_000, Some(b"b0".to_vec())), (4, 1, 2_000, None)]
        );
    }

    #[test]
    fn till_records_decode_and_describe() {
        let id = [0x11; 32];
        let key = Key::new(TILL_NAMESPACE, PAYMENTS, hex(&id));
        let value = encode(&PaymentRecord {
            inbound: true,
            succeeded: true,
            amount_msat: Some(21_000),
            fee_paid_msat: None,
            at_ms: 5,
        });
        assert_eq!(
            decode_record(&key, &value).unwrap(),
            Some(Record::TillPayment(RecordedPayment {
                payment_id: PaymentId(id),
                inbound: true,
                succeeded: true,
                amount_msat: Some(21_000),
                fee_paid_msat: None,
                at_ms: 5,
            }))
        );
        assert_eq!(
            describe(&key, &value).unwrap(),
            "till payment received succeeded 21000 msat at 5 ms"
        );

        let refund_key = Key::new(TILL_NAMESPACE, REFUNDS, hex(&[0x22; 32]));
        let refund = encode(&RefundRecord {
            original: id,
            amount_msat: 500,
            at_ms: 9,
        });
        let Some(Record::Refund(r)) = decode_record(&refund_key, &refund).unwrap() else {
            panic!("a refund record");
        };
        assert_eq!((r.original, r.amount_msat), (PaymentId(id), 500));

        // A damaged or newer record is named, not skipped; a key that is not an id is refused.
        assert!(matches!(
            decode_record(&key, &value[..3]),
            Err(Error::CorruptRecord { .. })
        ));
        let mut newer = value.clone();
        newer[0] = 99;
        assert!(describe(&key, &newer).unwrap().starts_with("undecodable"));
        let bad_key = Key::new(TILL_NAMESPACE, PAYMENTS, "nothex");
        assert!(decode_record(&bad_key, &value).is_err());

        // Keys of other kinds are not records; some are still named.
        assert_eq!(
            decode_record(&Key::new("other", "", "x"), b"1").unwrap(),
            None
        );
        assert_eq!(describe(&Key::new("other", "", "x"), b"1"), None);
        assert_eq!(
            describe(&Key::new("", "", "manager"), &[0; 10]).unwrap(),
            "channel manager, 10 bytes"
        );
    }

    #[test]
    fn ldk_payment_records_decode() {
        let details = PaymentDetails {
            id: PaymentId([3; 32]),
            kind: PaymentKind::Spontaneous {
                hash: ldk_node::lightning::types::payment::PaymentHash([4; 32]),
                preimage: None,
            },
            amount_msat: Some(7_000),
            fee_paid_msat: Some(12),
            direction: PaymentDirection::Outbound,
            status: PaymentStatus::Succeeded,
            latest_update_timestamp: 1_700_000_000,
        };
        let key = Key::new(LDK_PAYMENTS_NAMESPACE, "", hex(&[3; 32]));
        let bytes = details.encode();
        assert_eq!(
            decode_record(&key, &bytes).unwrap(),
            Some(Record::Payment(details.clone()))
        );
        assert_eq!(
            describe(&key, &bytes).unwrap(),
            "ldk payment Outbound Succeeded 7000 msat fee 12 msat, kind spontaneous, updated at 1700000000 s"
        );
        assert!(matches!(
            decode_record(&key, &bytes[..bytes.len() / 2]),
            Err(Error::CorruptRecord { .. })
        ));

        // Views over a state: decoded payments beside other keys.
        let (_dir, log, _clock) = log_with_clock();
        log.append(vec![
            Write::put(key, bytes),
            Write::put(Key::new("", "", "scorer"), vec![0; 4]),
        ])
        .unwrap();
        let state = log.state().unwrap();
        let records = Records::new(&state);
        assert_eq!(records.payments().unwrap(), vec![details]);
        let summary = records.summary();
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].description.as_deref(), Some("scorer, 4 bytes"));
        assert_eq!(records.namespaces().len(), 2);
        assert!(records.channels().is_empty());
    }

    #[test]
    fn wallet_changesets_decode() {
        let network = [1, 0xfa, 0xbf, 0xb5, 0xda];
        assert_eq!(
            decode_wallet("network", &network).unwrap().unwrap(),
            WalletRecord::Network(Network::Regtest)
        );
        let mut descriptor = vec![1];
        "wpkh(tpubXYZ/0/*)"
            .to_owned()
            .write(&mut descriptor)
            .unwrap();
        assert_eq!(
            decode_wallet("change_descriptor", &descriptor)
                .unwrap()
                .unwrap(),
            WalletRecord::Descriptor {
                keychain: Keychain::Internal,
                descriptor: "wpkh(tpubXYZ/0/*)".to_owned()
            }
        );
        // local_chain: TLV record 0 = map height -> Option<BlockHash>.
        let mut blocks: BTreeMap<u32, Option<BlockHash>> = BTreeMap::new();
        blocks.insert(0, Some(BlockHash::all_zeros()));
        blocks.insert(7, Some(BlockHash::all_zeros()));
        blocks.insert(9, None);
        let map = blocks.encode();
        let mut chain = vec![1];
        BigSize(0).write(&mut chain).unwrap();
        BigSize(map.len() as u64).write(&mut chain).unwrap();
        chain.extend(map);
        assert_eq!(
            decode_wallet("local_chain", &chain).unwrap().unwrap(),
            WalletRecord::LocalChain {
                blocks: 2,
                tip: Some(7)
            }
        );
        assert!(decode_wallet("network", &[2, 0, 0, 0, 0]).unwrap().is_err());
        assert!(
            decode_wallet("local_chain", &chain[..chain.len() - 1])
                .unwrap()
                .is_err()
        );
        assert!(decode_wallet("something_else", &[1]).is_none());
    }

    #[test]
    fn tlv_streams_are_checked() {
        assert_eq!(
            tlv_records(&[0, 1, 9, 2, 0]).unwrap(),
            vec![(0, &[9][..]), (2, &[][..])]
        );
        assert!(tlv_records(&[0, 3, 9]).is_err());
        assert!(tlv_records(&[0, 0, 0, 0]).is_err());
        assert!(decode_monitor(&[1, 2, 3]).is_err());
    }
}
