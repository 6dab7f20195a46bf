//! `till-engine`: the merchant's Lightning node, ldk-node running on Till's event log.
//!
//! [`Keys`] holds the wallet's BIP39 mnemonic: ldk-node takes it as its entropy, and the engine
//! derives from it the 32-byte backup secret (at the hardened path [`BACKUP_SECRET_PATH`]) that the
//! replication layer turns into its encryption and naming keys. [`device_id`] is the one random,
//! per-install value, kept in the log file's local table and never backed up.
//!
//! [`LogStore`] is LDK's key-value store over a [`till_log::Log`]: every write ldk-node makes,
//! the on-chain wallet's included, becomes an event. Writes of channel state (monitors, monitor
//! updates, the channel manager) return to LDK only after a [`DurabilityBarrier`] confirms their
//! event is durable on the remote ("backup before acknowledge"); other keys return after the local
//! commit. [`LocalOnly`] is the barrier for a till without a server.
//!
//! [`Node`] builds ldk-node on that store and offers the till's commands: invoices, payments,
//! refunds recorded against the original payment, balances, channels, on-chain funds, node info.
//! Every command returns the one flat [`Error`].
//!
//! [`Audit`] replays the log for developers: the state at any seq or time, the keys changed
//! between two points, and the local hash chain checked against the server's head. [`Records`]
//! decodes what the types allow (ldk-node's payments, Till's payment and refund records, channel
//! monitors, the on-chain wallet's changesets); [`describe`] gives any record a one-line summary.
//!
//! ```no_run
//! use std::sync::Arc;
//! use till_engine::{Keys, LocalOnly, LogStore, Node, NodeConfig};
//! use till_engine::bitcoin::Network;
//!
//! let keys = Keys::generate();
//! let log = Arc::new(till_log::Log::open("till.redb").unwrap());
//! let store = LogStore::new(log, Arc::new(LocalOnly));
//! let config = NodeConfig::new(Network::Regtest, "http://127.0.0.1:3002", "ldk".into());
//! let node = Node::build(config, &keys, store).unwrap();
//! node.start().unwrap();
//! let invoice = node.create_invoice(21_000, "coffee", 600).unwrap();
//! println!("{}", invoice.invoice);
//! node.stop().unwrap();
//! ```

mod audit;
mod backup;
pub mod disk;
mod error;
mod gate;
mod hub;
mod keys;
mod node;
mod roles;
mod store;

pub use audit::{
    Audit, BDK_WALLET_NAMESPACE, Change, ChangeKind, ChannelView, Diff, KeySummary, KeyVersion,
    Keychain, LDK_PAYMENTS_NAMESPACE, MonitorUpdateView, MonitorView, Point, Record,
    RecordedPayment, RecordedRefund, Records, RemoteCheck, RemoteStatus, WalletRecord,
    decode_record, describe,
};
pub use backup::{BackupConfig, ReplicatorBarrier, backup_state, remote};
pub use error::Error;
pub use gate::{Alignment, Gate, MONITOR_CUT};
pub use hub::{
    CommandExecutor, HUB_PROTOCOL_VERSION, HubClient, HubCommand, HubConfig, HubError, HubStatus,
    MasterInfo, RECEIPTS_WINDOW, payment_json,
};
pub use keys::{BACKUP_SECRET_PATH, DEVICE_ID_FORMAT_VERSION, DEVICE_ID_RECORD, Keys, device_id};
pub use node::{
    Balances, CreatedInvoice, LspConfig, Node, NodeConfig, NodeInfo, PAYMENTS, PaymentFilter,
    RECORD_FORMAT_VERSION, REFUNDS, Refund, TILL_NAMESPACE, parse_invoice, payment_id_of,
};
pub use roles::{LeaseInfo, ReplicaBalances, ReplicaChannel, Role, Till, TillConfig};
pub use store::{
    BackupState, BarrierError, BarrierFuture, BarrierPassed, DurabilityBarrier, LocalOnly,
    LogStore, WaitPolicy,
};

/// The replication types a [`Till`] speaks in.
pub use till_vss::replica::{
    Progress as RestoreProgress, ReplicatorConfig, ReplicatorStatus, SyncReport, TakeoverConfirmed,
};

/// The ldk-node types the engine's API speaks in (payments, channels, events).
pub use ldk_node::payment::{PaymentDetails, PaymentDirection, PaymentKind, PaymentStatus};
pub use ldk_node::{ChannelDetails, Event, UserChannelId, bitcoin, lightning, lightning_invoice};
