//! The engine's one flat error enum, for shells.

use ldk_node::{BuildError, NodeError};

use crate::store::BarrierError;

/// What went wrong in the engine, with the facts a shell needs to tell the merchant what to do.
///
/// Details of lower layers (the log, ldk-node's build) are mapped into these variants once, where
/// they happen. No variant ever carries a mnemonic word, a seed or a key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mnemonic could not be imported; the reason never repeats a word.
    #[error("the mnemonic is not a valid BIP39 phrase: {0}")]
    InvalidMnemonic(String),
    /// The event log failed (storage, a damaged file, a read-only replica).
    #[error("the event log failed: {0}")]
    Log(String),
    /// A record Till wrote was written by a newer format this build does not read.
    #[error("record {what} has format version {found}; this build reads version {supported}")]
    UnknownRecordVersion {
        /// Which record.
        what: String,
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A record Till wrote does not decode.
    #[error("record {what} is damaged: {reason}")]
    CorruptRecord {
        /// Which record.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// ldk-node refused the configuration or could not set itself up from the log.
    #[error("the node could not be built: {0}")]
    Build(String),
    /// An ldk-node operation failed; its message says which.
    #[error("{0}")]
    Lightning(NodeError),
    /// The node is not running (start it first, or it was fenced and stopped).
    #[error("the node is not running")]
    NotRunning,
    /// The node is already running.
    #[error("the node is already running")]
    AlreadyRunning,
    /// An invoice, address or amount the caller gave is not usable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No payment with this id is known.
    #[error("no payment {0} is known to this node")]
    PaymentNotFound(String),
    /// The device's disk has less free space than the node keeps for the payments in flight
    /// ([`crate::NodeConfig::min_free_disk`]), so it refuses new sales.
    #[error(
        "this device's disk has {} free, less than the {} the till keeps for the payments in flight: new sales are refused until space is freed on it",
        crate::disk::megabytes(*.free),
        crate::disk::megabytes(*.floor)
    )]
    DiskNearlyFull {
        /// Bytes free on the disk that holds the log.
        free: u64,
        /// The free space the node keeps.
        floor: u64,
    },
    /// The payment cannot be refunded (not received, or not completed).
    #[error("payment {payment} cannot be refunded: {reason}")]
    NotRefundable {
        /// The original payment's id (hex).
        payment: String,
        /// Why not.
        reason: String,
    },
    /// The refund is larger than what is left of the original payment.
    #[error(
        "a refund of {requested_msat} msat exceeds the {remaining_msat} msat left to refund of payment {payment}"
    )]
    RefundTooLarge {
        /// The original payment's id (hex).
        payment: String,
        /// The refund asked for.
        requested_msat: u64,
        /// The original amount minus earlier refunds.
        remaining_msat: u64,
    },
    /// The backup refused to confirm a write (fenced by another device, or its shipper stopped).
    #[error("backup: {0}")]
    Backup(#[from] BarrierError),
    /// Another device holds the lease (it is master): this device may not start its node. Hand
    /// off from that device, or take over with the user's confirmation if it is lost.
    #[error(
        "another device is master (device {device}, epoch {epoch}); hand off from it, or take over if it is lost"
    )]
    LeaseHeld {
        /// The device that holds the lease.
        device: till_log::DeviceId,
        /// Its lease epoch.
        epoch: u64,
    },
    /// This device was master until another device took the lease over: its node was stopped
    /// and it refuses every command. Restore it from the backup to use it again.
    #[error(
        "another device is master (device {device}, epoch {epoch}); this device was fenced and its node stopped"
    )]
    Fenced {
        /// The device that holds the lease now.
        device: till_log::DeviceId,
        /// Its lease epoch.
        epoch: u64,
    },
    /// The command needs the node, and this device is a follower (it does not hold the lease).
    #[error("this device is a follower; it runs no node until it acquires the lease")]
    NotMaster,
    /// The mnemonic's backup keys do not open the backup on the server.
    #[error("this mnemonic does not open this backup")]
    WrongKey,
    /// The server has no backup for this mnemonic: a wrong mnemonic or passphrase (either
    /// derives another store), or a till that was never backed up on this server.
    #[error(
        "this server holds no backup for this mnemonic (a wrong mnemonic or passphrase, or a till never backed up on this server)"
    )]
    NoBackup,
    /// The till-server could not be reached: the connection failed or broke, or no answer came
    /// in time, through every retry.
    #[error("cannot reach the till-server: {0}")]
    ServerUnreachable(String),
    /// Syncing with, restoring from or taking the lease on the backup failed.
    #[error("the backup: {0}")]
    Replication(String),
    /// A wait gave up.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
}

impl From<NodeError> for Error {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotRunning => Error::NotRunning,
            NodeError::AlreadyRunning => Error::AlreadyRunning,
            other => Error::Lightning(other),
        }
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        Error::Build(e.to_string())
    }
}

impl From<till_log::AppendError> for Error {
    fn from(e: till_log::AppendError) -> Self {
        Error::Log(e.to_string())
    }
}

impl From<till_log::ReadError> for Error {
    fn from(e: till_log::ReadError) -> Self {
        Error::Log(e.to_string())
    }
}

impl From<till_vss::replica::ReplicaError> for Error {
    fn from(e: till_vss::replica::ReplicaError) -> Self {
        use till_vss::replica::ReplicaError;
        match e {
            ReplicaError::LeaseHeld { device, epoch } => Error::LeaseHeld { device, epoch },
            ReplicaError::Remote(remote) => remote.into(),
            other => Error::Replication(other.to_string()),
        }
    }
}

impl From<till_vss::replica::RestoreError> for Error {
    fn from(e: till_vss::replica::RestoreError) -> Self {
        use till_vss::replica::RestoreError;
        match e {
            RestoreError::Remote(remote) => remote.into(),
            RestoreError::NoBackup(_) => Error::NoBackup,
            other => Error::Replication(other.to_string()),
        }
    }
}

impl From<till_vss::replica::RemoteError> for Error {
    fn from(e: till_vss::replica::RemoteError) -> Self {
        use till_vss::Error as VssError;
        use till_vss::replica::RemoteError;
        match e {
            RemoteError::WrongKey => Error::WrongKey,
            RemoteError::Vss(e @ (VssError::Connection { .. } | VssError::Timeout { .. })) => {
                Error::ServerUnreachable(e.to_string())
            }
            other => Error::Replication(other.to_string()),
        }
    }
}
