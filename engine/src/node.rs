//! The node: ldk-node built on the [`LogStore`], its event loop, and the till's commands.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_node::bitcoin::hashes::Hash as _;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{Address, Network, Txid};
use ldk_node::config::{BackgroundSyncConfig, Config, EsploraSyncConfig};
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::logger::{LogLevel, LogRecord, LogWriter};
use ldk_node::payment::{PaymentDetails, PaymentDirection, PaymentStatus};
use ldk_node::{Builder, ChannelDetails, DynStore, Event, PendingSweepBalance, UserChannelId};
use serde::{Deserialize, Serialize};
use till_log::{DeviceId, Key, Log, Write};
use tokio::sync::{broadcast, oneshot};

use crate::error::Error;
use crate::gate::{Alignment, Gate};
use crate::keys::{Keys, device_id};
use crate::store::{BackupState, LogStore, WaitPolicy};

/// Till's own namespace in the log, beside ldk-node's.
pub const TILL_NAMESPACE: &str = "till";
/// Sub-namespace of refund records, keyed by the refund payment's id (hex).
pub const REFUNDS: &str = "refunds";
/// Sub-namespace of the event loop's payment records, keyed by payment id (hex).
pub const PAYMENTS: &str = "payments";
/// Format version of the records Till writes under [`TILL_NAMESPACE`] (their first byte).
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// How often waits poll ldk-node's payment store when no event wakes them.
const POLL: Duration = Duration::from_millis(20);
/// Events kept for slow subscribers before they start missing some.
const EVENT_BUFFER: usize = 1024;

/// What a node needs besides its keys and its store.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The Bitcoin network.
    pub network: Network,
    /// Base URL of the Esplora server the node syncs from (the devnet in tests).
    pub esplora_url: String,
    /// Addresses to accept Lightning peers on; none for a node that only dials out.
    pub listen: Vec<SocketAddress>,
    /// The node's public alias (at most 32 bytes), if any.
    pub alias: Option<String>,
    /// An LSPS2 service to get just-in-time channels from, if any.
    pub lsp: Option<LspConfig>,
    /// Directory for ldk-node's own log file. The node's state is in the event log, not here.
    pub storage_dir: PathBuf,
    /// Whether ldk-node syncs the wallets and fee rates in the background. Tests turn it off and
    /// call [`Node::sync`] when they have mined.
    pub background_sync: bool,
    /// Below this many bytes free on the disk that holds the log, new sales (invoices) are
    /// refused, so the room left goes to the payments in flight ([`Error::DiskNearlyFull`]).
    /// Default [`DEFAULT_MIN_FREE_DISK`](crate::disk::DEFAULT_MIN_FREE_DISK); 0 turns it off.
    pub min_free_disk: u64,
}

impl NodeConfig {
    /// A config for `network` syncing from `esplora_url`, with ldk-node's log in `storage_dir`,
    /// background sync on, no listening address, alias or LSP.
    pub fn new(network: Network, esplora_url: impl Into<String>, storage_dir: PathBuf) -> Self {
        Self {
            network,
            esplora_url: esplora_url.into(),
            listen: Vec::new(),
            alias: None,
            lsp: None,
            storage_dir,
            background_sync: true,
            min_free_disk: crate::disk::DEFAULT_MIN_FREE_DISK,
        }
    }
}

/// An LSPS2 liquidity provider (bLIP-52): the node trusts it for zero-conf channels.
///
/// `Debug` does not show the token.
#[derive(Clone)]
pub struct LspConfig {
    /// The LSP's node id.
    pub node_id: PublicKey,
    /// Where to reach it.
    pub address: SocketAddress,
    /// The token the LSP authenticates this merchant with, if it wants one.
    pub token: Option<String>,
}

impl std::fmt::Debug for LspConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LspConfig")
            .field("node_id", &self.node_id)
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A BOLT11 invoice the till created, with the id its payment will have.
#[derive(Clone, Debug)]
pub struct CreatedInvoice {
    /// The invoice, to show as a QR code (its `Display` is the bech32 string).
    pub invoice: Bolt11Invoice,
    /// The id of the inbound payment, for [`Node::wait_payment`] and [`Node::payment`].
    pub payment_id: PaymentId,
}

/// The node's balances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    /// Everything in the on-chain wallet, confirmed or not.
    pub onchain_sats: u64,
    /// What the on-chain wallet can spend now (confirmed, minus the anchor-channel reserve).
    pub onchain_spendable_sats: u64,
    /// What the node would get back if every channel closed now.
    pub lightning_sats: u64,
    /// Funds from closed channels still on their way back to the wallet.
    pub pending_sats: u64,
}

/// Which payments [`Node::payments`] lists; `None` fields match everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    /// Only inbound or only outbound payments.
    pub direction: Option<PaymentDirection>,
    /// Only pending, succeeded or failed payments.
    pub status: Option<PaymentStatus>,
}

/// A refund recorded against the payment it pays back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The refund's own (outbound) payment.
    pub payment_id: PaymentId,
    /// The customer's payment it refunds.
    pub original: PaymentId,
    /// The refunded amount.
    pub amount_msat: u64,
    /// The refund payment's status in ldk-node's payment store.
    pub status: PaymentStatus,
}

/// What a node is and how it is doing.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The Lightning node id.
    pub node_id: PublicKey,
    /// The network it runs on.
    pub network: Network,
    /// Its public alias.
    pub alias: Option<String>,
    /// Where it listens.
    pub listening: Vec<SocketAddress>,
    /// This install's device id.
    pub device_id: DeviceId,
    /// Whether ldk-node runs.
    pub running: bool,
    /// Height of the best block the node knows.
    pub block_height: u32,
    /// Open channels (pending or ready).
    pub channels: usize,
    /// Connected peers.
    pub peers: usize,
    /// The backup's state.
    pub backup: BackupState,
    /// Bytes free on the disk that holds the log (`None` for a log that is not a file).
    pub disk_free: Option<u64>,
}

/// Till's record of a refund (`till/refunds/<refund payment id>`), postcard after the version byte.
#[derive(Serialize, Deserialize)]
pub(crate) struct RefundRecord {
    pub(crate) original: [u8; 32],
    pub(crate) amount_msat: u64,
    pub(crate) at_ms: u64,
}

/// Till's record of a settled or failed payment (`till/payments/<payment id>`), written by the
/// event loop when ldk-node reports the outcome.
#[derive(Serialize, Deserialize)]
pub(crate) struct PaymentRecord {
    pub(crate) inbound: bool,
    pub(crate) succeeded: bool,
    pub(crate) amount_msat: Option<u64>,
    pub(crate) fee_paid_msat: Option<u64>,
    pub(crate) at_ms: u64,
}

/// The merchant's Lightning node: ldk-node with every state change in the event log.
pub struct Node {
    inner: Arc<ldk_node::Node>,
    store: Arc<LogStore>,
    device: DeviceId,
    config: NodeConfig,
    events: broadcast::Sender<Event>,
    handled: Arc<Handled>,
    event_loop: Mutex<Option<EventLoop>>,
    aligned: Option<Alignment>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.inner.node_id())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Counts the events the event loop has handled, so waits wake when one is.
#[derive(Default)]
struct Handled {
    count: Mutex<u64>,
    changed: std::sync::Condvar,
}

impl Handled {
    fn count(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Waits until more than `seen` events were handled, or `timeout`; returns the count.
    fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let (count, _) = self
            .changed
            .wait_timeout_while(count, timeout, |count| *count <= seen)
            .unwrap_or_else(|p| p.into_inner());
        *count
    }
}

struct EventLoop {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<Result<(), Error>>,
}

impl Node {
    /// Builds the node from its config, its keys and the store over its event log. Stamps this
    /// install's device id (created on first use) into the log's writer. Does not start it.
    ///
    /// The same log file with the same keys builds the same node again: channels, payments and
    /// the on-chain wallet all come back from the log.
    pub fn build(config: NodeConfig, keys: &Keys, store: LogStore) -> Result<Self, Error> {
        let log = Arc::clone(store.log());
        let device = device_id(&log)?;
        let mut writer = log.writer();
        writer.device = device;
        log.set_writer(writer);

        let mut ldk_config = Config {
            network: config.network,
            ..Config::default()
        };
        if let (Some(lsp), Some(anchors)) =
            (&config.lsp, ldk_config.anchor_channels_config.as_mut())
        {
            // The LSP opens the merchant's channels just in time, and a fresh till has no
            // on-chain funds for the per-channel anchor reserve ldk-node otherwise demands
            // before it accepts an anchor channel. The LSP is trusted for zero-conf already.
            anchors.trusted_peers_no_reserve.push(lsp.node_id);
        }
        let mut builder = Builder::from_config(ldk_config);
        let storage = config
            .storage_dir
            .to_str()
            .ok_or_else(|| Error::InvalidInput("the storage directory is not UTF-8".to_owned()))?;
        builder.set_storage_dir_path(storage.to_owned());
        // ldk-node's file logger created the directory; with our writer, we do.
        std::fs::create_dir_all(&config.storage_dir).map_err(|e| {
            Error::Build(format!(
                "cannot create the node's directory {}: {e}",
                config.storage_dir.display()
            ))
        })?;
        builder.set_custom_logger(Arc::new(NodeLog {
            path: config.storage_dir.join("ldk_node.log"),
        }));
        let sync = EsploraSyncConfig {
            background_sync_config: config.background_sync.then(BackgroundSyncConfig::default),
        };
        builder.set_chain_source_esplora(config.esplora_url.clone(), Some(sync));
        if !config.listen.is_empty() {
            builder.set_listening_addresses(config.listen.clone())?;
        }
        if let Some(alias) = &config.alias {
            builder.set_node_alias(alias.clone())?;
        }
        if let Some(lsp) = &config.lsp {
            builder.set_liquidity_source_lsps2(lsp.node_id, lsp.address.clone(), lsp.token.clone());
        }
        keys.set_node_entropy(&mut builder);

        // Channel monitors complete only once a manager recording them is durable (the gate);
        // the monitors written after the log's last manager were never completed, so they are
        // set back before LDK reads them.
        let aligned = crate::gate::align_monitors(&log, |writes| {
            store
                .append(writes)
                .map(|outcome| outcome.head_seq)
                .map_err(|e| Error::Build(format!("cannot set the channel monitors back: {e}")))
        })?;
        let (store, gate) = if store.policy() == WaitPolicy::Nothing {
            (store, None)
        } else {
            let gate = Arc::new(Gate::new());
            builder.set_monitor_gate(gate.clone());
            (store.with_gate(Arc::clone(&gate)), Some(gate))
        };
        let store = Arc::new(store);
        if let Some(gate) = gate {
            gate.start_flusher(Arc::downgrade(&store))?;
        }
        let kv: Arc<DynStore> = store.clone();
        let inner = Arc::new(builder.build_with_store(kv)?);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Self {
            inner,
            store,
            device,
            config,
            events,
            handled: Arc::default(),
            event_loop: Mutex::new(None),
            aligned,
        })
    }

    /// What building the node set back in the channel monitors, if anything: after a crash,
    /// the monitor writes the last channel manager did not record (never completed, so no peer
    /// saw them).
    pub fn alignment(&self) -> Option<&Alignment> {
        self.aligned.as_ref()
    }

    /// Starts ldk-node (connects to peers, syncs) and the event loop.
    pub fn start(&self) -> Result<(), Error> {
        let mut event_loop = self.event_loop.lock().unwrap_or_else(|p| p.into_inner());
        if event_loop.is_some() {
            return Err(Error::AlreadyRunning);
        }
        self.inner.start()?;
        let (stop, stopped) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let store = Arc::clone(&self.store);
        let events = self.events.clone();
        let handled = Arc::clone(&self.handled);
        let thread = std::thread::Builder::new()
            .name("till-events".to_owned())
            .spawn(move || run_event_loop(inner, store, events, handled, stopped))
            .map_err(|e| Error::Build(format!("cannot start the event thread: {e}")))?;
        *event_loop = Some(EventLoop { stop, thread });
        Ok(())
    }

    /// Stops the event loop and ldk-node. Events not yet handled stay queued in the log and are
    /// delivered again after the next start.
    pub fn stop(&self) -> Result<(), Error> {
        let running = self
            .event_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(EventLoop { stop, thread }) = running else {
            return Err(Error::NotRunning);
        };
        let _ = stop.send(());
        let looped = thread
            .join()
            .unwrap_or_else(|_| Err(Error::Build("the event thread panicked".to_owned())));
        self.inner.stop()?;
        looped
    }

    /// Subscribes to ldk-node's events as the event loop handles them (after Till recorded
    /// them). A subscriber that falls more than 1024 events behind misses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The event log underneath.
    pub fn log(&self) -> &Arc<Log> {
        self.store.log()
    }

    /// The backup's state.
    pub fn backup_state(&self) -> BackupState {
        self.store.backup_state()
    }

    /// Syncs the on-chain and Lightning wallets with the chain now.
    pub fn sync(&self) -> Result<(), Error> {
        Ok(self.inner.sync_wallets()?)
    }

    /// What the node is and how it is doing.
    pub fn info(&self) -> NodeInfo {
        let status = self.inner.status();
        NodeInfo {
            node_id: self.inner.node_id(),
            network: self.config.network,
            alias: self.config.alias.clone(),
            listening: self.inner.listening_addresses().unwrap_or_default(),
            device_id: self.device,
            running: status.is_running,
            block_height: status.current_best_block.height,
            channels: self.inner.list_channels().len(),
            peers: self
                .inner
                .list_peers()
                .iter()
                .filter(|p| p.is_connected)
                .count(),
            backup: self.backup_state(),
            disk_free: self.disk_free(),
        }
    }

    /// Bytes free on the disk that holds the log, or `None` when the log is not a file (or the
    /// file system cannot tell).
    pub fn disk_free(&self) -> Option<u64> {
        crate::disk::free_for(self.store.log())
    }

    /// Refuses a new sale when the disk has less free space than the node keeps.
    fn room_for_a_sale(&self) -> Result<(), Error> {
        let floor = self.config.min_free_disk;
        match self.disk_free() {
            Some(free) if free < floor => Err(Error::DiskNearlyFull { free, floor }),
            _ => Ok(()),
        }
    }

    /// Creates a BOLT11 invoice for `amount_msat`, with `description`, valid for `expiry_secs`.
    pub fn create_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
    ) -> Result<CreatedInvoice, Error> {
        let description = Description::new(description.to_owned())
            .map_err(|e| Error::InvalidInput(format!("invoice description: {e}")))?;
        self.room_for_a_sale()?;
        let invoice = self.inner.bolt11_payment().receive(
            amount_msat,
            &Bolt11InvoiceDescription::Direct(description),
            expiry_secs,
        )?;
        let payment_id = payment_id_of(&invoice);
        Ok(CreatedInvoice {
            invoice,
            payment_id,
        })
    }

    /// Creates an invoice for `amount_msat` that an LSPS2 provider (see [`LspConfig`]) pays
    /// through a just-in-time channel, paying at most `max_lsp_fee_msat` for it.
    pub fn create_jit_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
        max_lsp_fee_msat: Option<u64>,
    ) -> Result<CreatedInvoice, Error> {
        let description = Description::new(description.to_owned())
            .map_err(|e| Error::InvalidInput(format!("invoice description: {e}")))?;
        self.room_for_a_sale()?;
        let invoice = self.inner.bolt11_payment().receive_via_jit_channel(
            amount_msat,
            &Bolt11InvoiceDescription::Direct(description),
            expiry_secs,
            max_lsp_fee_msat,
        )?;
        let payment_id = payment_id_of(&invoice);
        Ok(CreatedInvoice {
            invoice,
            payment_id,
        })
    }

    /// Pays a BOLT11 invoice; `amount_msat` is required exactly when the invoice has no amount.
    /// Returns once the payment is on its way; see [`Node::wait_payment`].
    pub fn pay(
        &self,
        invoice: &Bolt11Invoice,
        amount_msat: Option<u64>,
    ) -> Result<PaymentId, Error> {
        let bolt11 = self.inner.bolt11_payment();
        let id = match (invoice.amount_milli_satoshis(), amount_msat) {
            (Some(_), None) => bolt11.send(invoice, None)?,
            (None, Some(amount)) => bolt11.send_using_amount(invoice, amount, None)?,
            (Some(fixed), Some(amount)) if fixed == amount => bolt11.send(invoice, None)?,
            (Some(fixed), Some(amount)) => {
                return Err(Error::InvalidInput(format!(
                    "the invoice asks for {fixed} msat, not {amount} msat"
                )));
            }
            (None, None) => {
                return Err(Error::InvalidInput(
                    "the invoice has no amount; give one".to_owned(),
                ));
            }
        };
        Ok(id)
    }

    /// Refunds (part of) a received payment by paying the customer's invoice, and records the
    /// refund against the original payment under `till/refunds` before sending, so it is linked
    /// even if the device dies mid-payment. Refuses payments that were not received and settled,
    /// and refunds larger than what is left of the original after earlier (not failed) refunds.
    pub fn refund(
        &self,
        original: &PaymentId,
        invoice: &Bolt11Invoice,
        amount_msat: Option<u64>,
    ) -> Result<PaymentId, Error> {
        let paid = self
            .inner
            .payment(original)
            .ok_or_else(|| Error::PaymentNotFound(hex(&original.0)))?;
        let not_refundable = |reason: &str| Error::NotRefundable {
            payment: hex(&original.0),
            reason: reason.to_owned(),
        };
        if paid.direction != PaymentDirection::Inbound {
            return Err(not_refundable("it was sent by this till, not received"));
        }
        if paid.status != PaymentStatus::Succeeded {
            return Err(not_refundable("it has not been received yet"));
        }
        let received = paid.amount_msat.unwrap_or(0);
        let amount = amount_msat
            .or(invoice.amount_milli_satoshis())
            .ok_or_else(|| Error::InvalidInput("the refund invoice has no amount".to_owned()))?;
        let refunded: u64 = self
            .refunds_of(original)?
            .iter()
            .filter(|r| r.status != PaymentStatus::Failed)
            .map(|r| r.amount_msat)
            .sum();
        let remaining = received.saturating_sub(refunded);
        if amount > remaining {
            return Err(Error::RefundTooLarge {
                payment: hex(&original.0),
                requested_msat: amount,
                remaining_msat: remaining,
            });
        }

        let refund_id = payment_id_of(invoice);
        let record = RefundRecord {
            original: original.0,
            amount_msat: amount,
            at_ms: now_ms(),
        };
        let key = Key::new(TILL_NAMESPACE, REFUNDS, hex(&refund_id.0));
        self.store
            .append(vec![Write::put(key.clone(), encode(&record))])?;
        match self.pay(invoice, amount_msat) {
            Ok(id) => Ok(id),
            Err(e) => {
                // Nothing was sent: the record would claim a refund that never started.
                self.store.append(vec![Write::delete(key)])?;
                Err(e)
            }
        }
    }

    /// The refunds recorded against `original`, with their payments' current status.
    pub fn refunds_of(&self, original: &PaymentId) -> Result<Vec<Refund>, Error> {
        Ok(self
            .refunds()?
            .into_iter()
            .filter(|r| r.original == *original)
            .collect())
    }

    /// Every recorded refund.
    pub fn refunds(&self) -> Result<Vec<Refund>, Error> {
        let log = self.log();
        let mut refunds = Vec::new();
        for (name, _version) in log.list(TILL_NAMESPACE, REFUNDS)? {
            let key = Key::new(TILL_NAMESPACE, REFUNDS, name.clone());
            let Some(stored) = log.get(&key)? else {
                continue;
            };
            let record: RefundRecord = decode(&key, &stored.value)?;
            let payment_id = PaymentId(unhex32(&name).ok_or_else(|| Error::CorruptRecord {
                what: key.to_string(),
                reason: "the key is not a payment id".to_owned(),
            })?);
            let status = self
                .inner
                .payment(&payment_id)
                .map_or(PaymentStatus::Pending, |p| p.status);
            refunds.push(Refund {
                payment_id,
                original: PaymentId(record.original),
                amount_msat: record.amount_msat,
                status,
            });
        }
        Ok(refunds)
    }

    /// One payment's details, if the node knows it.
    pub fn payment(&self, id: &PaymentId) -> Option<PaymentDetails> {
        self.inner.payment(id)
    }

    /// Waits until the payment succeeded or failed and returns it; fails with
    /// [`Error::Timeout`] if it is still pending after `timeout`. Wakes as soon as the event
    /// loop handles an event (ldk-node settles a payment before it hands out its event), and
    /// checks every 20 ms besides.
    pub fn wait_payment(&self, id: &PaymentId, timeout: Duration) -> Result<PaymentDetails, Error> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.handled.count();
        loop {
            if let Some(payment) = self.inner.payment(id)
                && payment.status != PaymentStatus::Pending
            {
                return Ok(payment);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("payment {}", hex(&id.0)),
                    seconds: timeout.as_secs(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            seen = self.handled.wait_past(seen, POLL.min(left));
        }
    }

    /// Payments matching `filter`, oldest update first.
    pub fn payments(&self, filter: PaymentFilter) -> Vec<PaymentDetails> {
        let mut payments = self.inner.list_payments_with_filter(|p| {
            filter.direction.is_none_or(|d| p.direction == d)
                && filter.status.is_none_or(|s| p.status == s)
        });
        payments.sort_by_key(|p| p.latest_update_timestamp);
        payments
    }

    /// The node's balances.
    pub fn balances(&self) -> Balances {
        let b = self.inner.list_balances();
        let pending_sats = b
            .pending_balances_from_channel_closures
            .iter()
            .map(|p| match p {
                PendingSweepBalance::PendingBroadcast {
                    amount_satoshis, ..
                }
                | PendingSweepBalance::BroadcastAwaitingConfirmation {
                    amount_satoshis, ..
                }
                | PendingSweepBalance::AwaitingThresholdConfirmations {
                    amount_satoshis, ..
                } => *amount_satoshis,
            })
            .sum();
        Balances {
            onchain_sats: b.total_onchain_balance_sats,
            onchain_spendable_sats: b.spendable_onchain_balance_sats,
            lightning_sats: b.total_lightning_balance_sats,
            pending_sats,
        }
    }

    /// Opens a channel of `capacity_sats` to a peer, pushing `push_msat` to it. Returns the
    /// channel's local id; the channel is usable after `ChannelReady`.
    pub fn open_channel(
        &self,
        node_id: PublicKey,
        address: SocketAddress,
        capacity_sats: u64,
        push_msat: Option<u64>,
    ) -> Result<UserChannelId, Error> {
        Ok(self
            .inner
            .open_channel(node_id, address, capacity_sats, push_msat, None)?)
    }

    /// Closes a channel cooperatively.
    pub fn close_channel(
        &self,
        channel: &UserChannelId,
        counterparty: PublicKey,
    ) -> Result<(), Error> {
        Ok(self.inner.close_channel(channel, counterparty)?)
    }

    /// Force-closes a channel, broadcasting the latest state (funds are time-locked).
    pub fn force_close_channel(
        &self,
        channel: &UserChannelId,
        counterparty: PublicKey,
    ) -> Result<(), Error> {
        Ok(self
            .inner
            .force_close_channel(channel, counterparty, None)?)
    }

    /// The node's channels.
    pub fn channels(&self) -> Vec<ChannelDetails> {
        self.inner.list_channels()
    }

    /// A fresh on-chain receive address.
    pub fn new_address(&self) -> Result<Address, Error> {
        Ok(self.inner.onchain_payment().new_address()?)
    }

    /// Sends `amount_sats` on chain to `address` at the chain source's fee estimate.
    pub fn send_onchain(&self, address: &Address, amount_sats: u64) -> Result<Txid, Error> {
        Ok(self
            .inner
            .onchain_payment()
            .send_to_address(address, amount_sats, None)?)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self
            .event_loop
            .get_mut()
            .map(|l| l.is_some())
            .unwrap_or(false)
        {
            let _ = self.stop();
        }
    }
}

/// Parses a BOLT11 invoice from its string.
pub fn parse_invoice(text: &str) -> Result<Bolt11Invoice, Error> {
    Bolt11Invoice::from_str(text.trim())
        .map_err(|e| Error::InvalidInput(format!("not a BOLT11 invoice: {e}")))
}

/// The id ldk-node gives a BOLT11 invoice's payment, inbound or outbound: its payment hash.
pub fn payment_id_of(invoice: &Bolt11Invoice) -> PaymentId {
    PaymentId(invoice.payment_hash().to_byte_array())
}

/// ldk-node's log, in the file and format of ldk-node's own file logger (`ldk_node.log` in the
/// node's storage directory, debug level and up), except that a failed write is dropped: ldk-node's
/// logger panics when it cannot open the file (a full disk, a removed directory), and a node
/// stopping on a thread of its own after its directory is gone then aborted the process.
struct NodeLog {
    path: PathBuf,
}

impl LogWriter for NodeLog {
    fn log(&self, record: LogRecord<'_>) {
        if record.level < LogLevel::Debug {
            return;
        }
        let line = format!(
            "{} {:<5} [{}:{}] {}\n",
            utc_now(),
            record.level.to_string(),
            record.module_path,
            record.line,
            record.args
        );
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = std::io::Write::write_all(&mut file, line.as_bytes());
        }
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS.mmm`.
fn utc_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (secs, ms) = ((ms / 1000) as i64, ms % 1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{ms:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Handles ldk-node's events until told to stop: records each payment outcome under
/// `till/payments`, marks the event handled only once it is recorded (so a crash redelivers
/// it), and passes it on to subscribers.
fn run_event_loop(
    node: Arc<ldk_node::Node>,
    store: Arc<LogStore>,
    events: broadcast::Sender<Event>,
    handled: Arc<Handled>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Build(format!("cannot build the event loop's runtime: {e}")))?;
    loop {
        // Only the wait runs on this thread's runtime: ldk-node's `event_handled` blocks on its
        // own runtime, which it cannot do from inside another current-thread runtime.
        let event = runtime.block_on(async {
            tokio::select! {
                _ = &mut stop => None,
                event = node.next_event_async() => Some(event),
            }
        });
        let Some(event) = event else {
            return Ok(());
        };
        record(&node, &store, &event)?;
        node.event_handled()?;
        let _ = events.send(event);
        handled.bump();
    }
}

fn record(node: &ldk_node::Node, store: &LogStore, event: &Event) -> Result<(), Error> {
    let id = match event {
        Event::PaymentReceived { payment_id, .. }
        | Event::PaymentSuccessful { payment_id, .. }
        | Event::PaymentFailed { payment_id, .. } => *payment_id,
        _ => None,
    };
    let Some(id) = id else {
        return Ok(());
    };
    let details = node.payment(&id);
    let record = PaymentRecord {
        inbound: matches!(event, Event::PaymentReceived { .. }),
        succeeded: !matches!(event, Event::PaymentFailed { .. }),
        amount_msat: match event {
            Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
            _ => details.as_ref().and_then(|d| d.amount_msat),
        },
        fee_paid_msat: match event {
            Event::PaymentSuccessful { fee_paid_msat, .. } => *fee_paid_msat,
            _ => None,
        },
        at_ms: now_ms(),
    };
    store.append(vec![Write::put(
        Key::new(TILL_NAMESPACE, PAYMENTS, hex(&id.0)),
        encode(&record),
    )])?;
    Ok(())
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut bytes = vec![RECORD_FORMAT_VERSION];
    bytes.extend(postcard::to_stdvec(record).expect("records serialize"));
    bytes
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &Key, bytes: &[u8]) -> Result<T, Error> {
    match bytes {
        [RECORD_FORMAT_VERSION, rest @ ..] => {
            postcard::from_bytes(rest).map_err(|e| Error::CorruptRecord {
                what: key.to_string(),
                reason: e.to_string(),
            })
        }
        [found, ..] => Err(Error::UnknownRecordVersion {
            what: key.to_string(),
            found: *found,
            supported: RECORD_FORMAT_VERSION,
        }),
        [] => Err(Error::CorruptRecord {
            what: key.to_string(),
            reason: "the record is empty".to_owned(),
        }),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    use super::*;

    #[test]
    fn a_wait_for_handled_events_wakes_when_one_is_handled_and_not_before() {
        let handled = Arc::new(Handled::default());
        // Nothing handled: the wait runs out and reports the same count.
        assert_eq!(handled.wait_past(0, Duration::from_millis(30)), 0);
        let bumper = Arc::clone(&handled);
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            bumper.bump();
        });
        // Woken by the event long before the 60 s timeout.
        assert_eq!(handled.wait_past(0, Duration::from_secs(60)), 1);
        assert!(started.elapsed() < Duration::from_secs(30));
        thread.join().unwrap();
        // An event handled before the wait began wakes it at once.
        assert_eq!(handled.wait_past(0, Duration::from_secs(60)), 1);
    }

    #[test]
    fn records_carry_their_version_and_refuse_others() {
        let key = Key::new(TILL_NAMESPACE, REFUNDS, "00");
        let record = RefundRecord {
            original: [7; 32],
            amount_msat: 300,
            at_ms: 1,
        };
        let bytes = encode(&record);
        assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        // original (32 raw bytes), 300 as a varint (ac 02), 1 as a varint.
        assert_eq!(&bytes[1..33], &[7; 32]);
        assert_eq!(&bytes[33..], &[0xac, 0x02, 0x01]);
        let back: RefundRecord = decode(&key, &bytes).unwrap();
        assert_eq!(
            (back.original, back.amount_msat, back.at_ms),
            ([7; 32], 300, 1)
        );

        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(matches!(
            decode::<RefundRecord>(&key, &newer),
            Err(Error::UnknownRecordVersion { found: 2, .. })
        ));
        assert!(matches!(
            decode::<RefundRecord>(&key, &bytes[..10]),
            Err(Error::CorruptRecord { .. })
        ));
        assert!(matches!(
            decode::<RefundRecord>(&key, &[]),
            Err(Error::CorruptRecord { .. })
        ));
    }

    #[test]
    fn the_node_log_has_ldk_nodes_time_format_and_survives_a_removed_directory() {
        let now = utc_now();
        assert_eq!(now.len(), "2026-11-21 13:45:00.123".len(), "{now}");
        assert!(now.starts_with("20"), "{now}");
        let dir = tempfile::tempdir().unwrap();
        let log = NodeLog {
            path: dir.path().join("ldk_node.log"),
        };
        log.log(LogRecord {
            level: LogLevel::Info,
            args: format_args!("kept"),
            module_path: "till",
            line: 1,
        });
        let written = std::fs::read_to_string(dir.path().join("ldk_node.log")).unwrap();
        assert!(written.contains("INFO  [till:1] kept"), "{written}");
        let path = dir.path().to_owned();
        drop(dir);
        log.log(LogRecord {
            level: LogLevel::Info,
            args: format_args!("dropped"),
            module_path: "till",
            line: 2,
        });
        assert!(!path.exists());
    }

    #[test]
    fn payment_ids_round_trip_through_hex() {
        let id = [0xab; 32];
        assert_eq!(unhex32(&hex(&id)), Some(id));
        assert_eq!(unhex32("ab"), None);
        assert_eq!(unhex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn the_lsp_token_is_not_shown() {
        let lsp = LspConfig {
            node_id: PublicKey::from_str(
                "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619",
            )
            .unwrap(),
            address: SocketAddress::TcpIpV4 {
                addr: [127, 0, 0, 1],
                port: 9735,
            },
            token: Some("s3cret-token".to_owned()),
        };
        assert!(!format!("{lsp:?}").contains("s3cret"));
    }
}
