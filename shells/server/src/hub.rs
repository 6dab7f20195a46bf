//! The device hub (`/api/v1/hub`, WebSocket, JSON messages; docs/HUB.md is the contract).
//!
//! A device connects with an owner bearer token, says `hello` with its store's name and device id,
//! and stays connected. The hub knows each store's master from the durable lease (the device
//! holding a `held` lease on one of the store's VSS stores) and announces every change to all the
//! store's devices. Commands for the store (from the HTTP API or from a follower device) go to the
//! master's connection with a fresh id; the master answers with a `result` of that id, which the
//! hub acknowledges so the device can drop it from its outbox. A command the master does not answer
//! within the command timeout fails with an error that says so; a follower's answer that finds the
//! follower offline waits in a mailbox and is delivered when it reconnects.
//!
//! With several server processes in front of one PostgreSQL database ([`Share`]), devices of one
//! store may be connected to different processes: commands and mail then go through the database,
//! exactly one process taking each command for the device it holds a connection of, and notes tell
//! every process of master and invoice changes (docs/HUB.md, "Several server processes").

use crate::http::App;
use crate::share::{Note, Share, What};
use crate::store::{Storage, StoreError, UserId};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use till_vss::replica::{LeaseHeader, LeaseState};
use tokio::sync::{broadcast, mpsc, oneshot};

/// The protocol version every message carries as `v`.
pub const HUB_PROTOCOL_VERSION: u64 = 1;
/// How long a new connection has to send its `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an undelivered answer waits in a follower's mailbox.
const MAILBOX_TTL: Duration = Duration::from_secs(300);
/// How long a command waits for a master that holds the lease but is not connected (it may be
/// reconnecting, after a server restart for instance) before it fails.
const MASTER_GRACE: Duration = Duration::from_secs(3);

/// Why a command sent through the hub did not come back with an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("no master device is online for store {store:?} ({why})")]
    NoMaster { store: String, why: String },
    #[error(
        "the master device {device} of store {store:?} did not answer within {seconds} s; the command's outcome is unknown"
    )]
    Timeout {
        store: String,
        device: String,
        seconds: u64,
    },
    #[error("the master device refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current master of a store: a device id (32 hex digits) and its lease epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Master {
    device: String,
    epoch: u64,
}

struct Conn {
    device: String,
    tx: mpsc::UnboundedSender<String>,
}

#[derive(Default)]
struct StoreHub {
    name: String,
    conns: HashMap<u64, Conn>,
    master: Option<Master>,
    /// Commands sent to the master and not yet answered, by command id.
    pending: HashMap<String, oneshot::Sender<Result<Value, String>>>,
    /// Answers for followers that were offline when they came back, by device.
    mailbox: HashMap<String, Vec<(Instant, String)>>,
}

impl StoreHub {
    /// The newest connection of `device` (a reconnect may overlap a dying old one).
    fn conn_of(&self, device: &str) -> Option<&Conn> {
        self.conns
            .iter()
            .filter(|(_, c)| c.device == device)
            .max_by_key(|(id, _)| **id)
            .map(|(_, c)| c)
    }
}

/// The hub's state: stores by user, with their connections, master and pending commands.
pub(crate) struct Hub {
    storage: Arc<dyn Storage>,
    /// What the server processes of one database share; `None` for one process alone.
    share: Option<Arc<dyn Share>>,
    stores: Mutex<HashMap<UserId, StoreHub>>,
    next_conn: std::sync::atomic::AtomicU64,
    pub(crate) node_address: Option<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) command_timeout: Duration,
}

/// A message with its type and the protocol version.
pub(crate) fn message(kind: &str, mut fields: Value) -> String {
    if let Value::Object(map) = &mut fields {
        map.insert("type".into(), kind.into());
        map.insert("v".into(), HUB_PROTOCOL_VERSION.into());
    }
    fields.to_string()
}

fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("srv-{}", crate::auth::hex(&bytes))
}

fn master_json(store: &str, master: Option<&Master>) -> Value {
    json!({
        "store": store,
        "device": master.map(|m| m.device.clone()),
        "epoch": master.map(|m| m.epoch),
    })
}

/// The bounds of a hub heartbeat (see [`Hub::new`]).
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT: Duration = Duration::from_secs(86_400);

impl Hub {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        share: Option<Arc<dyn Share>>,
        node_address: Option<String>,
        heartbeat: Duration,
        command_timeout: Duration,
    ) -> Hub {
        Hub {
            storage,
            share,
            stores: Mutex::new(HashMap::new()),
            next_conn: 1.into(),
            node_address,
            // A zero period would stop the ping timer, a huge one overflow the three-heartbeat
            // silence check; `till-server serve` refuses both, a library caller gets them bounded.
            heartbeat: heartbeat.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT),
            command_timeout,
        }
    }

    /// After a head write carrying `header`: [`Hub::refresh_master`], unless the header is the
    /// master the hub knows already (held, same device and epoch). Such a write changes no lease
    /// that decides the master, and it is every upload of a running master, so it costs no read
    /// of the leases before the upload is answered.
    pub(crate) async fn head_written(
        &self,
        user: UserId,
        header: &LeaseHeader,
    ) -> Result<(), StoreError> {
        if header.state == LeaseState::Held {
            let stores = self.stores.lock().unwrap();
            let known = stores.get(&user).and_then(|s| s.master.as_ref());
            if known
                .is_some_and(|m| m.epoch == header.epoch && m.device == header.device.to_string())
            {
                return Ok(());
            }
        }
        if self.refresh_master(user).await?
            && let Some(share) = &self.share
            && let Err(e) = share.publish(user, What::Master).await
        {
            eprintln!("till-server: hub: telling the other server processes of a new master: {e}");
        }
        Ok(())
    }

    /// Re-reads the store's master from its durable leases and, if it changed, tells every
    /// connected device of the store; returns whether it changed. Called when a device connects,
    /// after a head write that may change it ([`Hub::head_written`]) and when another server
    /// process says it changed.
    pub(crate) async fn refresh_master(&self, user: UserId) -> Result<bool, StoreError> {
        let leases = self.storage.leases(user).await?;
        let master = leases
            .into_iter()
            .filter(|(_, l)| l.state == LeaseState::Held)
            .max_by_key(|(_, l)| l.epoch)
            .map(|(_, l)| Master {
                device: l.device.to_string(),
                epoch: l.epoch,
            });
        let mut stores = self.stores.lock().unwrap();
        let store = stores.entry(user).or_default();
        if store.master == master {
            return Ok(false);
        }
        store.master = master;
        let text = message("master", master_json(&store.name, store.master.as_ref()));
        for conn in store.conns.values() {
            let _ = conn.tx.send(text.clone());
        }
        Ok(true)
    }

    /// Sends `command` to the store's master and waits for its answer. A master that holds the
    /// lease but is offline gets [`MASTER_GRACE`] to come back first.
    pub(crate) async fn execute(
        &self,
        user: UserId,
        store_name: &str,
        command: Value,
    ) -> Result<Value, HubError> {
        let known = self.stores.lock().unwrap().contains_key(&user);
        if !known {
            // No device connected since the server started: read the master from the lease.
            self.refresh_master(user).await?;
        }
        let deadline = Instant::now() + MASTER_GRACE;
        loop {
            match self.try_execute(user, store_name, command.clone()).await {
                Err(HubError::NoMaster { why, .. })
                    if why.ends_with("is not connected") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_execute(
        &self,
        user: UserId,
        store_name: &str,
        command: Value,
    ) -> Result<Value, HubError> {
        if let Some(share) = &self.share {
            return self.shared_execute(share, user, store_name, command).await;
        }
        let id = new_id();
        let (tx, rx) = oneshot::channel();
        let device = {
            let mut stores = self.stores.lock().unwrap();
            let no_master = |why: String| HubError::NoMaster {
                store: store_name.to_owned(),
                why,
            };
            let store = stores.entry(user).or_default();
            let master = store.master.clone().ok_or_else(|| {
                no_master("no device holds the store's lease; start the till on a device".into())
            })?;
            let conn = store.conn_of(&master.device).ok_or_else(|| {
                no_master(format!(
                    "device {} holds the lease but is not connected",
                    master.device
                ))
            })?;
            let text = message("command", json!({ "id": id, "command": command }));
            if conn.tx.send(text).is_err() {
                return Err(no_master(format!(
                    "device {} just disconnected",
                    master.device
                )));
            }
            store.pending.insert(id.clone(), tx);
            master.device
        };
        match tokio::time::timeout(self.command_timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(message))) => Err(HubError::Refused(message)),
            Ok(Err(_)) | Err(_) => {
                if let Some(store) = self.stores.lock().unwrap().get_mut(&user) {
                    store.pending.remove(&id);
                }
                Err(HubError::Timeout {
                    store: store_name.to_owned(),
                    device,
                    seconds: self.command_timeout.as_secs(),
                })
            }
        }
    }

    /// [`Hub::try_execute`] for processes sharing one database: the command waits in the database
    /// for whichever process holds the master's connection ([`Hub::heard`] takes it there), and
    /// its answer comes back the same way. The master gets [`MASTER_GRACE`] to be taken by a
    /// process (it may be reconnecting), then the command timeout to answer.
    async fn shared_execute(
        &self,
        share: &Arc<dyn Share>,
        user: UserId,
        store_name: &str,
        command: Value,
    ) -> Result<Value, HubError> {
        // Read from the database: a note of a change may have been missed.
        self.refresh_master(user).await?;
        let master = self.master_of(user).ok_or_else(|| HubError::NoMaster {
            store: store_name.to_owned(),
            why: "no device holds the store's lease; start the till on a device".into(),
        })?;
        let id = new_id();
        let text = message("command", json!({ "id": id, "command": command }));
        // Listening before the command is offered, so no answer can come unheard.
        let mut notes = share.subscribe();
        share.post_command(&id, user, &master.device, &text).await?;
        let offered = Instant::now();
        loop {
            share
                .publish(
                    user,
                    What::Command {
                        id: id.clone(),
                        device: master.device.clone(),
                    },
                )
                .await?;
            // Offered again every so often: the master may connect to any process meanwhile.
            if heard_of(&mut notes, &id, Duration::from_millis(250)).await != Heard::Nothing {
                break;
            }
            if offered.elapsed() >= MASTER_GRACE {
                if share.withdraw_command(&id).await? {
                    return Err(HubError::NoMaster {
                        store: store_name.to_owned(),
                        why: format!(
                            "device {} holds the lease but is not connected",
                            master.device
                        ),
                    });
                }
                // Taken just now.
                break;
            }
        }
        let deadline = Instant::now() + self.command_timeout;
        loop {
            if let Some(answer) = share.take_answer(&id).await? {
                return decode_answer(&answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                share.forget_command(&id).await?;
                return Err(HubError::Timeout {
                    store: store_name.to_owned(),
                    device: master.device,
                    seconds: self.command_timeout.as_secs(),
                });
            }
            // Read again at least every second, in case the note was missed.
            heard_of(&mut notes, &id, left.min(Duration::from_secs(1))).await;
        }
    }

    /// Acts on a note from a server process sharing this one's database (this one included).
    async fn heard(&self, app: &App, note: Note) -> Result<(), StoreError> {
        let Some(share) = &self.share else {
            return Ok(());
        };
        let user = note.user();
        let mine = note.from == share.process();
        match note.what {
            // This process told its own devices already.
            What::Master | What::Invoice { .. } if mine => {}
            What::Master => {
                self.refresh_master(user).await?;
            }
            What::Invoice { id, record } => {
                let record = match record {
                    Some(record) => Some(record),
                    None => self.storage.invoice(user, &id).await?,
                };
                if let Some(record) = record {
                    let _ = app
                        .invoice_events
                        .send(crate::invoices::InvoiceEvent { user, record });
                }
            }
            What::Command { id, device } => {
                let Some(tx) = self.conn_tx(user, &device) else {
                    return Ok(());
                };
                let Some(text) = share.take_command(&id).await? else {
                    return Ok(());
                };
                if tx.send(text).is_ok() {
                    share.publish(user, What::Taken { id }).await?;
                } else {
                    // The connection just closed: another may take it.
                    share.untake_command(&id).await?;
                }
            }
            What::Mail { device } => self.collect_mail(user, &device).await?,
            What::Taken { .. } | What::Answer { .. } => {}
            What::Resync => {
                let (users, devices) = {
                    let stores = self.stores.lock().unwrap();
                    let users: Vec<UserId> = stores.keys().copied().collect();
                    let devices: Vec<(UserId, String)> = stores
                        .iter()
                        .flat_map(|(u, s)| s.conns.values().map(|c| (*u, c.device.clone())))
                        .collect();
                    (users, devices)
                };
                // One store's failure does not keep the others from catching up.
                for user in users {
                    if let Err(e) = self.refresh_master(user).await {
                        eprintln!("till-server: hub: reading a store's master again: {e}");
                    }
                }
                for (user, device) in devices {
                    if let Err(e) = self.collect_mail(user, &device).await {
                        eprintln!("till-server: hub: reading the mail of device {device}: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the mail waiting in the shared database for `device` to its connection here.
    async fn collect_mail(&self, user: UserId, device: &str) -> Result<(), StoreError> {
        let Some(share) = &self.share else {
            return Ok(());
        };
        if self.conn_tx(user, device).is_none() {
            return Ok(());
        }
        for text in share.take_mail(user, device).await? {
            self.deliver(user, device, text);
        }
        Ok(())
    }

    /// The sender of `device`'s newest connection to this process.
    fn conn_tx(&self, user: UserId, device: &str) -> Option<mpsc::UnboundedSender<String>> {
        let stores = self.stores.lock().unwrap();
        stores
            .get(&user)
            .and_then(|s| s.conn_of(device))
            .map(|c| c.tx.clone())
    }

    /// Hands the master's answer to command `id` to whoever waits for it: in this process, or
    /// through the shared database. False if nobody waits any more.
    async fn answered(
        &self,
        user: UserId,
        id: &str,
        outcome: Result<Value, String>,
    ) -> Result<bool, StoreError> {
        let Some(share) = &self.share else {
            return Ok(self.resolve(user, id, outcome));
        };
        let answer = match outcome {
            Ok(value) => json!({ "ok": true, "value": value }),
            Err(error) => json!({ "ok": false, "error": error }),
        };
        if !share.answer_command(id, &answer.to_string()).await? {
            return Ok(false);
        }
        share
            .publish(user, What::Answer { id: id.to_owned() })
            .await?;
        Ok(true)
    }

    pub(crate) fn register(
        &self,
        user: UserId,
        name: &str,
        device: &str,
    ) -> (u64, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut stores = self.stores.lock().unwrap();
        let store = stores.entry(user).or_default();
        store.name = name.to_owned();
        // Answers that waited for this device go out first.
        if let Some(waiting) = store.mailbox.remove(device) {
            for (at, text) in waiting {
                if at.elapsed() < MAILBOX_TTL {
                    let _ = tx.send(text);
                }
            }
        }
        store.conns.insert(
            id,
            Conn {
                device: device.to_owned(),
                tx,
            },
        );
        (id, rx)
    }

    fn unregister(&self, user: UserId, conn: u64) {
        let mut stores = self.stores.lock().unwrap();
        if let Some(store) = stores.get_mut(&user) {
            store.conns.remove(&conn);
        }
    }

    /// What the server processes of this one's database share, if several do.
    pub(crate) fn share(&self) -> Option<&Arc<dyn Share>> {
        self.share.as_ref()
    }

    fn master_of(&self, user: UserId) -> Option<Master> {
        self.stores
            .lock()
            .unwrap()
            .get(&user)
            .and_then(|s| s.master.clone())
    }

    /// Hands the master's answer to whoever waits for command `id`.
    fn resolve(&self, user: UserId, id: &str, outcome: Result<Value, String>) -> bool {
        let waiter = self
            .stores
            .lock()
            .unwrap()
            .get_mut(&user)
            .and_then(|s| s.pending.remove(id));
        match waiter {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Sends `text` to `device`'s newest connection, or keeps it for its next one (in the shared
    /// database when there is one, since that may be to another process).
    fn deliver(&self, user: UserId, device: &str, text: String) {
        let mut stores = self.stores.lock().unwrap();
        let store = stores.entry(user).or_default();
        if let Some(conn) = store.conn_of(device)
            && conn.tx.send(text.clone()).is_ok()
        {
            return;
        }
        if let Some(share) = self.share.clone() {
            let device = device.to_owned();
            tokio::spawn(async move {
                let kept = async {
                    share
                        .post_mail(user, &device, &text, MAILBOX_TTL.as_millis() as i64)
                        .await?;
                    share.publish(user, What::Mail { device }).await
                };
                if let Err(e) = kept.await {
                    eprintln!("till-server: hub: keeping a message for an offline device: {e}");
                }
            });
            return;
        }
        let waiting = store.mailbox.entry(device.to_owned()).or_default();
        waiting.retain(|(at, _)| at.elapsed() < MAILBOX_TTL);
        waiting.push((Instant::now(), text));
    }
}

fn is_device_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

async fn send_error(socket: &mut WebSocket, text: String) {
    let _ = socket
        .send(Message::Text(
            message("error", json!({ "message": text })).into(),
        ))
        .await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Reads the next text message, skipping pings and pongs; `None` when the socket ends.
async fn next_text(socket: &mut WebSocket) -> Option<Utf8Bytes> {
    while let Some(Ok(frame)) = socket.recv().await {
        match frame {
            Message::Text(text) => return Some(text),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Checks a message's version and returns it as an object with its type.
fn parse(text: &str) -> Result<(String, Value), String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the message is not JSON: {e}"))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the message has no \"type\"")?
        .to_owned();
    match value.get("v").and_then(Value::as_u64) {
        Some(HUB_PROTOCOL_VERSION) => Ok((kind, value)),
        Some(other) => Err(format!(
            "message version {other} is not supported; this server speaks version {HUB_PROTOCOL_VERSION}"
        )),
        None => Err("the message has no version \"v\"".to_owned()),
    }
}

/// A device's first message: the store it names and its device id, or why it is refused.
pub(crate) fn parse_hello(text: &str) -> Result<(String, String), String> {
    let (store, device) = match parse(text)? {
        (kind, v) if kind == "hello" => {
            let store = v.get("store").and_then(Value::as_str).unwrap_or_default();
            let device = v
                .get("device_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (store.to_owned(), device.to_owned())
        }
        (kind, _) => return Err(format!("expected a hello first, got {kind:?}")),
    };
    if !is_device_id(&device) {
        return Err("device_id must be 32 lowercase hex digits".to_owned());
    }
    Ok((store, device))
}

/// Serves one device connection until it closes, fails its heartbeat or breaks the protocol.
pub(crate) async fn serve(app: Arc<App>, user: UserId, mut socket: WebSocket) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_text(&mut socket)).await {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(_) => {
            send_error(
                &mut socket,
                format!("no hello within {} s", HELLO_TIMEOUT.as_secs()),
            )
            .await;
            return;
        }
    };
    let (store_name, device) = match parse_hello(&hello) {
        Ok(hello) => hello,
        Err(e) => {
            send_error(&mut socket, e).await;
            return;
        }
    };
    match app.store.user_by_name(&store_name, false).await {
        Ok(Some(owner)) if owner == user => {}
        Ok(_) => {
            send_error(
                &mut socket,
                format!(
                    "refused: this token does not belong to store {store_name:?}; use a token of that store"
                ),
            )
            .await;
            return;
        }
        Err(e) => {
            eprintln!("till-server: hub: {e}");
            send_error(&mut socket, "the server's store failed; retry later".into()).await;
            return;
        }
    }
    let hub = &app.hub;
    let (conn, mut outgoing) = hub.register(user, &store_name, &device);
    if let Err(e) = hub.collect_mail(user, &device).await {
        eprintln!("till-server: hub: reading the mail of device {device}: {e}");
    }
    if let Err(e) = hub.refresh_master(user).await {
        eprintln!("till-server: hub: reading the lease of store {store_name:?}: {e}");
    }
    let master = hub.master_of(user);
    let welcome = message(
        "welcome",
        json!({
            "store": store_name,
            "device_id": device,
            "master": master_json(&store_name, master.as_ref()),
            "node_address": hub.node_address,
            "heartbeat_secs": hub.heartbeat.as_secs_f64(),
        }),
    );
    let (mut sink, mut stream) = socket.split();
    if sink.send(Message::Text(welcome.into())).await.is_err() {
        hub.unregister(user, conn);
        return;
    }
    let mut ticker = tokio::time::interval(hub.heartbeat);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            text = outgoing.recv() => {
                let Some(text) = text else { break };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) => {
                        if let Err(e) = handle(&app, user, &store_name, &device, &text).await {
                            let _ = sink.send(Message::Text(message("error", json!({"message": e})).into())).await;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > hub.heartbeat * 3 {
                    // The device missed three heartbeats: it is gone.
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    hub.unregister(user, conn);
}

/// One message from a connected device.
pub(crate) async fn handle(
    app: &Arc<App>,
    user: UserId,
    store_name: &str,
    device: &str,
    text: &str,
) -> Result<(), String> {
    let (kind, v) = parse(text)?;
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    let hub = &app.hub;
    match kind.as_str() {
        "result" => {
            let id = id.ok_or("a result needs the \"id\" of its command")?;
            let waited = hub.answered(user, &id, outcome_of(&v)).await.map_err(|e| {
                eprintln!("till-server: hub: {e}");
                "the server's store failed; the result will be retried".to_owned()
            })?;
            if !waited {
                eprintln!(
                    "till-server: hub: store {store_name:?}: answer to command {id} came after it timed out"
                );
            }
            hub.deliver(user, device, message("ack", json!({ "id": id })));
            Ok(())
        }
        "command" => {
            let id = id.ok_or("a command needs an \"id\"")?;
            let command = v
                .get("command")
                .cloned()
                .ok_or("a command needs a \"command\"")?;
            let (app, store, device) = (app.clone(), store_name.to_owned(), device.to_owned());
            tokio::spawn(async move {
                let answer = match app.hub.execute(user, &store, command).await {
                    Ok(value) => json!({ "id": id, "ok": true, "value": value }),
                    Err(e) => json!({ "id": id, "ok": false, "error": e.to_string() }),
                };
                app.hub.deliver(user, &device, message("result", answer));
            });
            Ok(())
        }
        "invoice_update" => {
            let id = id.ok_or("an invoice_update needs an \"id\"")?;
            let hash = v
                .get("payment_hash")
                .and_then(Value::as_str)
                .ok_or("an invoice_update needs a \"payment_hash\"")?;
            let amount = v.get("amount_msat").and_then(Value::as_u64);
            crate::invoices::paid(app, user, hash, amount)
                .await
                .map_err(|e| {
                    eprintln!("till-server: hub: {e}");
                    "the server's store failed; the update will be retried".to_owned()
                })?;
            hub.deliver(user, device, message("ack", json!({ "id": id })));
            Ok(())
        }
        "pong" | "ping" => Ok(()),
        other => Err(format!("unknown message type {other:?}")),
    }
}

/// What a command's sender heard of it.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Taken,
    Answered,
    /// Nothing within the time, or notes were missed (so read the database).
    Nothing,
}

/// Waits up to `wait` for a note that command `id` was taken or answered.
async fn heard_of(notes: &mut broadcast::Receiver<Note>, id: &str, wait: Duration) -> Heard {
    let heard = async {
        loop {
            match notes.recv().await {
                Ok(Note {
                    what: What::Taken { id: of },
                    ..
                }) if of == id => return Heard::Taken,
                Ok(Note {
                    what: What::Answer { id: of },
                    ..
                }) if of == id => return Heard::Answered,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Heard::Nothing,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::time::timeout(wait, heard)
        .await
        .unwrap_or(Heard::Nothing)
}

/// The outcome a `result` carries (`ok`, then `value` or `error`): a device's message, or its
/// answer as [`Hub::answered`] stored it in the shared database.
fn outcome_of(result: &Value) -> Result<Value, String> {
    if result.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(result.get("value").cloned().unwrap_or(Value::Null))
    } else {
        Err(result
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the device gave no reason")
            .to_owned())
    }
}

/// A command's answer as stored in the shared database.
fn decode_answer(answer: &str) -> Result<Value, HubError> {
    let answer: Value = serde_json::from_str(answer)
        .map_err(|e| StoreError::new("corrupt hub answer in the database", e))?;
    outcome_of(&answer).map_err(HubError::Refused)
}

/// Hears the notes of the server processes sharing this one's database, for as long as the
/// server runs; nothing to do for a process alone.
pub(crate) async fn follow_notes(app: Arc<App>) {
    let Some(share) = app.hub.share.clone() else {
        return;
    };
    let mut notes = share.subscribe();
    loop {
        let note = match notes.recv().await {
            Ok(note) => note,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                eprintln!("till-server: hub: {missed} notes missed; reading the hub's state again");
                Note {
                    from: String::new(),
                    user: 0,
                    what: What::Resync,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // In order (an invoice's changes, a master's), each after the one before.
        if let Err(e) = app.hub.heard(&app, note).await {
            eprintln!("till-server: hub: acting on another server process's note: {e}");
        }
    }
}
