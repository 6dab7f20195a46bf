//! `till demo`: everything on one machine with embedded defaults. It starts a
//! development chain (till-devnet), a till-server, a peer node and a
//! customer's node; creates the merchant's till, funds it, opens channels and
//! takes payments; hands the till off to a second device; restores a third
//! from the mnemonic and checks its state equals the master's; shows that a
//! forked node is refused; serves the point-of-sale page, where a cashier's
//! invoice is made by the till over the hub and paid by the customer; then
//! prints a summary and keeps the page up until Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use ldk_node::bitcoin::{Amount, Network};
use ldk_node::config::{Config as LdkConfig, EsploraSyncConfig};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::{Builder, Event};
use serde::Serialize;
use till_engine::{
    BackupConfig, CommandExecutor, HubClient, HubConfig, Keys, Node, NodeConfig, Till, TillConfig,
};

use crate::Failure;
use crate::cmd::device::TillExecutor;
use crate::output::Output;

/// The merchant's user and store on the demo's server.
const STORE: &str = "demo-merchant";

/// How long any one wait of the demo may take before it gives up, saying what it waited for.
const WAIT: Duration = Duration::from_secs(120);
const CHANNEL_SATS: u64 = 400_000;
const SALE_SATS: u64 = 2_100;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit after the summary instead of keeping the servers up until Ctrl-C.
    #[arg(long)]
    no_wait: bool,
    /// How many payments the customer makes.
    #[arg(long, default_value_t = 10)]
    payments: u32,
    /// Keep the demo's files in this folder (default: a temporary folder, removed at the end).
    #[arg(long)]
    workdir: Option<PathBuf>,
}

#[derive(Default, Serialize)]
struct Payments {
    succeeded: u32,
    failed: u32,
}

#[derive(Default, Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Default, Serialize)]
struct RestoreCheck {
    ok: bool,
    state_matches: bool,
    seconds: f64,
    events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Default, Serialize)]
struct Backup {
    events_shipped: u64,
    bytes_uploaded: u64,
    uploads: u64,
    lag_events: u64,
}

#[derive(Default, Serialize)]
struct PosCheck {
    /// A cashier's invoice was made by the master over the hub, paid, and shown paid.
    ok: bool,
    /// The point-of-sale page.
    url: String,
    /// A file (mode 0600) with the cashier's sign-in link: the page's URL with the cashier token.
    link_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Default, Serialize)]
struct Summary {
    payments: Payments,
    handoff: Check,
    restore: RestoreCheck,
    fork_refused: bool,
    fork_message: String,
    pos: PosCheck,
    backup: Backup,
    server_url: String,
    devnet_url: String,
    wall_seconds: f64,
}

fn say(out: &Output, step: &str) {
    if !out.json() {
        crate::output::outln!("==> {step}");
    }
}

pub fn run(out: &Output, args: DemoArgs) -> Result<(), Failure> {
    let temp;
    let workdir = match &args.workdir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary folder")?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the demo's runtime")?;
    let started = Instant::now();
    let mut demo = Demo::start(out, &runtime, &workdir)?;
    let (mut summary, master) = demo.play(out, &runtime, &workdir, args.payments)?;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    out.emit(&summary, || text(&summary));
    if !args.no_wait {
        if !out.json() {
            crate::output::outln!(
                "The till keeps running on device B: POS page {} , server {} , devnet {} . Press Ctrl-C to stop.",
                summary.pos.url,
                summary.server_url,
                summary.devnet_url
            );
        }
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    if let Some((till, hub)) = master {
        runtime.block_on(hub.stop());
        till.stop().context("stopping device B")?;
    }
    demo.stop(&runtime);
    let passed = summary.handoff.ok
        && summary.restore.ok
        && summary.restore.state_matches
        && summary.fork_refused
        && summary.pos.ok
        && summary.payments.failed == 0
        && summary.payments.succeeded > 0;
    if passed {
        Ok(())
    } else {
        Err(Failure::Failed(anyhow!(
            "the demo finished but not every check passed (see the summary)"
        )))
    }
}

fn text(s: &Summary) -> String {
    format!(
        "\nTill demo summary\n  payments: {} succeeded, {} failed\n  handoff to a second device: {}\n  restore of a third device from the mnemonic: {} in {:.2} s ({} events), state matches the master: {}\n  a forked node is refused: {} ({})\n  point of sale: {} ({}; the cashier's sign-in link is in {})\n  backup: {} events shipped in {} uploads, {} bytes uploaded, lag {} events\n  wall time: {:.1} s",
        s.payments.succeeded,
        s.payments.failed,
        if s.handoff.ok { "ok" } else { "FAILED" },
        if s.restore.ok { "ok" } else { "FAILED" },
        s.restore.seconds,
        s.restore.events,
        s.restore.state_matches,
        s.fork_refused,
        s.fork_message,
        if s.pos.ok {
            "a cashier's invoice was paid".to_owned()
        } else {
            format!("FAILED: {}", s.pos.error.as_deref().unwrap_or("unknown"))
        },
        s.pos.url,
        s.pos.link_file,
        s.backup.events_shipped,
        s.backup.uploads,
        s.backup.bytes_uploaded,
        s.backup.lag_events,
        s.wall_seconds
    )
}

/// The demo's world: chain, server, peer and customer nodes.
struct Demo {
    devnet: till_devnet::Devnet,
    server_url: String,
    token: String,
    cashier_token: String,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    peer: PlainNode,
    customer: PlainNode,
}

struct PlainNode {
    node: Arc<ldk_node::Node>,
    listen: SocketAddress,
}

fn free_address() -> anyhow::Result<SocketAddress> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddress::TcpIpV4 {
        addr: [127, 0, 0, 1],
        port,
    })
}

fn plain_node(esplora: &str, dir: &Path, alias: &str) -> anyhow::Result<PlainNode> {
    let mut builder = Builder::from_config(LdkConfig {
        network: Network::Regtest,
        ..LdkConfig::default()
    });
    builder.set_chain_source_esplora(
        esplora.to_owned(),
        Some(EsploraSyncConfig {
            background_sync_config: None,
        }),
    );
    builder.set_storage_dir_path(dir.to_string_lossy().into_owned());
    let listen = free_address()?;
    builder.set_listening_addresses(vec![listen.clone()])?;
    builder.set_node_alias(alias.to_owned())?;
    let node = builder
        .build()
        .map_err(|e| anyhow!("building the {alias} node: {e:?}"))?;
    node.start()
        .map_err(|e| anyhow!("starting the {alias} node: {e:?}"))?;
    Ok(PlainNode {
        node: Arc::new(node),
        listen,
    })
}

/// Waits for an event of a plain node that `f` accepts, handling the others.
fn wait_event<T>(
    node: &ldk_node::Node,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        match node.next_event() {
            Some(event) => {
                let found = f(&event);
                node.event_handled()
                    .map_err(|e| anyhow!("handling an event: {e:?}"))?;
                if let Some(t) = found {
                    return Ok(t);
                }
            }
            None => {
                if Instant::now() > deadline {
                    bail!("timed out after {WAIT:?} waiting for {what}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The till's master at the end of the demo (device B) and its hub client, serving the POS page.
type Serving = (Arc<Till>, HubClient);

/// Runs `f` until the server's store is no longer held open by an earlier call (a background
/// thread releases its file lock), for up to 5 s.
fn retry_while_open<T>(
    mut f: impl FnMut() -> Result<T, till_server::Error>,
) -> Result<T, till_server::Error> {
    let mut attempts = 0;
    loop {
        match f() {
            Err(e) if attempts < 50 && e.to_string().contains("already open") => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

impl Demo {
    fn start(
        out: &Output,
        runtime: &tokio::runtime::Runtime,
        workdir: &Path,
    ) -> anyhow::Result<Demo> {
        say(
            out,
            "starting till-devnet (a development chain, not Bitcoin)",
        );
        let devnet = runtime
            .block_on(till_devnet::Devnet::start("127.0.0.1:0"))
            .context("starting the devnet")?;
        let esplora = devnet.url().to_owned();

        say(out, "starting till-server (VSS store, lease, hub)");
        let backend = till_server::Backend::Redb {
            data_dir: workdir.join("server"),
        };
        let token = runtime
            .block_on(till_server::add_user(&backend, STORE))
            .map_err(|e| match e {
                till_server::Error::UserExists { .. } => anyhow!(
                    "{} already holds a demo; give --workdir a new folder",
                    workdir.display()
                ),
                e => anyhow::Error::new(e).context("creating the merchant's user on the server"),
            })?;
        // Each call opens the store, which a background thread releases after it: wait for its
        // file lock to go.
        let cashier_token = retry_while_open(|| {
            runtime.block_on(till_server::add_token(
                &backend,
                STORE,
                till_server::Role::Cashier,
            ))
        })
        .context("creating the POS page's cashier token")?;
        let config = till_server::ServeConfig::new("127.0.0.1:0".parse().unwrap(), backend);
        let server =
            retry_while_open(|| runtime.block_on(till_server::Server::bind(config.clone())))
                .context("starting till-server")?;
        let server_url = format!("http://{}", server.local_addr()?);
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(server.run(async {
            let _ = stopped.await;
        }));

        say(out, "starting a peer node and the customer's node");
        let peer = plain_node(&esplora, &workdir.join("peer"), "demo peer")?;
        let customer = plain_node(&esplora, &workdir.join("customer"), "demo customer")?;
        Ok(Demo {
            devnet,
            server_url,
            token,
            cashier_token,
            stop_server: Some(stop_server),
            peer,
            customer,
        })
    }

    fn till_config(&self, dir: &Path) -> anyhow::Result<(TillConfig, SocketAddress)> {
        std::fs::create_dir_all(dir.join("ldk"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let listen = free_address()?;
        let mut node = NodeConfig::new(Network::Regtest, self.devnet.url(), dir.join("ldk"));
        node.listen = vec![listen.clone()];
        node.alias = Some("demo till".to_owned());
        node.background_sync = false;
        let backup = BackupConfig::new(format!("{}/vss", self.server_url), self.token.clone());
        Ok((TillConfig::new(node, backup), listen))
    }

    fn mine(&self, blocks: u32) -> anyhow::Result<()> {
        self.devnet
            .mine(blocks, None)
            .map_err(|e| anyhow!("mining: {e}"))?;
        Ok(())
    }

    fn sync(&self, merchant: &Node) -> anyhow::Result<()> {
        for n in [&self.customer.node, &self.peer.node] {
            n.sync_wallets()
                .map_err(|e| anyhow!("syncing a node: {e:?}"))?;
        }
        merchant.sync().context("syncing the till")?;
        Ok(())
    }

    /// The customer pays `count` invoices of the till's node.
    fn pay(&self, merchant: &Node, count: u32, summary: &mut Summary) -> anyhow::Result<()> {
        for i in 0..count {
            let created = merchant
                .create_invoice(SALE_SATS * 1_000, &format!("coffee #{i}"), 600)
                .context("creating an invoice")?;
            let ok = match self
                .customer
                .node
                .bolt11_payment()
                .send(&created.invoice, None)
            {
                Ok(id) => wait_event(&self.customer.node, "the payment's outcome", |e| match e {
                    Event::PaymentSuccessful { payment_id, .. } if *payment_id == Some(id) => {
                        Some(true)
                    }
                    Event::PaymentFailed { payment_id, .. } if *payment_id == Some(id) => {
                        Some(false)
                    }
                    _ => None,
                })?,
                Err(_) => false,
            };
            if ok {
                merchant
                    .wait_payment(&created.payment_id, WAIT)
                    .context("the till seeing the payment")?;
                summary.payments.succeeded += 1;
            } else {
                summary.payments.failed += 1;
            }
        }
        Ok(())
    }

    /// Plays the demo; returns its summary and, when device B ends as the running master, B and
    /// its hub client (serving the POS page until the caller stops them).
    fn play(
        &mut self,
        out: &Output,
        runtime: &tokio::runtime::Runtime,
        workdir: &Path,
        payments: u32,
    ) -> anyhow::Result<(Summary, Option<Serving>)> {
        let mut summary = Summary {
            server_url: self.server_url.clone(),
            devnet_url: self.devnet.url().to_owned(),
            ..Summary::default()
        };
        say(
            out,
            "creating the merchant's till (a new mnemonic) on device A",
        );
        let keys = Keys::generate();
        let phrase = keys.phrase();
        let device_keys = || Keys::from_phrase(&phrase, None);
        let (config_a, listen_a) = self.till_config(&workdir.join("device-a"))?;
        let a = Till::open(workdir.join("device-a/till.redb"), device_keys()?, config_a)?;
        a.acquire().context("device A taking the lease")?;
        let node_a = a.node()?;

        say(
            out,
            "funding the customer and the till from the devnet faucet",
        );
        let customer_address = self
            .customer
            .node
            .onchain_payment()
            .new_address()
            .map_err(|e| anyhow!("{e:?}"))?;
        self.devnet
            .faucet(&customer_address, Amount::from_sat(1_000_000))
            .map_err(|e| anyhow!("faucet: {e}"))?;
        self.devnet
            .faucet(&node_a.new_address()?, Amount::from_sat(300_000))
            .map_err(|e| anyhow!("faucet: {e}"))?;
        self.mine(1)?;
        self.sync(&node_a)?;

        say(out, "opening channels: customer -> till, till -> peer");
        let merchant_id = node_a.info().node_id;
        self.customer
            .node
            .open_channel(merchant_id, listen_a.clone(), CHANNEL_SATS, None, None)
            .map_err(|e| anyhow!("customer opening a channel: {e:?}"))?;
        wait_event(
            &self.customer.node,
            "the customer's channel to be pending",
            |e| matches!(e, Event::ChannelPending { .. }).then_some(()),
        )?;
        node_a
            .open_channel(
                self.peer.node.node_id(),
                self.peer.listen.clone(),
                100_000,
                None,
            )
            .context("the till opening a channel to the peer")?;
        wait_event(&self.peer.node, "the peer's channel to be pending", |e| {
            matches!(e, Event::ChannelPending { .. }).then_some(())
        })?;
        std::thread::sleep(Duration::from_millis(500));
        self.mine(6)?;
        self.sync(&node_a)?;
        wait_until("the till's channels to be usable", || {
            let channels = node_a.channels();
            channels.len() == 2 && channels.iter().all(|c| c.is_usable)
        })?;

        say(out, &format!("the customer makes {payments} payments"));
        self.pay(&node_a, payments, &mut summary)?;

        say(out, "handing the till off from device A to device B");
        let status_a = a.replicator_status();
        let (config_b, listen_b) = self.till_config(&workdir.join("device-b"))?;
        let b = Arc::new(Till::open(
            workdir.join("device-b/till.redb"),
            device_keys()?,
            config_b,
        )?);
        let handoff = a.handoff().and_then(|()| b.acquire());
        summary.handoff = match handoff {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(e) => Check {
                ok: false,
                error: Some(e.to_string()),
            },
        };
        drop(node_a);
        if let Some(s) = status_a {
            summary.backup.events_shipped += s.events_shipped;
            summary.backup.bytes_uploaded += s.bytes_uploaded;
            summary.backup.uploads += s.uploads;
        }
        if summary.handoff.ok {
            let node_b = b.node()?;
            // Same node id, new address: the customer reconnects to it.
            self.reconnect_customer(&node_b, listen_b.clone())?;
            say(out, "device B takes two more payments");
            self.pay(&node_b, 2, &mut summary)?;
        }

        say(out, "restoring device C from the mnemonic and the server");
        // Device B ships everything and releases, so C sees exactly B's state.
        let status_b = b.replicator_status();
        b.handoff().context("device B releasing the till")?;
        if let Some(s) = status_b {
            summary.backup.events_shipped += s.events_shipped;
            summary.backup.bytes_uploaded += s.bytes_uploaded;
            summary.backup.uploads += s.uploads;
            summary.backup.lag_events = b.log().head()?.seq.saturating_sub(s.durable_seq);
        }
        let start = Instant::now();
        let (config_c, _) = self.till_config(&workdir.join("device-c"))?;
        match Till::restore(
            workdir.join("device-c/till.redb"),
            device_keys()?,
            config_c,
            |_| {},
        ) {
            Ok(c) => {
                summary.restore.seconds = start.elapsed().as_secs_f64();
                summary.restore.ok = true;
                summary.restore.events = c.log().head()?.seq;
                summary.restore.state_matches = c.log().state()? == b.log().state()?;
            }
            Err(e) => summary.restore.error = Some(e.to_string()),
        }

        say(
            out,
            "device B takes the till back; device D tries to run the same node",
        );
        b.acquire().context("device B taking the lease again")?;
        let (config_d, _) = self.till_config(&workdir.join("device-d"))?;
        let d = Till::open(workdir.join("device-d/till.redb"), device_keys()?, config_d)?;
        match d.acquire() {
            Ok(()) => {
                summary.fork_refused = false;
                summary.fork_message = "device D started a second node: NOT refused".into();
                let _ = d.stop();
            }
            Err(e) => {
                summary.fork_refused = true;
                summary.fork_message = e.to_string();
            }
        }

        say(
            out,
            "serving the POS page: a cashier's invoice, made by device B over the hub, paid by the customer",
        );
        let hub = {
            let _guard = runtime.enter();
            let executor: Arc<dyn CommandExecutor> = Arc::new(TillExecutor(Arc::clone(&b)));
            HubClient::start(HubConfig::new(
                self.server_url.clone(),
                self.token.clone(),
                STORE.to_owned(),
                b.device_id(),
                Some(executor),
            ))
        };
        // B's node started again when it took the till back: the customer reconnects to it.
        self.reconnect_customer(&*b.node()?, listen_b)?;
        summary.pos.url = format!("{}/pos/{STORE}", self.server_url);
        let link_file = workdir.join("pos-link.txt");
        summary.pos.link_file = link_file.display().to_string();
        crate::config::write_private(
            &link_file,
            &format!("{}#token={}\n", summary.pos.url, self.cashier_token),
        )
        .context("writing the cashier's sign-in link")?;
        match self.pos_sale(runtime, &hub, &b) {
            Ok(()) => summary.pos.ok = true,
            Err(e) => summary.pos.error = Some(format!("{e:#}")),
        }
        // Counted once the POS sale is settled: what device B shipped since it took the till back.
        if let Some(s) = b.replicator_status() {
            summary.backup.events_shipped += s.events_shipped;
            summary.backup.bytes_uploaded += s.bytes_uploaded;
            summary.backup.uploads += s.uploads;
        }
        Ok((summary, Some((b, hub))))
    }

    /// The customer connects to the till's node on the device listening at `listen` (the same
    /// node id as before, another address) and waits until their channel is usable there.
    fn reconnect_customer(&self, merchant: &Node, listen: SocketAddress) -> anyhow::Result<()> {
        self.customer
            .node
            .connect(merchant.info().node_id, listen, true)
            .map_err(|e| anyhow!("the customer reconnecting to the till: {e:?}"))?;
        wait_until(
            "the customer's channel to be usable on the till's device",
            || {
                merchant
                    .channels()
                    .iter()
                    .any(|c| c.counterparty_node_id == self.customer.node.node_id() && c.is_usable)
            },
        )
    }

    /// What the POS page does, over HTTP with the cashier's token: creates an invoice (the server
    /// asks the master, device B, over the hub), the customer pays it, and the invoice turns paid
    /// (the master reports the payment over the hub).
    fn pos_sale(
        &self,
        runtime: &tokio::runtime::Runtime,
        hub: &HubClient,
        b: &Till,
    ) -> anyhow::Result<()> {
        let device = b.device_id().to_string();
        runtime
            .block_on(hub.wait_for(WAIT, |s| {
                s.connected && s.master.as_ref().is_some_and(|m| m.device == device)
            }))
            .map_err(|last| anyhow!("device B never became the hub's master: {last:?}"))?;
        let http = reqwest::Client::new();
        let invoices = format!("{}/api/v1/stores/{STORE}/invoices", self.server_url);
        let created: serde_json::Value = runtime.block_on(async {
            let response = http
                .post(&invoices)
                .bearer_auth(&self.cashier_token)
                .json(&serde_json::json!({
                    "amount_sat": SALE_SATS,
                    "description": "POS sale",
                    "expiry_secs": 600,
                }))
                .send()
                .await
                .context("asking the server for an invoice")?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.context("the invoice's JSON")?;
            anyhow::ensure!(
                status.as_u16() == 201,
                "the server answered {status}: {body}"
            );
            Ok::<_, anyhow::Error>(body)
        })?;
        let (Some(id), Some(bolt11)) = (created["id"].as_str(), created["bolt11"].as_str()) else {
            bail!("the server's invoice has no id or bolt11: {created}");
        };
        let invoice: ldk_node::lightning_invoice::Bolt11Invoice = bolt11
            .parse()
            .map_err(|e| anyhow!("the master's invoice does not parse: {e:?}"))?;
        let sent = self
            .customer
            .node
            .bolt11_payment()
            .send(&invoice, None)
            .map_err(|e| anyhow!("the customer paying: {e:?}"))?;
        let paid = wait_event(
            &self.customer.node,
            "the POS payment's outcome",
            |e| match e {
                Event::PaymentSuccessful { payment_id, .. } if *payment_id == Some(sent) => {
                    Some(true)
                }
                Event::PaymentFailed { payment_id, .. } if *payment_id == Some(sent) => Some(false),
                _ => None,
            },
        )?;
        anyhow::ensure!(paid, "the customer's payment failed");
        let deadline = Instant::now() + WAIT;
        loop {
            let status = runtime.block_on(async {
                let response = http
                    .get(format!("{invoices}/{id}"))
                    .bearer_auth(&self.cashier_token)
                    .send()
                    .await?;
                response.json::<serde_json::Value>().await
            })?;
            match status["status"].as_str() {
                Some("paid") => return Ok(()),
                Some("new") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => bail!("the paid invoice shows {other:?} on the server"),
            }
        }
    }

    fn stop(&mut self, runtime: &tokio::runtime::Runtime) {
        let _ = self.customer.node.stop();
        let _ = self.peer.node.stop();
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        let _ = runtime;
    }
}

impl From<till_engine::Error> for Failure {
    fn from(e: till_engine::Error) -> Self {
        Failure::Failed(anyhow::Error::new(e))
    }
}
