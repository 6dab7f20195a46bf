// Till's patch to ldk-node 0.7.1 (see TILL-PATCH.md at the crate root).
//
// ldk-node 0.7.1 persists channel monitors synchronously: every monitor write reports
// `ChannelMonitorUpdateStatus::Completed` as soon as the store returns, and LDK then releases the
// peer messages that depend on it. A store that backs up remotely cannot also make sure that a
// `ChannelManager` recording the update is durable before that happens, so a device killed in
// between restores with a manager older than its monitors, and LDK force-closes the channel.
//
// A `MonitorGate`, set with `Builder::set_monitor_gate`, decides per write: it stores the write
// (through the closure it is given) and says whether the write is complete. Writes it reports as
// in progress are completed later through the `MonitorCompleter` it is attached to, which calls
// `ChainMonitor::channel_monitor_updated`; LDK holds every message that depends on the write until
// then. The completer also serializes the node's `ChannelManager` on demand (so a gate can have a
// manager recording a write stored without waiting for the background processor's next turn) and
// hands the messages completed writes released to the peers at once. Without a gate, ldk-node
// behaves exactly as 0.7.1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::sign::InMemorySigner;
use lightning::util::persist::MonitorName;
use lightning::util::ser::Writeable;

use crate::types::{ChainMonitor, ChannelManager, PeerManager, Persister};

/// What LDK asked to persist.
#[derive(Debug, Clone, Copy)]
pub enum MonitorWrite<'a> {
	/// The first monitor of a new channel (`Persist::persist_new_channel`).
	NewChannel,
	/// One update (`Persist::update_persisted_channel` with an update).
	Update(&'a ChannelMonitorUpdate),
	/// A whole monitor without an update: chain sync, or an update the monitor refused. LDK
	/// never waits for these, so a gate cannot hold them back.
	Full,
}

/// Completes monitor writes a [`MonitorGate`] reported as in progress.
pub trait MonitorCompleter: Send + Sync {
	/// Tells LDK the write of `update_id` for `channel_id` is complete. Call it exactly once for
	/// every write the gate answered `true` for.
	fn complete(&self, channel_id: ChannelId, update_id: u64);

	/// The node's `ChannelManager`, serialized as it is now, exactly as the background processor
	/// serializes it for the store; `None` once the node is gone. It takes the manager's
	/// consistency lock: never call it while holding a lock that a thread inside
	/// [`MonitorGate::persist`] may be waiting for.
	fn encode_manager(&self) -> Option<Vec<u8>> {
		None
	}

	/// Hands the peer messages that completed writes released to the peers now
	/// (`PeerManager::process_events`), rather than at the background processor's next turn.
	fn release(&self) {}
}

/// Decides when LDK may treat a channel-monitor write as persisted.
pub trait MonitorGate: Send + Sync {
	/// Stores a write by calling `store` (ldk-node's own persister, which writes to the node's
	/// store), then says whether it is complete: `false` reports it completed at once, `true`
	/// reports it in progress, to be completed later through the attached [`MonitorCompleter`].
	/// [`MonitorWrite::Full`] writes cannot be held back; the answer for them is ignored.
	fn persist(
		&self, channel_id: ChannelId, update_id: u64, write: MonitorWrite<'_>,
		store: &mut dyn FnMut() -> ChannelMonitorUpdateStatus,
	) -> Result<bool, ()>;

	/// Called once, when the node is built, with what completes in-progress writes.
	fn attach(&self, completer: Arc<dyn MonitorCompleter>);
}

/// The `Persist` the node's `ChainMonitor` uses: ldk-node's persister, behind the gate if any.
pub(crate) struct GatedPersister {
	inner: Arc<Persister>,
	gate: Option<Arc<dyn MonitorGate>>,
	// Off while the builder hands the stored monitors back to the `ChainMonitor` (those are
	// already persisted); on once the node is built.
	armed: AtomicBool,
	completer: OnceLock<Arc<ChainMonitorCompleter>>,
}

impl GatedPersister {
	pub(crate) fn new(inner: Arc<Persister>, gate: Option<Arc<dyn MonitorGate>>) -> Self {
		Self { inner, gate, armed: AtomicBool::new(false), completer: OnceLock::new() }
	}

	pub(crate) fn arm(
		&self, chain_monitor: &Arc<ChainMonitor>, channel_manager: &Arc<ChannelManager>,
	) {
		if let Some(gate) = &self.gate {
			let completer = Arc::new(ChainMonitorCompleter {
				chain_monitor: Arc::downgrade(chain_monitor),
				channel_manager: Arc::downgrade(channel_manager),
				peer_manager: OnceLock::new(),
			});
			let _ = self.completer.set(Arc::clone(&completer));
			gate.attach(completer);
		}
		self.armed.store(true, Ordering::Release);
	}

	/// Lets the completer send released messages; the peer manager is built after the gate is
	/// armed.
	pub(crate) fn set_peer_manager(&self, peer_manager: &Arc<PeerManager>) {
		if let Some(completer) = self.completer.get() {
			let _ = completer.peer_manager.set(Arc::downgrade(peer_manager));
		}
	}

	fn gated(
		&self, channel_id: ChannelId, update_id: u64, write: MonitorWrite<'_>,
		mut store: impl FnMut() -> ChannelMonitorUpdateStatus,
	) -> ChannelMonitorUpdateStatus {
		let gate = match &self.gate {
			Some(gate) if self.armed.load(Ordering::Acquire) => gate,
			_ => return store(),
		};
		let mut status = ChannelMonitorUpdateStatus::Completed;
		let mut store_once = || {
			status = store();
			status
		};
		match gate.persist(channel_id, update_id, write, &mut store_once) {
			Err(()) => ChannelMonitorUpdateStatus::UnrecoverableError,
			Ok(_) if status != ChannelMonitorUpdateStatus::Completed => status,
			Ok(_) if matches!(write, MonitorWrite::Full) => status,
			Ok(true) => ChannelMonitorUpdateStatus::InProgress,
			Ok(false) => ChannelMonitorUpdateStatus::Completed,
		}
	}
}

impl Persist<InMemorySigner> for GatedPersister {
	fn persist_new_channel(
		&self, monitor_name: MonitorName, monitor: &ChannelMonitor<InMemorySigner>,
	) -> ChannelMonitorUpdateStatus {
		let name = monitor_name.clone();
		self.gated(
			monitor.channel_id(),
			monitor.get_latest_update_id(),
			MonitorWrite::NewChannel,
			|| self.inner.persist_new_channel(name.clone(), monitor),
		)
	}

	fn update_persisted_channel(
		&self, monitor_name: MonitorName, update: Option<&ChannelMonitorUpdate>,
		monitor: &ChannelMonitor<InMemorySigner>,
	) -> ChannelMonitorUpdateStatus {
		let (update_id, write) = match update {
			Some(update) => (update.update_id, MonitorWrite::Update(update)),
			None => (monitor.get_latest_update_id(), MonitorWrite::Full),
		};
		let name = monitor_name.clone();
		self.gated(monitor.channel_id(), update_id, write, || {
			self.inner.update_persisted_channel(name.clone(), update, monitor)
		})
	}

	fn archive_persisted_channel(&self, monitor_name: MonitorName) {
		Persist::<InMemorySigner>::archive_persisted_channel(&*self.inner, monitor_name)
	}
}

// Weak references: the gate (and so this) lives as long as the store, which outlives the node.
struct ChainMonitorCompleter {
	chain_monitor: Weak<ChainMonitor>,
	channel_manager: Weak<ChannelManager>,
	peer_manager: OnceLock<Weak<PeerManager>>,
}

impl MonitorCompleter for ChainMonitorCompleter {
	fn complete(&self, channel_id: ChannelId, update_id: u64) {
		if let Some(chain_monitor) = self.chain_monitor.upgrade() {
			// An error means the channel's monitor is gone (archived): nothing waits for it.
			let _ = chain_monitor.channel_monitor_updated(channel_id, update_id);
		}
	}

	fn encode_manager(&self) -> Option<Vec<u8>> {
		self.channel_manager.upgrade().map(|channel_manager| channel_manager.encode())
	}

	fn release(&self) {
		if let Some(peer_manager) = self.peer_manager.get().and_then(Weak::upgrade) {
			peer_manager.process_events();
		}
	}
}
