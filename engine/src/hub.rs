//! The device side of till-server's hub (`/api/v1/hub`; the protocol is `docs/HUB.md`).
//!
//! A [`HubClient`] keeps one WebSocket to the server open for as long as it runs, reconnecting
//! with exponential backoff when it drops, and follows what the server announces: the store's
//! master device and the server's Lightning node address ([`HubStatus`]). With a
//! [`CommandExecutor`] (on the master: the [`Node`]), it runs the commands the server routes to
//! it and reports every received payment as an invoice update. Answers and updates stay in an
//! outbox until the server acknowledges them and are sent again after a reconnect, so none is
//! lost silently. [`HubClient::command`] sends a command through the master from any device (a
//! follower's way to act), answered by the master or by the server's clear error.
//!
//! The executor is a trait object, so the roles layer can plug in whichever device is master.

use crate::Node;
use crate::node::{PaymentFilter, parse_invoice};
use futures_util::{SinkExt, StreamExt};
use ldk_node::bitcoin::Address;
use ldk_node::bitcoin::address::NetworkUnchecked;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::{Event, UserChannelId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use till_log::DeviceId;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The hub protocol version this client speaks (every message's `v`).
pub const HUB_PROTOCOL_VERSION: u64 = 1;

/// A command for the store's master device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HubCommand {
    /// Create a BOLT11 invoice. Answer: `{bolt11, payment_hash, payment_id}`.
    CreateInvoice {
        /// The amount.
        amount_sat: u64,
        /// Shown in the customer's wallet.
        #[serde(default)]
        description: String,
        /// Seconds until it expires.
        expiry_secs: u32,
    },
    /// Pay a BOLT11 invoice. Answer: `{payment_id}`.
    Pay {
        /// The invoice.
        bolt11: String,
        /// Required exactly when the invoice has no amount.
        #[serde(default)]
        amount_msat: Option<u64>,
    },
    /// Refund a received payment by paying the customer's invoice. Answer: `{payment_id}`.
    Refund {
        /// The received payment's id (hex).
        payment_id: String,
        /// The customer's invoice.
        bolt11: String,
        /// Required when the invoice has no amount.
        #[serde(default)]
        amount_msat: Option<u64>,
    },
    /// The node's balances. Answer: `{onchain_sats, onchain_spendable_sats, lightning_sats,
    /// pending_sats}`.
    Balances,
    /// The node's payments, oldest update first. Answer: a list.
    Payments,
    /// What the node is. Answer: `{node_id, network, alias, listening, device_id, block_height,
    /// channels, peers}`.
    Info,
    /// The node's channels. Answer: a list of `{channel_id, user_channel_id, counterparty,
    /// capacity_sat, outbound_msat, inbound_msat, ready, usable, funding_txid}`.
    Channels,
    /// Opens a channel to a peer. Answer: `{user_channel_id}`.
    OpenChannel {
        /// The peer's node id (hex).
        node_id: String,
        /// Where to reach it (`host:port`).
        address: String,
        /// The channel's capacity.
        capacity_sat: u64,
        /// Given to the peer at opening, if any.
        #[serde(default)]
        push_msat: Option<u64>,
    },
    /// Closes a channel cooperatively, or by force. Answer: `{}`.
    CloseChannel {
        /// The channel's local id (decimal, as `channels` lists it).
        user_channel_id: String,
        /// The peer's node id (hex).
        counterparty: String,
        /// Broadcast the latest state instead of negotiating (funds are time-locked).
        #[serde(default)]
        force: bool,
    },
    /// A fresh on-chain receive address. Answer: `{address}`.
    NewAddress,
    /// Syncs the on-chain and Lightning wallets with the chain now. Answer: `{block_height}`.
    SyncWallets,
    /// Sends on chain. Answer: `{txid}`.
    SendOnchain {
        /// Where to.
        address: String,
        /// How much.
        amount_sat: u64,
    },
}

/// Runs commands on this device: the master's node.
pub trait CommandExecutor: Send + Sync + 'static {
    /// Runs one command (on a blocking thread) and returns its JSON answer, or an error message
    /// for the device that asked.
    fn execute(&self, command: &HubCommand) -> Result<Value, String>;

    /// The node's events, from which received payments are reported as invoice updates.
    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        None
    }

    /// The payments this node received within the last [`RECEIPTS_WINDOW`] (payment hash, amount),
    /// reported again at the start of every hub session: an update lost with an earlier session
    /// (the app restarted, the till was handed off, the event stream lagged) still reaches the
    /// server, which ignores an invoice it already knows as paid.
    fn recent_receipts(&self) -> Vec<([u8; 32], Option<u64>)> {
        Vec::new()
    }
}

/// How far back [`CommandExecutor::recent_receipts`] looks: the longest invoice expiry the store
/// API allows, a week.
pub const RECEIPTS_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A payment as the hub's `payments` answer lists it (docs/HUB.md); also how a follower's replica
/// shows its payments, so both read the same.
pub fn payment_json(p: &ldk_node::payment::PaymentDetails) -> Value {
    json!({
        "payment_id": hex(&p.id.0),
        "direction": match p.direction {
            PaymentDirection::Inbound => "inbound",
            PaymentDirection::Outbound => "outbound",
        },
        "status": match p.status {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        },
        "amount_msat": p.amount_msat,
        "fee_paid_msat": p.fee_paid_msat,
        "updated_at": p.latest_update_timestamp,
    })
}

fn parse_node_id(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_str(text.trim())
        .map_err(|_| format!("{text:?} is not a node id (66 hex digits)"))
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl CommandExecutor for Node {
    fn execute(&self, command: &HubCommand) -> Result<Value, String> {
        let text = |e: crate::Error| e.to_string();
        match command {
            HubCommand::CreateInvoice {
                amount_sat,
                description,
                expiry_secs,
            } => {
                let msat = amount_sat
                    .checked_mul(1000)
                    .ok_or("the amount is too large")?;
                let created = self
                    .create_invoice(msat, description, *expiry_secs)
                    .map_err(text)?;
                let hash: &[u8] = created.invoice.payment_hash().as_ref();
                Ok(json!({
                    "bolt11": created.invoice.to_string(),
                    "payment_hash": hex(hash),
                    "payment_id": hex(&created.payment_id.0),
                }))
            }
            HubCommand::Pay {
                bolt11,
                amount_msat,
            } => {
                let invoice = parse_invoice(bolt11).map_err(text)?;
                let id = self.pay(&invoice, *amount_msat).map_err(text)?;
                Ok(json!({ "payment_id": hex(&id.0) }))
            }
            HubCommand::Refund {
                payment_id,
                bolt11,
                amount_msat,
            } => {
                let original = unhex32(payment_id)
                    .ok_or_else(|| format!("payment_id {payment_id:?} is not 64 hex digits"))?;
                let invoice = parse_invoice(bolt11).map_err(text)?;
                let id = self
                    .refund(&PaymentId(original), &invoice, *amount_msat)
                    .map_err(text)?;
                Ok(json!({ "payment_id": hex(&id.0) }))
            }
            HubCommand::Balances => {
                let b = self.balances();
                Ok(json!({
                    "onchain_sats": b.onchain_sats,
                    "onchain_spendable_sats": b.onchain_spendable_sats,
                    "lightning_sats": b.lightning_sats,
                    "pending_sats": b.pending_sats,
                }))
            }
            HubCommand::Payments => {
                let list: Vec<Value> = self
                    .payments(PaymentFilter::default())
                    .into_iter()
                    .map(|p| payment_json(&p))
                    .collect();
                Ok(Value::Array(list))
            }
            HubCommand::Info => {
                let info = self.info();
                Ok(json!({
                    "node_id": info.node_id.to_string(),
                    "network": info.network.to_string(),
                    "alias": info.alias,
                    "listening": info.listening.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "device_id": info.device_id.to_string(),
                    "block_height": info.block_height,
                    "channels": info.channels,
                    "peers": info.peers,
                }))
            }
            HubCommand::Channels => Ok(Value::Array(
                self.channels()
                    .into_iter()
                    .map(|c| {
                        json!({
                            "channel_id": c.channel_id.to_string(),
                            "user_channel_id": c.user_channel_id.0.to_string(),
                            "counterparty": c.counterparty_node_id.to_string(),
                            "capacity_sat": c.channel_value_sats,
                            "outbound_msat": c.outbound_capacity_msat,
                            "inbound_msat": c.inbound_capacity_msat,
                            "ready": c.is_channel_ready,
                            "usable": c.is_usable,
                            "funding_txid": c.funding_txo.map(|o| o.txid.to_string()),
                        })
                    })
                    .collect(),
            )),
            HubCommand::OpenChannel {
                node_id,
                address,
                capacity_sat,
                push_msat,
            } => {
                let node_id = parse_node_id(node_id)?;
                let address = SocketAddress::from_str(address)
                    .map_err(|_| format!("{address:?} is not a peer address (host:port)"))?;
                let id = self
                    .open_channel(node_id, address, *capacity_sat, *push_msat)
                    .map_err(text)?;
                Ok(json!({ "user_channel_id": id.0.to_string() }))
            }
            HubCommand::CloseChannel {
                user_channel_id,
                counterparty,
                force,
            } => {
                let id = user_channel_id.parse::<u128>().map_err(|_| {
                    format!("{user_channel_id:?} is not a channel's local id (a decimal number)")
                })?;
                let counterparty = parse_node_id(counterparty)?;
                let id = UserChannelId(id);
                if *force {
                    self.force_close_channel(&id, counterparty)
                } else {
                    self.close_channel(&id, counterparty)
                }
                .map_err(text)?;
                Ok(json!({}))
            }
            HubCommand::SyncWallets => {
                self.sync().map_err(text)?;
                Ok(json!({ "block_height": self.info().block_height }))
            }
            HubCommand::NewAddress => {
                let address = self.new_address().map_err(text)?;
                Ok(json!({ "address": address.to_string() }))
            }
            HubCommand::SendOnchain {
                address,
                amount_sat,
            } => {
                let address = address
                    .parse::<Address<NetworkUnchecked>>()
                    .map_err(|e| format!("{address:?} is not a Bitcoin address: {e}"))?
                    .require_network(self.info().network)
                    .map_err(|e| format!("{address:?} is for another network: {e}"))?;
                let txid = self.send_onchain(&address, *amount_sat).map_err(text)?;
                Ok(json!({ "txid": txid.to_string() }))
            }
        }
    }

    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        Some(self.subscribe())
    }

    fn recent_receipts(&self) -> Vec<([u8; 32], Option<u64>)> {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.saturating_sub(RECEIPTS_WINDOW).as_secs());
        self.payments(PaymentFilter {
            direction: Some(PaymentDirection::Inbound),
            status: Some(PaymentStatus::Succeeded),
        })
        .into_iter()
        .filter(|p| p.latest_update_timestamp >= since)
        .filter_map(|p| match p.kind {
            PaymentKind::Bolt11 { hash, .. } | PaymentKind::Bolt11Jit { hash, .. } => {
                Some((hash.0, p.amount_msat))
            }
            _ => None,
        })
        .collect()
    }
}

/// Where and how a device connects to the hub.
#[derive(Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// The server's base URL (`http://host:port`) or the hub's (`ws://host:port/api/v1/hub`).
    pub url: String,
    /// The device's owner bearer token.
    pub token: String,
    /// The store's name on the server.
    pub store: String,
    /// This device.
    pub device_id: DeviceId,
    /// Runs commands routed to this device (the master's node); `None` answers them with an error.
    pub executor: Option<Arc<dyn CommandExecutor>>,
    /// The first reconnect delay; doubled after each failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest reconnect delay.
    pub max_backoff: Duration,
    /// How long [`HubClient::command`] waits for its answer.
    pub command_timeout: Duration,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("HubConfig")
            .field("url", &self.url)
            .field("store", &self.store)
            .field("device_id", &self.device_id)
            .field("executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

impl HubConfig {
    /// A config with a 100 ms to 5 s backoff and a 60 s command timeout.
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        store: impl Into<String>,
        device_id: DeviceId,
        executor: Option<Arc<dyn CommandExecutor>>,
    ) -> Self {
        HubConfig {
            url: url.into(),
            token: token.into(),
            store: store.into(),
            device_id,
            executor,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// The store's master as the server announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterInfo {
    /// The master's device id (32 hex digits).
    pub device: String,
    /// Its lease epoch.
    pub epoch: u64,
}

/// What the client knows, updated as the server tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStatus {
    /// Connected and welcomed.
    pub connected: bool,
    /// How many times a connection was welcomed (1 after the first; more after reconnects).
    pub sessions: u64,
    /// The store's master, if a device holds the lease.
    pub master: Option<MasterInfo>,
    /// The server's Lightning node address, if it has one.
    pub node_address: Option<String>,
    /// The last connection failure, for display.
    pub last_error: Option<String>,
    /// Set when the server refused this device for good (wrong token for the store): the client
    /// stopped and does not retry.
    pub refused: Option<String>,
}

/// Why a command sent through the hub has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The master or the server answered with an error (for example "no master device is online
    /// for store ...").
    #[error("{0}")]
    Refused(String),
    /// No answer came in time; the command's outcome is unknown.
    #[error("no answer from the hub within {seconds} s; the command's outcome is unknown")]
    Timeout {
        /// How long the client waited.
        seconds: u64,
    },
    /// The client was stopped or the server refused this device.
    #[error("the hub client stopped: {0}")]
    Stopped(String),
}

struct Shared {
    config: HubConfig,
    status: watch::Sender<HubStatus>,
    /// The current connection's outgoing queue, if connected.
    conn: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Answers and invoice updates not yet acknowledged, by id, in order of creation.
    outbox: Mutex<BTreeMap<u64, (String, String)>>,
    /// Commands not yet sent (no connection when they were made), by id.
    unsent: Mutex<Vec<String>>,
    /// Commands waiting for their result, by id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Result<Value, HubError>>>>,
    next: AtomicU64,
}

impl Shared {
    fn send(&self, text: String) -> bool {
        match &*self.conn.lock().unwrap() {
            Some(tx) => tx.send(text).is_ok(),
            None => false,
        }
    }

    /// Keeps `text` until the server acknowledges `id`, and sends it now if connected.
    fn send_reliably(&self, id: String, text: String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.outbox.lock().unwrap().insert(n, (id, text.clone()));
        self.send(text);
    }

    fn acked(&self, id: &str) {
        self.outbox.lock().unwrap().retain(|_, (i, _)| i != id);
    }

    /// Reports a received payment as an invoice update, until the server acknowledges it (once:
    /// a report already waiting for its acknowledgement is not queued twice).
    fn report_paid(&self, hash: &[u8; 32], amount_msat: Option<u64>) {
        let hash = hex(hash);
        let id = format!("paid-{hash}");
        if self.outbox.lock().unwrap().values().any(|(i, _)| *i == id) {
            return;
        }
        let text = message(
            "invoice_update",
            json!({
                "id": id,
                "payment_hash": hash,
                "status": "paid",
                "amount_msat": amount_msat,
            }),
        );
        self.send_reliably(id, text);
    }
}

/// Reports every recent receipt of the executor's node (see
/// [`CommandExecutor::recent_receipts`]).
async fn report_receipts(shared: &Arc<Shared>) {
    let Some(executor) = shared.config.executor.clone() else {
        return;
    };
    let receipts = tokio::task::spawn_blocking(move || executor.recent_receipts())
        .await
        .unwrap_or_default();
    for (hash, amount_msat) in receipts {
        shared.report_paid(&hash, amount_msat);
    }
}

/// A running hub client; stops when dropped or [`stop`](HubClient::stop)ped.
pub struct HubClient {
    shared: Arc<Shared>,
    status: watch::Receiver<HubStatus>,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn message(kind: &str, mut fields: Value) -> String {
    if let Value::Object(map) = &mut fields {
        map.insert("type".into(), kind.into());
        map.insert("v".into(), HUB_PROTOCOL_VERSION.into());
    }
    fields.to_string()
}

fn hub_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let url = if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_owned()
    };
    if url.ends_with("/api/v1/hub") {
        url
    } else {
        format!("{url}/api/v1/hub")
    }
}

fn master_of(value: Option<&Value>) -> Option<MasterInfo> {
    let value = value?;
    Some(MasterInfo {
        device: value.get("device")?.as_str()?.to_owned(),
        epoch: value.get("epoch").and_then(Value::as_u64).unwrap_or(0),
    })
}

impl HubClient {
    /// Starts connecting in the background on the current tokio runtime.
    pub fn start(config: HubConfig) -> HubClient {
        let (status_tx, status) = watch::channel(HubStatus::default());
        let shared = Arc::new(Shared {
            config,
            status: status_tx,
            conn: Mutex::new(None),
            outbox: Mutex::new(BTreeMap::new()),
            unsent: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            // Ids stay unique per device across restarts of the app (the server routes answers
            // by id), so they start from the clock rather than from 1.
            next: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_micros() as u64),
            ),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut tasks = vec![tokio::spawn(run(shared.clone(), stop_rx))];
        if let Some(mut events) = shared.config.executor.as_ref().and_then(|e| e.events()) {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(Event::PaymentReceived {
                            payment_hash,
                            amount_msat,
                            ..
                        }) => shared.report_paid(&payment_hash.0, Some(amount_msat)),
                        // Missed events: report every recent receipt again.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            report_receipts(&shared).await;
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        HubClient {
            shared,
            status,
            stop: Some(stop_tx),
            tasks,
        }
    }

    /// What the client knows now.
    pub fn status(&self) -> HubStatus {
        self.status.borrow().clone()
    }

    /// Waits until `done` holds for the status, or `timeout` passes (then returns the last status
    /// as the error).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&HubStatus) -> bool,
    ) -> Result<HubStatus, HubStatus> {
        let mut rx = self.status.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(|s| done(s))).await;
        match found {
            Ok(Ok(status)) => Ok(status.clone()),
            _ => Err(self.status()),
        }
    }

    /// Sends `command` to the store's master through the server and waits for its answer. Sent
    /// once: if not connected, it goes out on the next connection; if no answer arrives within
    /// the command timeout, the error says the outcome is unknown.
    pub async fn command(&self, command: HubCommand) -> Result<Value, HubError> {
        let id = format!(
            "{}-{}",
            self.shared.config.device_id,
            self.shared.next.fetch_add(1, Ordering::Relaxed)
        );
        let text = message("command", json!({ "id": id, "command": command }));
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap().insert(id.clone(), tx);
        if !self.shared.send(text.clone()) {
            self.shared.unsent.lock().unwrap().push(text);
        }
        let timeout = self.shared.config.command_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(HubError::Stopped("the client was stopped".into())),
            Err(_) => {
                self.shared.waiting.lock().unwrap().remove(&id);
                Err(HubError::Timeout {
                    seconds: timeout.as_secs(),
                })
            }
        }
    }

    /// Stops the client and closes its connection.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for HubClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How one connection ended.
enum Ended {
    /// Try again after the backoff.
    Retry(String),
    /// The server refused this device; do not retry.
    Refused(String),
    /// The client was stopped.
    Stopped,
}

async fn run(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut backoff = shared.config.min_backoff;
    loop {
        let ended = session(&shared, &mut stop).await;
        *shared.conn.lock().unwrap() = None;
        let welcomed = shared.status.borrow().connected;
        shared.status.send_modify(|s| s.connected = false);
        match ended {
            Ended::Stopped => return,
            Ended::Refused(why) => {
                shared.status.send_modify(|s| {
                    s.refused = Some(why.clone());
                    s.last_error = Some(why.clone());
                });
                for (_, waiter) in shared.waiting.lock().unwrap().drain() {
                    let _ = waiter.send(Err(HubError::Stopped(why.clone())));
                }
                return;
            }
            Ended::Retry(why) => {
                shared
                    .status
                    .send_modify(|s| s.last_error = Some(why.clone()));
            }
        }
        if welcomed {
            backoff = shared.config.min_backoff;
        }
        // Up to a quarter of jitter, so devices do not reconnect in lockstep after a restart.
        let jitter = backoff.mul_f64(rand::random::<f64>() / 4.0);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(shared.config.max_backoff);
    }
}

/// One connection: connect, hello, welcome, then serve until it breaks.
async fn session(shared: &Arc<Shared>, stop: &mut oneshot::Receiver<()>) -> Ended {
    let config = &shared.config;
    let url = hub_url(&config.url);
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Refused(format!("invalid hub URL {url:?}: {e}")),
    };
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {}", config.token)) else {
        return Ended::Refused("the token contains characters a header cannot carry".into());
    };
    request.headers_mut().insert("authorization", auth);
    let connected = tokio::select! {
        c = tokio_tungstenite::connect_async(request) => c,
        _ = &mut *stop => return Ended::Stopped,
    };
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let why = format!("the server refused the connection ({status}): {body}");
            return if status.as_u16() == 401 || status.as_u16() == 403 {
                Ended::Refused(why)
            } else {
                Ended::Retry(why)
            };
        }
        Err(e) => return Ended::Retry(format!("could not connect to {url}: {e}")),
    };
    let hello = message(
        "hello",
        json!({ "store": config.store, "device_id": config.device_id.to_string() }),
    );
    if let Err(e) = socket.send(Message::Text(hello.into())).await {
        return Ended::Retry(format!("the connection broke: {e}"));
    }
    // The welcome (or the refusal).
    let welcome = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(Duration::from_secs(10), socket.next()) => f,
            _ = &mut *stop => return Ended::Stopped,
        };
        match frame {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match value.get("type").and_then(Value::as_str) {
                    Some("welcome") => break value,
                    Some("error") => {
                        let why = value
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("the server refused this device")
                            .to_owned();
                        return Ended::Refused(why);
                    }
                    _ => {}
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Ended::Retry(format!("the connection broke: {e}")),
            Ok(None) => return Ended::Retry("the server closed the connection".into()),
            Err(_) => return Ended::Retry("no welcome from the server within 10 s".into()),
        }
    };
    let heartbeat = heartbeat_of(&welcome);
    let (tx, mut outgoing) = mpsc::unbounded_channel::<String>();
    // Queue what waited for a connection: unacknowledged answers first, then unsent commands.
    for (_, text) in shared.outbox.lock().unwrap().values() {
        let _ = tx.send(text.clone());
    }
    for text in shared.unsent.lock().unwrap().drain(..) {
        let _ = tx.send(text);
    }
    *shared.conn.lock().unwrap() = Some(tx);
    shared.status.send_modify(|s| {
        s.connected = true;
        s.sessions += 1;
        s.master = master_of(welcome.get("master"));
        s.node_address = welcome
            .get("node_address")
            .and_then(Value::as_str)
            .map(str::to_owned);
        s.last_error = None;
    });
    // Payments whose updates an earlier session may have lost go out again.
    report_receipts(shared).await;
    let mut watchdog = tokio::time::interval(heartbeat);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut *stop => {
                let _ = socket.close(None).await;
                return Ended::Stopped;
            }
            text = outgoing.recv() => {
                let Some(text) = text else { return Ended::Retry("internal queue closed".into()) };
                if let Err(e) = socket.send(Message::Text(text.into())).await {
                    return Ended::Retry(format!("the connection broke: {e}"));
                }
            }
            frame = socket.next() => {
                last_heard = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => handle(shared, &text),
                    Some(Ok(Message::Close(_))) | None => {
                        return Ended::Retry("the server closed the connection".into());
                    }
                    // Pings are answered by the WebSocket layer on the next read or write.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ended::Retry(format!("the connection broke: {e}")),
                }
            }
            _ = watchdog.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    return Ended::Retry(format!(
                        "the server was silent for {} s (three heartbeats)",
                        last_heard.elapsed().as_secs()
                    ));
                }
            }
        }
    }
}

/// The heartbeat the server's welcome announces, kept between 10 ms and a day whatever it says:
/// a zero period would panic the watchdog's timer, a huge one overflow its three-heartbeat check.
/// 15 s when it says none.
fn heartbeat_of(welcome: &Value) -> Duration {
    welcome
        .get("heartbeat_secs")
        .and_then(Value::as_f64)
        .map(|s| Duration::from_secs_f64(s.clamp(0.01, 86_400.0)))
        .unwrap_or(Duration::from_secs(15))
}

/// One message from the server.
fn handle(shared: &Arc<Shared>, text: &str) {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if value.get("v").and_then(Value::as_u64) != Some(HUB_PROTOCOL_VERSION) {
        return;
    }
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    match value.get("type").and_then(Value::as_str) {
        Some("master") => {
            let master = master_of(Some(&value));
            shared.status.send_modify(|s| s.master = master);
        }
        Some("ack") => {
            if let Some(id) = id {
                shared.acked(&id);
            }
        }
        Some("result") => {
            let Some(id) = id else { return };
            let Some(waiter) = shared.waiting.lock().unwrap().remove(&id) else {
                return;
            };
            let answer = if value.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(value.get("value").cloned().unwrap_or(Value::Null))
            } else {
                Err(HubError::Refused(
                    value
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("the hub gave no reason")
                        .to_owned(),
                ))
            };
            let _ = waiter.send(answer);
        }
        Some("command") => {
            let Some(id) = id else { return };
            let command = value.get("command").cloned().unwrap_or(Value::Null);
            let shared = shared.clone();
            tokio::spawn(async move {
                let outcome = execute(&shared, command).await;
                let answer = match outcome {
                    Ok(value) => json!({ "id": id, "ok": true, "value": value }),
                    Err(error) => json!({ "id": id, "ok": false, "error": error }),
                };
                shared.send_reliably(id, message("result", answer));
            });
        }
        _ => {}
    }
}

async fn execute(shared: &Arc<Shared>, command: Value) -> Result<Value, String> {
    let command: HubCommand = serde_json::from_value(command)
        .map_err(|e| format!("this device does not understand the command: {e}"))?;
    let executor = shared.config.executor.clone().ok_or_else(|| {
        format!(
            "device {} has no node running to execute commands",
            shared.config.device_id
        )
    })?;
    tokio::task::spawn_blocking(move || executor.execute(&command))
        .await
        .map_err(|e| format!("the command failed on the device: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's shared state, connected to a queue the test reads, with no node.
    fn test_shared() -> (Arc<Shared>, mpsc::UnboundedReceiver<String>) {
        let (status, _) = watch::channel(HubStatus::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let config = HubConfig::new("http://h:1", "token", "shop", DeviceId([1; 16]), None);
        let shared = Arc::new(Shared {
            config,
            status,
            conn: Mutex::new(Some(tx)),
            outbox: Mutex::new(BTreeMap::new()),
            unsent: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        (shared, rx)
    }

    /// What a hostile or broken server could send: arbitrary text, and JSON objects of every
    /// message type with fields of the right and the wrong kinds.
    fn server_frame() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let any_value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::from),
            Just(json!({"kind": "balances"})),
            Just(json!({"kind": "pay", "bolt11": 7})),
            Just(json!([1, "x", null])),
        ];
        let structured = (
            prop_oneof![
                Just(json!(1)),
                Just(json!(2)),
                Just(json!("1")),
                Just(Value::Null)
            ],
            prop_oneof![
                Just("master"),
                Just("ack"),
                Just("result"),
                Just("command"),
                Just("welcome"),
                Just("error"),
                Just("invoice_update"),
                Just("nonsense"),
            ],
            prop_oneof![
                Just(json!("a")),
                Just(json!("b")),
                Just(json!("")),
                any_value.clone()
            ],
            any_value.clone(),
            any_value.clone(),
            any_value,
        )
            .prop_map(|(v, kind, id, a, b, c)| {
                json!({
                    "v": v, "type": kind, "id": id, "ok": a, "value": b, "error": c,
                    "command": b, "device": c, "epoch": a, "heartbeat_secs": a,
                })
                .to_string()
            });
        prop_oneof![any::<String>(), structured]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The device's decoding of server messages: nothing panics; only protocol version 1
        /// changes anything; a result reaches only the waiter of its id, once; every command is
        /// answered (here with an error: no node); the master is what the last master message said.
        #[test]
        fn any_server_frames_are_handled_without_harm(
            frames in proptest::collection::vec(server_frame(), 1..24),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (shared, mut sent) = test_shared();
                let (a_tx, mut a_rx) = oneshot::channel();
                shared.waiting.lock().unwrap().insert("a".to_owned(), a_tx);
                let mut commands = std::collections::BTreeSet::new();
                let mut command_frames = 0;
                let mut expect_a = None;
                let mut master = None;
                for text in &frames {
                    let _ = heartbeat_of(&serde_json::from_str(text).unwrap_or(Value::Null));
                    handle(&shared, text);
                    let Ok(value) = serde_json::from_str::<Value>(text) else { continue };
                    if value.get("v").and_then(Value::as_u64) != Some(HUB_PROTOCOL_VERSION) {
                        continue;
                    }
                    let id = value.get("id").and_then(Value::as_str);
                    match value.get("type").and_then(Value::as_str) {
                        Some("command") => {
                            if let Some(id) = id {
                                commands.insert(id.to_owned());
                                command_frames += 1;
                            }
                        }
                        Some("result") if id == Some("a") && expect_a.is_none() => {
                            expect_a = Some(value.get("ok").and_then(Value::as_bool) == Some(true));
                        }
                        Some("master") => master = Some(master_of(Some(&value))),
                        _ => {}
                    }
                }
                // The spawned command tasks answer.
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let answered: std::collections::BTreeSet<String> =
                    shared.outbox.lock().unwrap().values().map(|(id, _)| id.clone()).collect();
                assert_eq!(answered, commands);
                for (_, text) in shared.outbox.lock().unwrap().values() {
                    let answer: Value = serde_json::from_str(text).unwrap();
                    assert_eq!(answer["type"], "result");
                    assert_eq!(answer["ok"], false, "no node runs here: {answer}");
                }
                let mut queued = 0;
                while sent.try_recv().is_ok() {
                    queued += 1;
                }
                assert_eq!(queued, command_frames);
                match expect_a {
                    Some(ok) => assert_eq!(a_rx.try_recv().unwrap().is_ok(), ok),
                    None => assert!(a_rx.try_recv().is_err()),
                }
                assert!(shared.waiting.lock().unwrap().contains_key("a") == expect_a.is_none());
                if let Some(master) = master {
                    assert_eq!(shared.status.borrow().master, master);
                }
            });
        }
    }

    #[test]
    fn a_welcome_s_heartbeat_is_kept_within_bounds() {
        let of = |v: Value| heartbeat_of(&json!({ "heartbeat_secs": v }));
        assert_eq!(of(json!(0.5)), Duration::from_millis(500));
        assert_eq!(of(json!(0)), Duration::from_millis(10));
        assert_eq!(of(json!(-3)), Duration::from_millis(10));
        assert_eq!(of(json!(1e300)), Duration::from_secs(86_400));
        assert_eq!(of(json!(u64::MAX)), Duration::from_secs(86_400));
        assert_eq!(of(json!("15")), Duration::from_secs(15));
        assert_eq!(heartbeat_of(&json!({})), Duration::from_secs(15));
        // What the watchdog does with it must not panic.
        let _ = of(json!(1e300)) * 3;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async { tokio::time::interval(of(json!(0))) });
    }

    #[test]
    fn hub_urls_are_derived_from_the_server_url() {
        assert_eq!(hub_url("http://h:1"), "ws://h:1/api/v1/hub");
        assert_eq!(hub_url("https://h/"), "wss://h/api/v1/hub");
        assert_eq!(hub_url("ws://h:1/api/v1/hub"), "ws://h:1/api/v1/hub");
    }

    #[test]
    fn commands_have_their_documented_json_form() {
        let command = HubCommand::CreateInvoice {
            amount_sat: 21,
            description: "tea".into(),
            expiry_secs: 60,
        };
        assert_eq!(
            serde_json::to_value(&command).unwrap(),
            json!({"kind": "create_invoice", "amount_sat": 21, "description": "tea", "expiry_secs": 60})
        );
        let parsed: HubCommand = serde_json::from_value(json!({"kind": "balances"})).unwrap();
        assert_eq!(parsed, HubCommand::Balances);
        assert_eq!(unhex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(unhex32("ab"), None);
    }
}
