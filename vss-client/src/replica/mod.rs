//! Replication (DESIGN.md section 3): the local log shipped to a VSS store as
//! sealed segments under a master lease, and restored from it.

mod device;
mod head;
mod keys;
mod plan;
mod remote;
mod replicator;
mod restore;

pub use device::{Lease, Replica, ReplicaError, SyncReport, TakeoverConfirmed};
pub use head::{
    HeadError, LEASE_FORMAT_VERSION, LEASE_HEADER_LEN, LEASE_MAGIC, LeaseHeader, LeaseHeaderError,
    LeaseState, MANIFEST_FORMAT_VERSION, Manifest, SnapshotRef,
};
pub use keys::BackupKeys;
pub use plan::{Plan, PlanError, Target, plan};
pub use remote::{Remote, RemoteError, SNAPSHOT_FORMAT_VERSION};
pub use replicator::{
    DurableError, Fenced, Replicator, ReplicatorConfig, ReplicatorHandle, ReplicatorState,
    ReplicatorStatus, Retention,
};
pub use restore::{Progress, RestoreError, RestoreReport, restore, restore_state};

/// Logical object names, for tests and tools that inspect a store.
pub mod object_names {
    pub use super::keys::names::*;
}
