//! Roles (DESIGN.md section 4): one device of a till, master or follower.
//!
//! A [`Till`] owns a device's event log, the wallet's keys, the device id and the backup on the
//! server. It starts as a **follower**: no node runs; [`Till::sync`] pulls the read-only replica,
//! and [`Till::payments`] and [`Till::replica_balances`] read payments and channel balances from
//! it. [`Till::acquire`] makes it **master**: it pulls everything (R5), takes the lease (R4),
//! starts the replicator and runs ldk-node on a [`LogStore`] whose channel-state writes wait for
//! the replicator ([`ReplicatorBarrier`]). [`Till::handoff`] stops the node, ships everything and
//! releases the lease, so another device can acquire it; [`Till::takeover`] is the confirmed
//! recovery from a lost master. [`Till::restore`] rebuilds a new device from the mnemonic and the
//! server.
//!
//! A master whose lease was taken over is **fenced**: the replicator's next upload is refused, a
//! supervisor thread sees it at once, stops the node and the till refuses every command with
//! [`Error::Fenced`]. Channel-state writes caught waiting are never acknowledged (see
//! [`crate::backup`]).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{OutPoint, Transaction};
use ldk_node::lightning::chain::chaininterface::{
    BroadcasterInterface, ConfirmationTarget, FeeEstimator,
};
use ldk_node::lightning::io;
use ldk_node::lightning::ln::types::ChannelId;
use ldk_node::lightning::sign::KeysManager;
use ldk_node::lightning::util::logger::{Logger, Record};
use ldk_node::lightning::util::persist::{KVStoreSync, MonitorUpdatingPersister};
use ldk_node::lightning::util::ser::Readable;
use ldk_node::payment::PaymentDetails;
use till_log::{DeviceId, Key, Log};
use till_vss::replica::{
    DurableError, LeaseState, Progress, Replica, Replicator, ReplicatorConfig, ReplicatorStatus,
    SyncReport, TakeoverConfirmed,
};

use crate::backup::{BackupConfig, ReplicatorBarrier, remote};
use crate::error::Error;
use crate::keys::{Keys, device_id};
use crate::node::{Node, NodeConfig};
use crate::store::{BackupState, BarrierPassed, LogStore, WaitPolicy};

/// ldk-node's namespace of payment records (`PaymentDetails`, keyed by payment id in hex).
const LDK_PAYMENTS_NAMESPACE: &str = "payments";

type Observer = Arc<dyn Fn(&BarrierPassed) + Send + Sync>;

/// What a till device needs: its node's config, where its backup is, and how it ships.
#[derive(Clone)]
pub struct TillConfig {
    /// The node it runs as master.
    pub node: NodeConfig,
    /// The server and credentials of the backup.
    pub backup: BackupConfig,
    /// How the replicator cuts and ships segments.
    pub replicator: ReplicatorConfig,
    /// Which writes wait for the backup (channel state by default).
    pub wait_policy: WaitPolicy,
    observer: Option<Observer>,
}

impl fmt::Debug for TillConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TillConfig")
            .field("node", &self.node)
            .field("backup", &self.backup)
            .field("replicator", &self.replicator)
            .field("wait_policy", &self.wait_policy)
            .finish_non_exhaustive()
    }
}

impl TillConfig {
    /// A config with the default replicator settings and wait policy.
    pub fn new(node: NodeConfig, backup: BackupConfig) -> Self {
        Self {
            node,
            backup,
            replicator: ReplicatorConfig::default(),
            wait_policy: WaitPolicy::default(),
            observer: None,
        }
    }

    /// Calls `observer` for every write that waited for the backup, after the backup confirmed
    /// it and before it returns to LDK (see [`LogStore::with_observer`]).
    pub fn with_observer(
        mut self,
        observer: impl Fn(&BarrierPassed) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }
}

/// What a device is now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Holds a read-only replica; runs no node.
    Follower,
    /// Holds the lease at `epoch` and runs the node.
    Master {
        /// The lease epoch this device writes under.
        epoch: u64,
    },
    /// Another device took the lease; this device's node was stopped and it refuses commands.
    Fenced {
        /// The device that holds the lease now.
        device: DeviceId,
        /// Its epoch.
        epoch: u64,
    },
    /// The backup's shipper stopped for good while this device was master; its node was stopped.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Who holds the lease, as the server's head says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The device that holds, or last held, the lease.
    pub device: DeviceId,
    /// The lease epoch.
    pub epoch: u64,
    /// Whether it is held (false: released by a handoff).
    pub held: bool,
}

/// One channel as its monitor in the replica shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaChannel {
    /// The channel's id.
    pub channel_id: ChannelId,
    /// The peer.
    pub counterparty: PublicKey,
    /// The funding output.
    pub funding_txo: OutPoint,
    /// What this side could claim on chain if the channel closed now, in sat.
    pub claimable_sats: u64,
}

/// Balances read from the replica's channel monitors, without running a node.
///
/// `lightning_sats` is the sum of what each monitor says this side could claim on chain
/// (LDK's claimable balances, the same source ldk-node's lightning balance uses); it matches
/// the master's figure once no HTLC is in flight. The on-chain wallet is not decoded here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaBalances {
    /// Total claimable from channels, in sat.
    pub lightning_sats: u64,
    /// Each channel (open, or closed but not yet fully claimed).
    pub channels: Vec<ReplicaChannel>,
}

enum State {
    Follower,
    Master(Master),
    Fenced { device: DeviceId, epoch: u64 },
    Failed(String),
}

struct Master {
    node: Arc<Node>,
    barrier: ReplicatorBarrier,
    epoch: u64,
    supervisor: Option<JoinHandle<()>>,
}

/// One device of a till: its log, keys, device id, backup and role. See the module docs.
///
/// Its methods block (they drive the backup's HTTP calls on the till's own runtime); call them
/// from ordinary threads, not from inside an async runtime.
pub struct Till {
    keys: Keys,
    config: TillConfig,
    log: Arc<Log>,
    device: DeviceId,
    replica: Replica,
    runtime: tokio::runtime::Runtime,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for Till {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Till")
            .field("device", &self.device)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

impl Till {
    /// Opens (or creates) the device's log at `path` as a follower of the backup `config`
    /// names. Nothing is fetched yet: call [`Till::sync`], or [`Till::acquire`] to become master.
    pub fn open(path: impl AsRef<Path>, keys: Keys, config: TillConfig) -> Result<Self, Error> {
        let log = Arc::new(Log::open(path.as_ref()).map_err(|e| Error::Log(e.to_string()))?);
        Self::open_log(log, keys, config)
    }

    /// Restores a new device from the mnemonic's backup on the server into a new log at `path`
    /// (R7): fetches, opens and verifies every object, reporting through `progress`. A wrong
    /// mnemonic fails at the first object with [`Error::WrongKey`]. The device is then a
    /// follower at the backup's head; [`Till::acquire`] (after a handoff) or
    /// [`Till::takeover`] (the master is lost) starts the node.
    pub fn restore(
        path: impl AsRef<Path>,
        keys: Keys,
        config: TillConfig,
        progress: impl FnMut(Progress),
    ) -> Result<Self, Error> {
        let log = Arc::new(Log::open(path.as_ref()).map_err(|e| Error::Log(e.to_string()))?);
        Self::restore_log(log, keys, config, progress)
    }

    /// [`Till::restore`] into an empty log the caller opened ([`Till::open_log`]).
    pub fn restore_log(
        log: Arc<Log>,
        keys: Keys,
        config: TillConfig,
        progress: impl FnMut(Progress),
    ) -> Result<Self, Error> {
        let till = Self::open_log(log, keys, config)?;
        let remote = till.replica.remote().clone();
        till.runtime
            .block_on(till_vss::replica::restore(&remote, &till.log, progress))?;
        Ok(till)
    }

    /// [`Till::open`] on a log the caller opened, on a file or on other storage
    /// ([`Log::open_on`]; the tests cut the power under one).
    pub fn open_log(log: Arc<Log>, keys: Keys, config: TillConfig) -> Result<Self, Error> {
        let device = device_id(&log)?;
        let remote = remote(&keys, &config.backup)?;
        let replica = Replica::new(Arc::clone(&log), remote, device);
        // A runtime with a worker thread of its own, not a current-thread one: the replicator
        // shares this remote's HTTP connection pool, and a connection's I/O runs on the runtime
        // that opened it. On a current-thread runtime, driven only inside `block_on`, the
        // connections `acquire` opened stalled whenever the replicator picked one while nothing
        // was blocking on this runtime (while the node was being built, say): each such upload
        // waited out its timeout, and a takeover took 40 s instead of 40 ms.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("till-runtime")
            .enable_all()
            .build()
            .map_err(|e| Error::Build(format!("cannot build the till's runtime: {e}")))?;
        Ok(Self {
            keys,
            config,
            log,
            device,
            replica,
            runtime,
            state: Arc::new(Mutex::new(State::Follower)),
        })
    }

    /// This install's device id.
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The device's event log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// What the device is now.
    pub fn role(&self) -> Role {
        match &*self.lock() {
            State::Follower => Role::Follower,
            State::Master(m) => Role::Master { epoch: m.epoch },
            State::Fenced { device, epoch } => Role::Fenced {
                device: *device,
                epoch: *epoch,
            },
            State::Failed(reason) => Role::Failed {
                reason: reason.clone(),
            },
        }
    }

    /// The running node, for commands. Fails with [`Error::NotMaster`] on a follower and with
    /// [`Error::Fenced`] once another device took the lease: ask for it per command rather than
    /// keeping it.
    pub fn node(&self) -> Result<Arc<Node>, Error> {
        match &*self.lock() {
            State::Master(m) => Ok(Arc::clone(&m.node)),
            State::Follower => Err(Error::NotMaster),
            State::Fenced { device, epoch } => Err(Error::Fenced {
                device: *device,
                epoch: *epoch,
            }),
            State::Failed(reason) => {
                Err(Error::Backup(crate::BarrierError::Stopped(reason.clone())))
            }
        }
    }

    /// Bytes free on the disk that holds this device's log, or `None` when the log is not a
    /// file (or the file system cannot tell).
    pub fn disk_free(&self) -> Option<u64> {
        crate::disk::free_for(&self.log)
    }

    /// The backup's state: the replicator's on a master; `Fenced` on a fenced device; `Stopped`
    /// on a follower (it ships nothing).
    pub fn backup_state(&self) -> BackupState {
        match &*self.lock() {
            State::Master(m) => m.node.backup_state(),
            State::Fenced { device, epoch } => BackupState::Fenced {
                device: *device,
                epoch: *epoch,
            },
            State::Follower => BackupState::Stopped {
                reason: "this device is a follower; it ships nothing".to_owned(),
            },
            State::Failed(reason) => BackupState::Stopped {
                reason: reason.clone(),
            },
        }
    }

    /// The replicator's progress on a master (what is durable on the server), `None` otherwise.
    pub fn replicator_status(&self) -> Option<ReplicatorStatus> {
        match &*self.lock() {
            State::Master(m) => Some(m.barrier.handle().status()),
            _ => None,
        }
    }

    /// Who holds the lease, from the server's head; `None` for a backup nobody wrote yet.
    pub fn lease(&self) -> Result<Option<LeaseInfo>, Error> {
        let header = self.runtime.block_on(self.replica.lease())?;
        Ok(header.map(|h| LeaseInfo {
            device: h.device,
            epoch: h.epoch,
            held: h.state == LeaseState::Held,
        }))
    }

    /// Pulls every event the server has and this follower lacks into its read-only replica (R5).
    pub fn sync(&self) -> Result<SyncReport, Error> {
        self.sync_with_progress(|_| {})
    }

    /// [`Till::sync`], telling `progress` the segments to pull and each one applied (as
    /// [`Till::restore`] does), for a progress bar.
    pub fn sync_with_progress(
        &self,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<SyncReport, Error> {
        if let State::Master(_) = &*self.lock() {
            return Err(Error::InvalidInput(
                "this device is master: it ships the backup and has nothing to pull".to_owned(),
            ));
        }
        Ok(self
            .runtime
            .block_on(self.replica.sync_with_progress(&mut progress))?)
    }

    /// Becomes master: pulls everything (R5), acquires the lease (R4; only when it is released,
    /// new, or already this device's), starts shipping and starts the node. Fails with
    /// [`Error::LeaseHeld`] while another device holds the lease.
    pub fn acquire(&self) -> Result<(), Error> {
        self.become_master(None)
    }

    /// Becomes master by taking the lease over from a lost device, with the user's confirmation
    /// (R4). The other device is fenced on its next upload and stops its node.
    pub fn takeover(&self, confirmed: TakeoverConfirmed) -> Result<(), Error> {
        self.become_master(Some(confirmed))
    }

    fn become_master(&self, takeover: Option<TakeoverConfirmed>) -> Result<(), Error> {
        let mut state = self.lock();
        match &*state {
            State::Follower => {}
            State::Master(_) => return Err(Error::AlreadyRunning),
            State::Fenced { device, epoch } => {
                return Err(Error::Fenced {
                    device: *device,
                    epoch: *epoch,
                });
            }
            State::Failed(reason) => {
                return Err(Error::Backup(crate::BarrierError::Stopped(reason.clone())));
            }
        }
        let lease = self.runtime.block_on(async {
            match takeover {
                Some(confirmed) => self.replica.takeover(confirmed).await,
                None => self.replica.acquire().await,
            }
        })?;
        let epoch = lease.epoch();
        let handle = Replicator::start(
            Arc::clone(&self.log),
            self.replica.remote().clone(),
            lease,
            self.config.replicator.clone(),
        );
        let barrier = ReplicatorBarrier::new(handle.clone());
        let mut store = LogStore::new(Arc::clone(&self.log), Arc::new(barrier.clone()))
            .with_policy(self.config.wait_policy);
        if let Some(observer) = &self.config.observer {
            let observer = Arc::clone(observer);
            store = store.with_observer(move |p| observer(p));
        }
        let node = match Node::build(self.config.node.clone(), &self.keys, store)
            .and_then(|node| node.start().map(|()| node))
        {
            Ok(node) => Arc::new(node),
            Err(e) => {
                // Keep the lease (a retry resumes it) but ship what the build wrote.
                handle.stop();
                return Err(e);
            }
        };
        let supervisor = {
            let state = Arc::clone(&self.state);
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("till-supervisor".to_owned())
                .spawn(move || supervise(&state, &handle, epoch))
                .map_err(|e| Error::Build(format!("cannot start the supervisor thread: {e}")))?
        };
        *state = State::Master(Master {
            node,
            barrier,
            epoch,
            supervisor: Some(supervisor),
        });
        Ok(())
    }

    /// Hands the master role off: stops the node, ships everything and releases the lease (R4),
    /// so another device can acquire it. This device becomes a follower.
    pub fn handoff(&self) -> Result<(), Error> {
        let mut master = self.take_master()?;
        let stopped = master.node.stop();
        let released = self.runtime.block_on(master.barrier.handle().release());
        if let Some(supervisor) = master.supervisor.take() {
            let _ = supervisor.join();
        }
        match released {
            Ok(()) => {
                stopped.or_else(|e| match e {
                    Error::NotRunning => Ok(()),
                    other => Err(other),
                })?;
                Ok(())
            }
            Err(DurableError::Fenced(f)) => {
                *self.lock() = State::Fenced {
                    device: f.device,
                    epoch: f.epoch,
                };
                Err(Error::Fenced {
                    device: f.device,
                    epoch: f.epoch,
                })
            }
            Err(e) => {
                *self.lock() = State::Failed(e.to_string());
                Err(Error::Backup(crate::BarrierError::Stopped(e.to_string())))
            }
        }
    }

    /// Stops the node and the shipping without releasing the lease, as closing the app does:
    /// this device stays master and resumes with [`Till::acquire`]. What is not yet shipped
    /// ships then.
    pub fn stop(&self) -> Result<(), Error> {
        let mut master = self.take_master()?;
        let stopped = master.node.stop();
        master.barrier.handle().stop();
        if let Some(supervisor) = master.supervisor.take() {
            let _ = supervisor.join();
        }
        stopped
    }

    fn take_master(&self) -> Result<Master, Error> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Follower) {
            State::Master(m) => Ok(m),
            other => {
                *state = other;
                drop(state);
                Err(self.node().err().unwrap_or(Error::NotRunning))
            }
        }
    }

    /// ldk-node's payment records in the local log, newest update last: on a follower, the
    /// history as of its last sync, read without a node.
    pub fn payments(&self) -> Result<Vec<PaymentDetails>, Error> {
        let mut payments = Vec::new();
        for (name, _version) in self.log.list(LDK_PAYMENTS_NAMESPACE, "")? {
            let key = Key::new(LDK_PAYMENTS_NAMESPACE, "", name);
            let Some(stored) = self.log.get(&key)? else {
                continue;
            };
            let details =
                PaymentDetails::read(&mut &stored.value[..]).map_err(|e| Error::CorruptRecord {
                    what: key.to_string(),
                    reason: format!("{e:?}"),
                })?;
            payments.push(details);
        }
        payments.sort_by_key(|p| p.latest_update_timestamp);
        Ok(payments)
    }

    /// The channels and their claimable balances, read from the channel monitors in the local
    /// log (with their pending updates applied) without running a node. On a follower, as of
    /// its last sync.
    pub fn replica_balances(&self) -> Result<ReplicaBalances, Error> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let keys = Arc::new(KeysManager::new(
            &self.keys.ldk_seed(),
            now.as_secs(),
            now.subsec_nanos(),
            true,
        ));
        let persister = MonitorUpdatingPersister::new(
            Arc::new(ReadOnly(Arc::clone(&self.log))),
            Arc::new(Silent),
            0,
            Arc::clone(&keys),
            keys,
            Arc::new(NoBroadcast),
            Arc::new(FixedFees),
        );
        let monitors = persister
            .read_all_channel_monitors_with_updates()
            .map_err(|e| Error::CorruptRecord {
                what: "channel monitors".to_owned(),
                reason: e.to_string(),
            })?;
        let mut view = ReplicaBalances::default();
        for (_block, monitor) in monitors {
            let claimable_sats = monitor
                .get_claimable_balances()
                .iter()
                .map(|b| b.claimable_amount_satoshis())
                .sum();
            view.lightning_sats += claimable_sats;
            view.channels.push(ReplicaChannel {
                channel_id: monitor.channel_id(),
                counterparty: monitor.get_counterparty_node_id(),
                funding_txo: monitor.get_funding_txo().into_bitcoin_outpoint(),
                claimable_sats,
            });
        }
        Ok(view)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Till {
    fn drop(&mut self) {
        if let Ok(mut master) = self.take_master() {
            let _ = master.node.stop();
            master.barrier.handle().stop();
            if let Some(supervisor) = master.supervisor.take() {
                let _ = supervisor.join();
            }
        }
    }
}

/// Watches the replicator of the master at `epoch`: if it ends while that master still runs
/// (fenced, or failed for good), the till leaves the master role at once, so every command is
/// refused, and the node is stopped on a thread of its own.
fn supervise(state: &Mutex<State>, handle: &till_vss::replica::ReplicatorHandle, epoch: u64) {
    // The durable seq never reaches u64::MAX: this returns only when the replicator ends.
    let ended = handle.wait_durable_blocking(u64::MAX, None);
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    if !matches!(&*state, State::Master(m) if m.epoch == epoch) {
        // Handed off or stopped on purpose: the caller stops the node.
        return;
    }
    let next = match ended {
        Err(DurableError::Fenced(f)) => State::Fenced {
            device: f.device,
            epoch: f.epoch,
        },
        // The replicator's own reason when it failed (this device's log could not be
        // written, say), rather than the wait's.
        Err(e) => match handle.status().state {
            till_vss::replica::ReplicatorState::Failed(reason) => State::Failed(reason),
            _ => State::Failed(e.to_string()),
        },
        Ok(()) => State::Failed("the replicator ended".to_owned()),
    };
    let State::Master(master) = std::mem::replace(&mut *state, next) else {
        unreachable!("checked above");
    };
    drop(state);
    stop_fenced(master);
}

/// Stops a fenced node without waiting for it. A channel-state write parked by the barrier may
/// hold LDK's peer lock, so ldk-node's `stop` can wait for it for good; it runs on a thread of
/// its own. A node with parked writes is never dropped: its runtime would wait for them.
fn stop_fenced(master: Master) {
    let Master {
        node,
        barrier,
        supervisor,
        ..
    } = master;
    drop(supervisor);
    let _ = std::thread::Builder::new()
        .name("till-fenced-stop".to_owned())
        .spawn(move || {
            let _ = node.stop();
            if barrier.parked() > 0 {
                std::mem::forget(node);
            }
        });
}

/// The log as a read-only `KVStoreSync`, for reading LDK's records on a follower.
struct ReadOnly(Arc<Log>);

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::Other, "the replica is read-only".to_owned())
}

impl KVStoreSync for ReadOnly {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        let k = Key::new(primary, secondary, key);
        match self
            .0
            .get(&k)
            .map_err(|e| io::Error::new(io::ErrorKind::Other, e.to_string()))?
        {
            Some(stored) => Ok(stored.value),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no value for {k}"),
            )),
        }
    }

    fn write(&self, _: &str, _: &str, _: &str, _: Vec<u8>) -> io::Result<()> {
        Err(read_only())
    }

    fn remove(&self, _: &str, _: &str, _: &str, _: bool) -> io::Result<()> {
        Err(read_only())
    }

    fn list(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        Ok(self
            .0
            .list(primary, secondary)
            .map_err(|e| io::Error::new(io::ErrorKind::Other, e.to_string()))?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }
}

/// Reading monitors logs nothing.
struct Silent;

impl Logger for Silent {
    fn log(&self, _record: Record<'_>) {}
}

/// A follower broadcasts nothing: it only reads.
struct NoBroadcast;

impl BroadcasterInterface for NoBroadcast {
    fn broadcast_transactions(&self, _txs: &[&Transaction]) {}
}

/// Fee rates are not needed to read balances; LDK's floor is used.
struct FixedFees;

impl FeeEstimator for FixedFees {
    fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
        253
    }
}
