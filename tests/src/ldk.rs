//! ldk-node nodes on an in-process devnet, for scenario tests.
//!
//! Tests are plain `#[test]` functions: ldk-node's blocking calls (`sync_wallets`, `start`) cannot
//! run inside an async test, so [`TestChain`] owns its own tokio runtime for the devnet, and each
//! node owns another. Every wait has a timeout and panics with what it was waiting for.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ldk_node::bitcoin::{Address, Amount, Network, OutPoint, Txid};
use ldk_node::config::{Config, EsploraSyncConfig};
use ldk_node::lightning::chain::channelmonitor::ANTI_REORG_DELAY;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::{Builder, Event, Node, PendingSweepBalance, UserChannelId};
use serde_json::Value;
use tempfile::TempDir;
use till_devnet::Devnet;

/// How long any single wait (an event, a transaction reaching the mempool, balances settling)
/// may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// Confirmations ldk-node needs before a channel is ready.
pub const CHANNEL_READY_CONFIRMATIONS: u32 = 6;

/// A devnet running on its own runtime, plus the txids its faucet paid (their fees are the
/// devnet's, not the nodes').
pub struct TestChain {
    devnet: Option<Devnet>,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    faucet_txids: Mutex<HashSet<Txid>>,
}

impl TestChain {
    /// Starts a fresh devnet on a free local port.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the devnet");
        let devnet = runtime
            .block_on(Devnet::start("127.0.0.1:0"))
            .expect("the devnet starts");
        Self {
            devnet: Some(devnet),
            runtime,
            http: reqwest::Client::new(),
            faucet_txids: Mutex::new(HashSet::new()),
        }
    }

    pub fn devnet(&self) -> &Devnet {
        self.devnet.as_ref().expect("the devnet runs until drop")
    }

    /// The Esplora base URL.
    pub fn url(&self) -> String {
        self.devnet().url().to_owned()
    }

    pub fn height(&self) -> u32 {
        self.devnet().height()
    }

    /// Mines `blocks` blocks (including the mempool) to the devnet's own address.
    pub fn mine(&self, blocks: u32) {
        self.devnet().mine(blocks, None).expect("mining");
    }

    /// Pays `amount` to `address` from the faucet; unconfirmed until the next block.
    pub fn faucet(&self, address: &Address, amount: Amount) -> Txid {
        let txid = self
            .devnet()
            .faucet(address, amount)
            .expect("the faucet pays");
        self.faucet_txids.lock().unwrap().insert(txid);
        txid
    }

    /// Replaces the last `depth` blocks with `depth + 1` empty ones.
    pub fn reorg(&self, depth: u32) -> till_devnet::Reorg {
        self.devnet().reorg(depth).expect("reorg")
    }

    /// `GET path` as JSON, or `None` on 404.
    pub fn get_json(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.url());
        self.runtime.block_on(async {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .expect("the devnet answers");
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return None;
            }
            assert!(
                response.status().is_success(),
                "GET {url}: {}",
                response.status()
            );
            Some(response.json().await.expect("JSON"))
        })
    }

    /// The transaction's Esplora JSON, or `None` if the devnet does not know it.
    pub fn tx(&self, txid: &Txid) -> Option<Value> {
        self.get_json(&format!("/tx/{txid}"))
    }

    /// Whether the transaction is confirmed in the best chain.
    pub fn is_confirmed(&self, txid: &Txid) -> bool {
        self.tx(txid)
            .is_some_and(|tx| tx["status"]["confirmed"] == true)
    }

    /// Waits until the devnet knows `txid` (in the mempool or a block).
    pub fn wait_for_tx(&self, txid: &Txid) {
        wait_until(&format!("transaction {txid} to reach the devnet"), || {
            self.tx(txid).is_some()
        });
    }

    /// The transaction spending `outpoint`, once one reaches the devnet.
    pub fn wait_for_spend(&self, outpoint: &OutPoint) -> Txid {
        let mut spender = None;
        wait_until(
            &format!("a spend of {outpoint} to reach the devnet"),
            || {
                let status = self
                    .get_json(&format!("/tx/{}/outspend/{}", outpoint.txid, outpoint.vout))
                    .expect("the outpoint's transaction is known");
                spender = status["txid"].as_str().map(|t| t.parse().unwrap());
                spender.is_some()
            },
        );
        spender.unwrap()
    }

    /// Fees of every transaction confirmed above `height` that the faucet did not send: in a test
    /// where only the faucet and the nodes transact, what the nodes paid for the chain.
    pub fn fees_paid_above(&self, height: u32) -> u64 {
        let faucet = self.faucet_txids.lock().unwrap().clone();
        let mut fees = 0;
        for h in height + 1..=self.height() {
            let hash = self.block_hash(h);
            let txids = self
                .get_json(&format!("/block/{hash}/txids"))
                .expect("block");
            for txid in txids.as_array().unwrap().iter().skip(1) {
                let txid: Txid = txid.as_str().unwrap().parse().unwrap();
                if !faucet.contains(&txid) {
                    fees += self.tx(&txid).expect("confirmed tx")["fee"]
                        .as_u64()
                        .unwrap();
                }
            }
        }
        fees
    }

    /// Unspent outputs of `txid`, by index, with their values.
    pub fn unspent_outputs(&self, txid: &Txid) -> Vec<(u32, u64)> {
        let tx = self.tx(txid).expect("known tx");
        let mut unspent = Vec::new();
        for (vout, output) in tx["vout"].as_array().unwrap().iter().enumerate() {
            let status = self
                .get_json(&format!("/tx/{txid}/outspend/{vout}"))
                .unwrap();
            if status["spent"] == false {
                unspent.push((vout as u32, output["value"].as_u64().unwrap()));
            }
        }
        unspent
    }

    fn block_hash(&self, height: u32) -> String {
        let url = format!("{}/block-height/{height}", self.url());
        self.runtime.block_on(async {
            self.http
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }
}

impl Drop for TestChain {
    fn drop(&mut self) {
        if let Some(devnet) = self.devnet.take() {
            let _ = self.runtime.block_on(devnet.stop());
        }
    }
}

/// An ldk-node node with its storage in a temporary directory.
pub struct TestNode {
    pub node: Node,
    pub name: &'static str,
    pub listen: SocketAddress,
    _storage: TempDir,
}

impl TestNode {
    /// Wraps a node built elsewhere (another store, other entropy); `storage` is kept until the
    /// node is dropped.
    pub fn new(node: Node, name: &'static str, listen: SocketAddress, storage: TempDir) -> Self {
        Self {
            node,
            name,
            listen,
            _storage: storage,
        }
    }
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.node.stop();
    }
}

/// A builder for a regtest node on `chain`, storing in `storage_dir` and listening on `listen`,
/// syncing only when told to (background sync is off so tests decide when the node sees new
/// blocks). Callers that need another store (VSS) or entropy adjust it before building.
pub fn node_builder(chain: &TestChain, storage_dir: &Path, listen: &SocketAddress) -> Builder {
    let config = Config {
        network: Network::Regtest,
        ..Config::default()
    };
    let mut builder = Builder::from_config(config);
    let sync = EsploraSyncConfig {
        background_sync_config: None,
    };
    builder.set_chain_source_esplora(chain.url(), Some(sync));
    builder.set_storage_dir_path(storage_dir.to_str().expect("a UTF-8 path").to_owned());
    builder
        .set_listening_addresses(vec![listen.clone()])
        .expect("a listening address");
    builder
}

/// A free local address to listen on.
pub fn free_address() -> SocketAddress {
    SocketAddress::TcpIpV4 {
        addr: [127, 0, 0, 1],
        port: free_port(),
    }
}

/// Builds and starts a regtest node (see [`node_builder`]) on a free local port, storing in a
/// temporary directory.
pub fn start_node(chain: &TestChain, name: &'static str) -> TestNode {
    let storage = tempfile::tempdir().expect("a temporary directory");
    let listen = free_address();
    let node = node_builder(chain, storage.path(), &listen)
        .build()
        .unwrap_or_else(|e| panic!("building {name}: {e:?}"));
    node.start()
        .unwrap_or_else(|e| panic!("starting {name}: {e:?}"));
    TestNode {
        node,
        name,
        listen,
        _storage: storage,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Calls `sync_wallets` on every node.
pub fn sync(nodes: &[&TestNode]) {
    for node in nodes {
        node.sync_wallets()
            .unwrap_or_else(|e| panic!("{} sync_wallets: {e:?}", node.name));
    }
}

/// Mines `blocks` and syncs every node.
pub fn mine_and_sync(chain: &TestChain, blocks: u32, nodes: &[&TestNode]) {
    chain.mine(blocks);
    sync(nodes);
}

/// Pays `amount` from the faucet to a new address of `node`, confirms it with one block and syncs
/// the node. Returns the faucet's txid.
pub fn fund_node(chain: &TestChain, node: &TestNode, amount: Amount) -> Txid {
    let address = node
        .onchain_payment()
        .new_address()
        .unwrap_or_else(|e| panic!("{} new_address: {e:?}", node.name));
    let txid = chain.faucet(&address, amount);
    mine_and_sync(chain, 1, &[node]);
    wait_until(
        &format!("{} to see its {amount} funding", node.name),
        || node.list_balances().spendable_onchain_balance_sats >= amount.to_sat(),
    );
    txid
}

/// Polls `done` every 50 ms until it holds, panicking after [`WAIT`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// Waits for the next event of `node` that `matches` accepts, marking it handled. Events it does
/// not accept are handled and logged, since ldk-node's event order between kinds is not fixed.
pub fn wait_event<T>(
    node: &TestNode,
    what: &str,
    mut matches: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(event) = node.next_event() {
            let found = matches(&event);
            node.event_handled()
                .unwrap_or_else(|e| panic!("{} event_handled: {e:?}", node.name));
            match found {
                Some(found) => return found,
                None => eprintln!("{}: skipping {event:?} while waiting for {what}", node.name),
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {} to see {what}",
            node.name
        );
        sleep(Duration::from_millis(20));
    }
}

/// `from` opens a `capacity_sats` channel to `to`, pushing `push_msat`; waits until the funding
/// transaction reaches the devnet, confirms it with six blocks and waits for both sides'
/// `ChannelReady`. Returns the channel's id on `from` and its funding outpoint.
pub fn open_channel(
    chain: &TestChain,
    from: &TestNode,
    to: &TestNode,
    capacity_sats: u64,
    push_msat: u64,
) -> (UserChannelId, OutPoint) {
    let user_channel_id = from
        .open_channel(
            to.node_id(),
            to.listen.clone(),
            capacity_sats,
            Some(push_msat),
            None,
        )
        .unwrap_or_else(|e| panic!("{} open_channel: {e:?}", from.name));
    let funding = wait_event(from, "ChannelPending", |event| match event {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    wait_event(to, "ChannelPending", |event| {
        matches!(event, Event::ChannelPending { .. }).then_some(())
    });
    chain.wait_for_tx(&funding.txid);
    mine_and_sync(chain, CHANNEL_READY_CONFIRMATIONS, &[from, to]);
    wait_event(from, "ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
    wait_event(to, "ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
    (user_channel_id, funding)
}

/// A BOLT11 invoice of `to`'s for `amount_msat`, with `description`, expiring in `expiry_secs`.
pub fn invoice(
    to: &TestNode,
    amount_msat: u64,
    description: &str,
    expiry_secs: u32,
) -> Bolt11Invoice {
    let description = Bolt11InvoiceDescription::Direct(
        Description::new(description.to_owned()).expect("a valid description"),
    );
    to.bolt11_payment()
        .receive(amount_msat, &description, expiry_secs)
        .unwrap_or_else(|e| panic!("{} receive: {e:?}", to.name))
}

/// `from` pays `to` a BOLT11 invoice of `amount_msat` and both see the payment complete.
pub fn pay(from: &TestNode, to: &TestNode, amount_msat: u64) {
    let invoice = invoice(to, amount_msat, "till test payment", 3600);
    // A previous payment's HTLC may still be settling; only then is its amount spendable.
    wait_until(
        &format!("{} to be able to send {amount_msat} msat", from.name),
        || {
            from.list_channels()
                .iter()
                .any(|channel| channel.next_outbound_htlc_limit_msat >= amount_msat)
        },
    );
    from.bolt11_payment()
        .send(&invoice, None)
        .unwrap_or_else(|e| {
            panic!(
                "{} send: {e:?}; channels: {:#?}",
                from.name,
                from.list_channels()
            )
        });
    wait_event(from, "PaymentSuccessful", |event| {
        matches!(event, Event::PaymentSuccessful { .. }).then_some(())
    });
    let received = wait_event(to, "PaymentReceived", |event| match event {
        Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
        _ => None,
    });
    assert_eq!(
        received, amount_msat,
        "{} received a different amount",
        to.name
    );
}

/// The lightning balance `node` holds in its channels, in sat.
pub fn lightning_balance_sats(node: &TestNode) -> u64 {
    node.list_balances().total_lightning_balance_sats
}

/// Syncs, then mines `step` blocks and syncs again, until `settled` holds for every node,
/// panicking after `max_rounds` rounds with every node's balances.
pub fn mine_until_settled(
    chain: &TestChain,
    nodes: &[&TestNode],
    max_rounds: u32,
    step: u32,
    what: &str,
    mut settled: impl FnMut(&TestNode) -> bool,
) {
    sync(nodes);
    for _ in 0..max_rounds {
        if nodes.iter().all(|node| settled(node)) {
            return;
        }
        mine_and_sync(chain, step, nodes);
    }
    let balances: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}: {:?}", node.name, node.list_balances()))
        .collect();
    panic!(
        "{what} did not happen within {max_rounds} rounds of {step} block(s); balances: {balances:#?}"
    );
}

/// Whether a node holds nothing in channels or pending sweeps: everything it has is on chain in
/// its wallet.
pub fn all_on_chain(node: &TestNode) -> bool {
    let balances = node.list_balances();
    balances.lightning_balances.is_empty()
        && balances.pending_balances_from_channel_closures.is_empty()
}

/// Whether a node's force-closed funds are back in its wallet: no channel balances left, and every
/// sweep confirmed at least `ANTI_REORG_DELAY` (6) deep. ldk-node keeps listing swept outputs as
/// pending until 4038 blocks have passed (LDK's `PRUNE_DELAY_BLOCKS`), so waiting for the list to
/// empty is not practical.
pub fn swept(chain: &TestChain, node: &TestNode) -> bool {
    let tip = chain.height();
    let balances = node.list_balances();
    balances.lightning_balances.is_empty()
        && balances
            .pending_balances_from_channel_closures
            .iter()
            .all(|pending| {
                matches!(
                    pending,
                    PendingSweepBalance::AwaitingThresholdConfirmations { confirmation_height, .. }
                        if tip + 1 >= confirmation_height + ANTI_REORG_DELAY
                )
            })
}

/// Shared wiring for channel tests: a devnet and two funded nodes.
pub struct Pair {
    // Fields drop in order: the nodes stop before their chain does.
    pub alice: TestNode,
    pub bob: TestNode,
    pub chain: TestChain,
    /// Total the faucet paid the two nodes.
    pub funded_sats: u64,
    /// The height at which both fundings were confirmed; every later non-faucet transaction is the
    /// nodes'.
    pub funded_height: u32,
}

/// Starts a devnet and two nodes, and funds each with `amount`.
pub fn funded_pair(amount: Amount) -> Pair {
    let chain = TestChain::start();
    let alice = start_node(&chain, "alice");
    let bob = start_node(&chain, "bob");
    fund_node(&chain, &alice, amount);
    fund_node(&chain, &bob, amount);
    let funded_height = chain.height();
    Pair {
        alice,
        bob,
        chain,
        funded_sats: amount.to_sat() * 2,
        funded_height,
    }
}
