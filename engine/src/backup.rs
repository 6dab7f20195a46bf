//! The backup: the wallet's keys wired to a VSS server, and the replicator as the node's
//! durability barrier.
//!
//! [`BackupConfig`] says where the backup lives (server URL, bearer token, optionally a store id
//! the server assigned); [`remote`] turns it and the [`Keys`] into a `till_vss` [`Remote`].
//! [`ReplicatorBarrier`] is the [`DurabilityBarrier`] over a running `till_vss` replicator, which
//! ships on its own thread and runtime, so blocking an ldk-node worker on it cannot starve the
//! shipping.
//!
//! A fenced device must never acknowledge channel state to LDK, and must not crash either: LDK
//! treats a failed channel-monitor write as unrecoverable and panics (`ChainMonitor` poisons its
//! monitor lock and panics in `update_channel`; ldk-node panics when the background processor's
//! channel-manager write fails). So once the replicator reports [`ReplicatorState::Fenced`] (or
//! [`ReplicatorState::Failed`]: this device's log could not be written), a waiting write neither
//! succeeds nor fails: it stays parked while the role supervisor stops the node and refuses every
//! further command. The parked thread never resumes; the process exits with it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use till_vss::replica::{BackupKeys, DurableError, Remote, ReplicatorHandle, ReplicatorState};
use till_vss::{BearerToken, ClientConfig, VssClient};

use crate::error::Error;
use crate::keys::Keys;
use crate::store::{BackupState, BarrierError, BarrierFuture, DurabilityBarrier};

/// Where a till's backup lives. `Debug` does not show the token.
#[derive(Clone)]
pub struct BackupConfig {
    /// The VSS base URL, e.g. `https://till.example.com/vss`.
    pub server_url: String,
    /// The bearer token the server issued for this merchant.
    pub token: String,
    /// A store id the server assigned, instead of the one the backup secret derives.
    pub store_id: Option<String>,
    /// Timeouts and retries of each VSS call. Outages are ridden out by the replicator, which
    /// retries uploads forever with backoff; these bound one call.
    pub client: ClientConfig,
}

impl BackupConfig {
    /// A backup on `server_url` with `token`, the derived store id and default client settings.
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            token: token.into(),
            store_id: None,
            client: ClientConfig::default(),
        }
    }
}

impl fmt::Debug for BackupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupConfig")
            .field("server_url", &self.server_url)
            .field("token", &"<redacted>")
            .field("store_id", &self.store_id)
            .field("client", &self.client)
            .finish()
    }
}

/// The backup store of `keys` on the server `config` names: a VSS client with the bearer token,
/// the [`BackupKeys`] derived from the keys' backup secret, and the store id (derived, or the
/// server's if given). Errors never repeat the token.
pub fn remote(keys: &Keys, config: &BackupConfig) -> Result<Remote, Error> {
    let auth = BearerToken::new(&config.token)
        .map_err(|e| Error::InvalidInput(format!("the server token: {e}")))?;
    let client = VssClient::new(&config.server_url, auth, config.client.clone())
        .map_err(|e| Error::InvalidInput(format!("the server URL: {e}")))?;
    let remote = Remote::new(client, BackupKeys::from_secret(&keys.backup_secret()));
    Ok(match &config.store_id {
        Some(id) => remote.with_store_id(id.clone()),
        None => remote,
    })
}

/// The replicator's state as the node reports it.
pub fn backup_state(state: &ReplicatorState) -> BackupState {
    match state {
        ReplicatorState::Running => BackupState::Ok,
        ReplicatorState::Unreachable { since_ms, error } => BackupState::Unreachable {
            since: UNIX_EPOCH + Duration::from_millis(*since_ms),
            last_error: error.clone(),
        },
        ReplicatorState::Fenced(f) => BackupState::Fenced {
            device: f.device,
            epoch: f.epoch,
        },
        ReplicatorState::Released => BackupState::Stopped {
            reason: "the lease was released (handed off)".to_owned(),
        },
        ReplicatorState::Stopped => BackupState::Stopped {
            reason: "the shipper was stopped".to_owned(),
        },
        ReplicatorState::Failed(e) => BackupState::Stopped {
            reason: format!("the shipper failed: {e}"),
        },
        other => BackupState::Stopped {
            reason: format!("{other:?}"),
        },
    }
}

/// A [`DurabilityBarrier`] over a running `till_vss` replicator.
///
/// Waits ride out outages (the replicator retries; [`DurabilityBarrier::state`] says
/// [`BackupState::Unreachable`]). When the replicator is fenced or failed (this device's log
/// could not be written, say), a wait parks its caller for good instead of returning (see the
/// module docs): the till stops the node, and LDK neither acts on the write nor panics on a
/// failed one. When it stopped on purpose (released, stopped), the wait fails with
/// [`BarrierError::Stopped`]: by then the node was stopped first, so no channel-state write can
/// be waiting.
#[derive(Clone, Debug)]
pub struct ReplicatorBarrier {
    handle: ReplicatorHandle,
    parked: Arc<AtomicUsize>,
}

impl ReplicatorBarrier {
    /// A barrier over `handle`, which must ship the log of the store the barrier is given to:
    /// the store appends the writes that wait for it unsynced, and the replicator syncs them.
    pub fn new(handle: ReplicatorHandle) -> Self {
        Self {
            handle,
            parked: Arc::default(),
        }
    }

    /// The replicator underneath.
    pub fn handle(&self) -> &ReplicatorHandle {
        &self.handle
    }

    /// How many writes are parked because the device was fenced or its log could not be
    /// written: channel state LDK will never see acknowledged.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }
}

/// Whether the replicator ended because this device cannot go on, rather than on purpose.
fn failed(handle: &ReplicatorHandle) -> bool {
    matches!(handle.status().state, ReplicatorState::Failed(_))
}

/// Parks the calling thread for good: a fenced write must neither succeed nor fail.
fn park_forever(parked: &AtomicUsize) -> ! {
    parked.fetch_add(1, Ordering::SeqCst);
    loop {
        std::thread::park();
    }
}

/// [`park_forever`] for an async caller: counted now, and never resolves. Dropping it (the
/// node's runtime shutting down) is the only way out, and it acknowledges nothing.
fn pend_forever<T>(parked: &AtomicUsize) -> std::future::Pending<T> {
    parked.fetch_add(1, Ordering::SeqCst);
    std::future::pending()
}

impl DurabilityBarrier for ReplicatorBarrier {
    fn notify(&self, _seq: u64) {
        self.handle.notify();
    }

    fn wait_durable_blocking(&self, seq: u64) -> Result<(), BarrierError> {
        match self.handle.wait_durable_blocking(seq, None) {
            Ok(()) => Ok(()),
            Err(DurableError::Fenced(_)) => park_forever(&self.parked),
            Err(_) if failed(&self.handle) => park_forever(&self.parked),
            Err(e) => Err(BarrierError::Stopped(e.to_string())),
        }
    }

    fn wait_durable(&self, seq: u64) -> BarrierFuture {
        let handle = self.handle.clone();
        let parked = Arc::clone(&self.parked);
        Box::pin(async move {
            match handle.wait_durable(seq).await {
                Ok(()) => Ok(()),
                Err(DurableError::Fenced(_)) => pend_forever(&parked).await,
                Err(_) if failed(&handle) => pend_forever(&parked).await,
                Err(e) => Err(BarrierError::Stopped(e.to_string())),
            }
        })
    }

    fn state(&self) -> BackupState {
        backup_state(&self.handle.status().state)
    }

    /// The replicator syncs the log while it uploads: what it reports durable is on disk too.
    fn syncs_log(&self) -> bool {
        true
    }

    /// Ends the replicator as failed; the till's supervisor then stops the node.
    fn log_failed(&self, reason: Option<&str>) -> bool {
        self.handle.fail(reason.map(str::to_owned));
        true
    }

    fn hold_blocking(&self) -> ! {
        park_forever(&self.parked)
    }

    fn hold(&self) -> BarrierFuture {
        Box::pin(pend_forever(&self.parked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use till_log::DeviceId;
    use till_vss::replica::Fenced;

    #[test]
    fn replicator_states_map_to_backup_states() {
        assert_eq!(backup_state(&ReplicatorState::Running), BackupState::Ok);
        let device = DeviceId([3; 16]);
        assert_eq!(
            backup_state(&ReplicatorState::Fenced(Fenced { device, epoch: 4 })),
            BackupState::Fenced { device, epoch: 4 }
        );
        match backup_state(&ReplicatorState::Unreachable {
            since_ms: 1_000,
            error: "connection refused".into(),
        }) {
            BackupState::Unreachable { since, last_error } => {
                assert_eq!(since, UNIX_EPOCH + Duration::from_secs(1));
                assert_eq!(last_error, "connection refused");
            }
            other => panic!("{other:?}"),
        }
        for state in [
            ReplicatorState::Released,
            ReplicatorState::Stopped,
            ReplicatorState::Failed("disk full".into()),
        ] {
            assert!(matches!(backup_state(&state), BackupState::Stopped { .. }));
        }
    }

    #[test]
    fn the_token_is_not_shown() {
        let config = BackupConfig::new("http://127.0.0.1:1/vss", "s3cret-token");
        assert!(!format!("{config:?}").contains("s3cret"));
        let keys = Keys::generate();
        let remote = remote(&keys, &config).unwrap();
        assert!(!format!("{remote:?}").contains("s3cret"));
        assert_eq!(
            remote.store_id(),
            BackupKeys::from_secret(&keys.backup_secret()).store_id()
        );
        let mut assigned = config.clone();
        assigned.store_id = Some("store-7".into());
        assert_eq!(remote_of(&keys, &assigned), "store-7");
        let bad = BackupConfig::new("http://127.0.0.1:1/vss", "bad\ntoken");
        let err = super::remote(&keys, &bad).unwrap_err().to_string();
        assert!(!err.contains("bad\ntoken"), "{err}");
    }

    fn remote_of(keys: &Keys, config: &BackupConfig) -> String {
        remote(keys, config).unwrap().store_id().to_owned()
    }
}
