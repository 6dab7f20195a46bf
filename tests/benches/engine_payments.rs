//! `cargo bench -p till-tests --bench engine_payments`: Lightning payments on loopback between a
//! customer (plain ldk-node on SQLite) and a merchant on three stores, side by side:
//!
//! - (a) Till: the engine's node on the event log, channel state acknowledged only once the
//!   till-vss replicator has it on a real till-server (the engine's `ReplicatorBarrier`);
//! - (a0) the same with the replicator's `linger` at 0 (every event shipped as soon as it is
//!   committed), to show what lingering saves;
//! - (a1) the same with one upload in flight at most (`pipeline` off), to show what sending a
//!   waited-for write behind an upload still in flight saves;
//! - (b) ldk-node on its default SQLite store (local disk only);
//! - (c) ldk-node on its own VSS store against the same till-server.
//!
//! For each: p50/p99 latency of sequential payments (send until the customer sees
//! `PaymentSuccessful`), payments per second sequentially and in a burst of payments in flight at
//! once, and bytes uploaded to the server per payment, on the wire (through a counting proxy,
//! HTTP included) for (a) and (c), and as object values and uploads (the replicator's own
//! counts) for (a), (a0) and (a1).
//! All five pairs are set up first; the payments then run in `TILL_BENCH_ROUNDS` rounds (default
//! 4), each round a share of the sequential payments and one burst per pair, the pairs in a
//! rotating order, so that slower and faster moments of the machine fall on every store alike.
//! Beside the ratios it prints where a sequential payment's time goes (creating the invoice, send
//! until the customer's success, until the merchant counts it received) and a 95% bootstrap
//! interval for the a/c sequential throughput ratio over the single payments: LDK's randomized
//! delay before a received HTLC is processed (the rest of a log-normal delay of median 50 ms,
//! drawn by the vendored ldk-node's forward timer) falls on every payment of every store, and 100
//! payments per store leave that ratio uncertain by about ±10%. For the
//! tills it also prints the log's commits per payment and how many of them a group-commit leader
//! held back for more appenders.
//! `TILL_BENCH_PAYMENTS` (sequential, in all) and `TILL_BENCH_BURST` (per burst) change the
//! counts (default 40 and 20);
//! `TILL_BENCH_RTT_MS` (default 0, plain loopback) puts that many milliseconds of round trip
//! between the merchants and the server, in the counting proxies, as a server across a network
//! would; (b) has no server and does not pay it.
//! `TILL_BENCH_KEEP=1` keeps the merchants' files (logs included) and prints where.
//! `TILL_BENCH_PAIRS` (comma-separated labels, default `a,a0,a1,b,c`) runs only those pairs, to
//! spend a long run on the comparison that matters; the channel grows to hold every payment.
//! The ldk-node merchants handle their events on a thread of their own, as an app would and as
//! Till's engine does inside; the bench waits for their `PaymentReceived` without polling.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{Amount, Network};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::payment::PaymentStatus;
use ldk_node::{Event, UserChannelId};
use till_engine::{
    BackupConfig, Keys, LogStore, Node, NodeConfig, ReplicatorBarrier, device_id, payment_id_of,
};
use till_log::Log;
use till_tests::counting_proxy::CountingProxy;
use till_tests::env_or;
use till_tests::ldk::{
    CHANNEL_READY_CONFIRMATIONS, TestChain, TestNode, free_address, fund_node, node_builder,
    start_node, wait_event, wait_until,
};
use till_tests::server::{StoreArg, TillServer, add_user, release_server};
use till_vss::replica::{Replica, Replicator, ReplicatorConfig, ReplicatorHandle};

/// The smallest channel; longer runs get one that holds all their payments.
const MIN_CAPACITY_SATS: u64 = 2_000_000;
/// The largest channel LDK opens without large-channel support.
const MAX_CAPACITY_SATS: u64 = 16_000_000;
// Small enough that a few hundred payments per pair fit in the channel.
const PAYMENT_MSAT: u64 = 1_000_000;
const MERCHANT_RESERVE: Amount = Amount::from_sat(100_000);
const WAIT: Duration = Duration::from_secs(60);

/// The merchant under test.
enum Merchant {
    Till {
        node: Box<Node>,
        handle: ReplicatorHandle,
        log: Arc<Log>,
        listen: SocketAddress,
        _dir: tempfile::TempDir,
    },
    Ldk(LdkMerchant),
}

/// An ldk-node merchant: its events are handled on a thread of their own, as an app built on
/// ldk-node would (Till's engine does the same inside), so the bench only waits to hear that a
/// payment was received.
struct LdkMerchant {
    node: Arc<TestNode>,
    received: Arc<Received>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    events: Option<std::thread::JoinHandle<()>>,
}

/// The payment hashes of the `PaymentReceived` events an [`LdkMerchant`] handled.
#[derive(Default)]
struct Received {
    hashes: Mutex<HashSet<[u8; 32]>>,
    arrived: Condvar,
}

impl LdkMerchant {
    fn new(node: TestNode) -> Self {
        let node = Arc::new(node);
        let received = Arc::new(Received::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let events = {
            let (node, received) = (Arc::clone(&node), Arc::clone(&received));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                // `event_handled` blocks on ldk-node's runtime: it is called outside this one.
                while let Some(event) = runtime.block_on(async {
                    tokio::select! {
                        event = node.next_event_async() => Some(event),
                        _ = &mut stopped => None,
                    }
                }) {
                    node.event_handled().unwrap();
                    if let Event::PaymentReceived { payment_hash, .. } = event {
                        received.hashes.lock().unwrap().insert(payment_hash.0);
                        received.arrived.notify_all();
                    }
                }
            })
        };
        Self {
            node,
            received,
            stop: Some(stop),
            events: Some(events),
        }
    }
}

impl Merchant {
    fn node_id(&self) -> PublicKey {
        match self {
            Merchant::Till { node, .. } => node.info().node_id,
            Merchant::Ldk(m) => m.node.node_id(),
        }
    }

    fn listen(&self) -> SocketAddress {
        match self {
            Merchant::Till { listen, .. } => listen.clone(),
            Merchant::Ldk(m) => m.node.listen.clone(),
        }
    }

    fn fund(&self, chain: &TestChain) {
        match self {
            Merchant::Till { node, .. } => {
                chain.faucet(&node.new_address().unwrap(), MERCHANT_RESERVE);
                chain.mine(1);
                node.sync().unwrap();
                wait_until("the till to see its funding", || {
                    node.balances().onchain_spendable_sats >= MERCHANT_RESERVE.to_sat()
                });
            }
            Merchant::Ldk(m) => {
                fund_node(chain, &m.node, MERCHANT_RESERVE);
            }
        }
    }

    fn sync(&self) {
        match self {
            Merchant::Till { node, .. } => node.sync().unwrap(),
            Merchant::Ldk(m) => m.node.sync_wallets().unwrap(),
        }
    }

    fn usable(&self) -> bool {
        let channels = match self {
            Merchant::Till { node, .. } => node.channels(),
            Merchant::Ldk(m) => m.node.list_channels(),
        };
        !channels.is_empty() && channels.iter().all(|c| c.is_usable)
    }

    fn invoice(&self, amount_msat: u64) -> Bolt11Invoice {
        match self {
            Merchant::Till { node, .. } => {
                node.create_invoice(amount_msat, "bench", 3600)
                    .unwrap()
                    .invoice
            }
            Merchant::Ldk(m) => {
                let description =
                    Bolt11InvoiceDescription::Direct(Description::new("bench".to_owned()).unwrap());
                m.node
                    .bolt11_payment()
                    .receive(amount_msat, &description, 3600)
                    .unwrap()
            }
        }
    }

    /// Waits (untimed) until the merchant counts the payment as received.
    fn wait_received(&self, invoice: &Bolt11Invoice) {
        let id = payment_id_of(invoice);
        match self {
            Merchant::Till { node, .. } => {
                let paid = node.wait_payment(&id, WAIT).unwrap();
                assert_eq!(paid.status, PaymentStatus::Succeeded);
            }
            Merchant::Ldk(m) => {
                let hashes = m.received.hashes.lock().unwrap();
                let (mut hashes, waited) = m
                    .received
                    .arrived
                    .wait_timeout_while(hashes, WAIT, |h| !h.contains(&id.0))
                    .unwrap();
                assert!(!waited.timed_out(), "the merchant never got paid");
                hashes.remove(&id.0);
                drop(hashes);
                let paid = m.node.payment(&id).expect("a received payment is recorded");
                assert_eq!(paid.status, PaymentStatus::Succeeded);
            }
        }
    }

    fn stop(&mut self) {
        match self {
            Merchant::Till { node, handle, .. } => {
                node.stop().unwrap();
                handle.stop();
            }
            Merchant::Ldk(m) => {
                let _ = m.stop.take().map(|stop| stop.send(()));
                if let Some(events) = m.events.take() {
                    events.join().unwrap();
                }
                let _ = m.node.stop();
            }
        }
    }
}

/// Marks every queued event handled (ldk-node persists its event queue on every change).
fn drain(node: &TestNode) {
    while node.next_event().is_some() {
        node.event_handled().unwrap();
    }
}

/// Waits for the customer's `PaymentSuccessful` of `invoice`, handling other events; blocking,
/// so the latency is not rounded to a polling interval.
fn wait_success(customer: &TestNode, invoice: &Bolt11Invoice) {
    wait_successes(customer, std::slice::from_ref(invoice));
}

/// Waits for the customer's `PaymentSuccessful` of every one of `invoices`, in whatever order
/// they come (payments sent at once can complete in any order).
fn wait_successes(customer: &TestNode, invoices: &[Bolt11Invoice]) {
    let mut waiting: HashSet<[u8; 32]> = invoices.iter().map(|i| payment_id_of(i).0).collect();
    while !waiting.is_empty() {
        let event = customer.wait_next_event();
        customer.event_handled().unwrap();
        match event {
            Event::PaymentSuccessful { payment_hash, .. } => {
                waiting.remove(&payment_hash.0);
            }
            Event::PaymentFailed { reason, .. } => panic!("a payment failed: {reason:?}"),
            _ => {}
        }
    }
}

/// A merchant's directory. TILL_BENCH_KEEP keeps it (the till's log, ldk-node's debug log) to
/// study a run, and says where, under `label`.
fn merchant_dir(label: &str) -> tempfile::TempDir {
    let keep = std::env::var_os("TILL_BENCH_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        println!("{label} keeps its files in {}", dir.path().display());
    }
    dir
}

fn till_merchant(
    label: &str,
    chain: &TestChain,
    url: &str,
    token: &str,
    config: ReplicatorConfig,
) -> Merchant {
    let dir = merchant_dir(label);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = Keys::generate();
    let log = Arc::new(Log::open(dir.path().join("till.redb")).unwrap());
    let remote = till_engine::remote(&keys, &BackupConfig::new(url, token)).unwrap();
    let replica = Replica::new(Arc::clone(&log), remote.clone(), device_id(&log).unwrap());
    let lease = runtime.block_on(replica.acquire()).unwrap();
    let handle = Replicator::start(Arc::clone(&log), remote, lease, config);
    let store = LogStore::new(
        Arc::clone(&log),
        Arc::new(ReplicatorBarrier::new(handle.clone())),
    );
    let listen = free_address();
    let mut config = NodeConfig::new(Network::Regtest, chain.url(), dir.path().join("ldk"));
    config.listen = vec![listen.clone()];
    config.background_sync = false;
    let node = Node::build(config, &keys, store).unwrap();
    node.start().unwrap();
    Merchant::Till {
        node: Box::new(node),
        handle,
        log,
        listen,
        _dir: dir,
    }
}

fn ldk_merchant(chain: &TestChain, vss: Option<(&str, &str)>) -> Merchant {
    let storage = merchant_dir(if vss.is_some() { "(c)" } else { "(b)" });
    let listen = free_address();
    let builder = node_builder(chain, storage.path(), &listen);
    let node = match vss {
        None => builder.build().unwrap(),
        Some((url, token)) => {
            let headers = HashMap::from([("Authorization".to_owned(), format!("Bearer {token}"))]);
            builder
                .build_with_vss_store_and_fixed_headers(url.to_owned(), "bench".to_owned(), headers)
                .unwrap()
        }
    };
    node.start().unwrap();
    Merchant::Ldk(LdkMerchant::new(TestNode::new(
        node, "merchant", listen, storage,
    )))
}

fn open(
    chain: &TestChain,
    customer: &TestNode,
    merchant: &Merchant,
    capacity_sats: u64,
) -> UserChannelId {
    let id = customer
        .open_channel(
            merchant.node_id(),
            merchant.listen(),
            capacity_sats,
            None,
            None,
        )
        .unwrap();
    let funding = wait_event(customer, "ChannelPending", |e| match e {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    chain.wait_for_tx(&funding.txid);
    chain.mine(CHANNEL_READY_CONFIRMATIONS);
    customer.sync_wallets().unwrap();
    merchant.sync();
    wait_until("the channel to be usable on both sides", || {
        merchant.usable() && customer.list_channels().iter().all(|c| c.is_usable)
    });
    drain(customer);
    id
}

struct Row {
    /// `a`, `a0`, `a1`, `b` or `c`.
    label: &'static str,
    name: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    seq_pps: f64,
    burst_pps: f64,
    wire_up_per_payment: Option<f64>,
    values_up_per_payment: Option<f64>,
    uploads_per_payment: Option<f64>,
    /// Uploads sent behind one in flight that landed, and that were refused, per payment.
    followers_per_payment: Option<(f64, f64)>,
    /// Each round's sequential payments per second.
    round_pps: Vec<f64>,
    /// Means over the sequential payments, in ms: creating the invoice, send until the
    /// customer's `PaymentSuccessful`, and from there until the merchant counts it received.
    mean_invoice_ms: f64,
    mean_latency_ms: f64,
    mean_receive_ms: f64,
    /// Each sequential payment whole, in seconds.
    cycles: Vec<f64>,
    /// Each burst's time, in seconds.
    bursts: Vec<f64>,
    /// The till's log: commits, and commits whose leader waited for more appenders, per payment.
    commits_per_payment: Option<(f64, f64)>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// A customer with a channel to one merchant, and what its payments measured so far.
struct Pair<'p> {
    label: &'static str,
    name: &'static str,
    customer: TestNode,
    merchant: Merchant,
    proxy: Option<&'p CountingProxy>,
    wire_before: Option<u64>,
    /// A till's replicator status and log commit counts when counting started.
    status_before: Option<(till_vss::replica::ReplicatorStatus, till_log::CommitStats)>,
    latencies: Vec<Duration>,
    /// Time spent creating invoices, and waiting for the merchant to count a payment received
    /// after the customer saw it succeed, in the sequential payments.
    invoicing: Duration,
    receiving: Duration,
    /// Each sequential payment whole: invoice, send, success, received.
    cycles: Vec<Duration>,
    seq_elapsed: Duration,
    round_pps: Vec<f64>,
    burst_count: usize,
    burst_elapsed: Duration,
    /// Each burst's time, in seconds.
    bursts: Vec<f64>,
}

impl<'p> Pair<'p> {
    /// Funds both sides, opens the channel and makes one warm-up payment (first route, first
    /// HTLC); counting starts after it.
    fn new(
        (label, name): (&'static str, &'static str),
        chain: &TestChain,
        merchant: Merchant,
        proxy: Option<&'p CountingProxy>,
        capacity_sats: u64,
    ) -> Self {
        let customer = start_node(chain, "customer");
        fund_node(
            chain,
            &customer,
            Amount::from_sat(capacity_sats + 1_000_000),
        );
        merchant.fund(chain);
        open(chain, &customer, &merchant, capacity_sats);
        let warm = merchant.invoice(PAYMENT_MSAT);
        customer.bolt11_payment().send(&warm, None).unwrap();
        wait_success(&customer, &warm);
        merchant.wait_received(&warm);
        let status_before = match &merchant {
            Merchant::Till { handle, log, .. } => Some((handle.status(), log.commit_stats())),
            Merchant::Ldk(_) => None,
        };
        Pair {
            label,
            name,
            customer,
            merchant,
            wire_before: proxy.map(CountingProxy::uploaded),
            proxy,
            status_before,
            latencies: Vec::new(),
            invoicing: Duration::ZERO,
            receiving: Duration::ZERO,
            cycles: Vec::new(),
            seq_elapsed: Duration::ZERO,
            round_pps: Vec::new(),
            burst_count: 0,
            burst_elapsed: Duration::ZERO,
            bursts: Vec::new(),
        }
    }

    /// `n` payments one after the other.
    fn sequential(&mut self, n: usize) {
        let started = Instant::now();
        for _ in 0..n {
            let cycle = Instant::now();
            let invoice = self.merchant.invoice(PAYMENT_MSAT);
            self.invoicing += cycle.elapsed();
            let t = Instant::now();
            self.customer.bolt11_payment().send(&invoice, None).unwrap();
            wait_success(&self.customer, &invoice);
            self.latencies.push(t.elapsed());
            let t = Instant::now();
            self.merchant.wait_received(&invoice);
            self.receiving += t.elapsed();
            self.cycles.push(cycle.elapsed());
        }
        let elapsed = started.elapsed();
        self.seq_elapsed += elapsed;
        self.round_pps.push(n as f64 / elapsed.as_secs_f64());
    }

    /// `n` payments sent at once.
    fn burst(&mut self, n: usize) {
        let invoices: Vec<_> = (0..n)
            .map(|_| self.merchant.invoice(PAYMENT_MSAT))
            .collect();
        let started = Instant::now();
        for invoice in &invoices {
            self.customer.bolt11_payment().send(invoice, None).unwrap();
        }
        wait_successes(&self.customer, &invoices);
        let elapsed = started.elapsed();
        self.burst_elapsed += elapsed;
        self.bursts.push(elapsed.as_secs_f64());
        self.burst_count += n;
        for invoice in &invoices {
            self.merchant.wait_received(invoice);
        }
    }

    fn finish(mut self) -> Row {
        let total = (self.latencies.len() + self.burst_count) as f64;
        let wire = self
            .wire_before
            .map(|b| (self.proxy.unwrap().uploaded() - b) as f64 / total);
        let (values, uploads, followers, commits) = match (&self.merchant, self.status_before) {
            (Merchant::Till { handle, log, .. }, Some((before, commits_before))) => {
                let now = handle.status();
                let commits_now = log.commit_stats();
                (
                    Some((now.bytes_uploaded - before.bytes_uploaded) as f64 / total),
                    Some((now.uploads - before.uploads) as f64 / total),
                    Some((
                        (now.followers_landed - before.followers_landed) as f64 / total,
                        (now.followers_refused - before.followers_refused) as f64 / total,
                    )),
                    Some((
                        (commits_now.commits - commits_before.commits) as f64 / total,
                        (commits_now.gathers - commits_before.gathers) as f64 / total,
                    )),
                )
            }
            _ => (None, None, None, None),
        };
        self.merchant.stop();
        self.latencies.sort();
        let n = self.latencies.len() as f64;
        let mean_ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
        Row {
            mean_invoice_ms: mean_ms(self.invoicing),
            mean_latency_ms: mean_ms(self.latencies.iter().sum()),
            mean_receive_ms: mean_ms(self.receiving),
            cycles: self.cycles.iter().map(Duration::as_secs_f64).collect(),
            commits_per_payment: commits,
            name: self.name,
            p50_ms: pct(&self.latencies, 0.5),
            p99_ms: pct(&self.latencies, 0.99),
            seq_pps: self.latencies.len() as f64 / self.seq_elapsed.as_secs_f64(),
            burst_pps: self.burst_count as f64 / self.burst_elapsed.as_secs_f64(),
            wire_up_per_payment: wire,
            values_up_per_payment: values,
            uploads_per_payment: uploads,
            followers_per_payment: followers,
            round_pps: self.round_pps,
            bursts: self.bursts,
            label: self.label,
        }
    }
}

/// Runs `rounds` rounds over every pair, each round a share of the sequential payments and then
/// a burst per pair, the pairs in a rotating order, so that the machine's slower and faster
/// moments fall on every store alike.
fn measure(pairs: &mut [Pair<'_>], payments: usize, burst: usize, rounds: usize) {
    for round in 0..rounds {
        let share = payments / rounds + usize::from(round < payments % rounds);
        for i in 0..pairs.len() {
            let pair = &mut pairs[(round + i) % pairs.len()];
            pair.sequential(share);
            pair.burst(burst);
        }
        println!("round {}/{rounds} done", round + 1);
    }
}

/// A 95% bootstrap interval for the throughput of `a` over that of `c` (the mean time of `c`'s
/// samples over that of `a`'s: single payments, or bursts of the same size), resampling each
/// store's samples, and the share of the resamples in which `a` is at least as fast.
fn throughput_ratio_interval(a: &[f64], c: &[f64]) -> (f64, f64, f64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut resampled_mean = |v: &[f64]| {
        (0..v.len())
            .map(|_| v[rng.gen_range(0..v.len())])
            .sum::<f64>()
            / v.len() as f64
    };
    let mut ratios: Vec<f64> = (0..4000)
        .map(|_| resampled_mean(c) / resampled_mean(a))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at_least = ratios.iter().filter(|&&r| r >= 1.0).count() as f64 / ratios.len() as f64;
    (
        ratios[ratios.len() / 40],
        ratios[ratios.len() * 39 / 40],
        at_least,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The pairs `TILL_BENCH_PAIRS` names (comma-separated labels; default all five).
fn chosen_pairs() -> Vec<&'static str> {
    const ALL: [&str; 5] = ["a", "a0", "a1", "b", "c"];
    match std::env::var("TILL_BENCH_PAIRS") {
        Err(_) => ALL.to_vec(),
        Ok(list) => {
            let chosen: Vec<&'static str> = ALL
                .into_iter()
                .filter(|label| list.split(',').any(|l| l.trim() == *label))
                .collect();
            for l in list.split(',').map(str::trim) {
                assert!(
                    ALL.contains(&l),
                    "TILL_BENCH_PAIRS: unknown pair {l:?}; the pairs are a, a0, a1, b and c"
                );
            }
            assert!(!chosen.is_empty(), "TILL_BENCH_PAIRS names no pair");
            chosen
        }
    }
}

/// A channel that holds `payments` payments with a quarter to spare, within LDK's limit.
fn capacity_for(payments: usize) -> u64 {
    let needed = payments as u64 * PAYMENT_MSAT / 1000;
    let capacity = (needed + needed / 4 + 200_000).max(MIN_CAPACITY_SATS);
    assert!(
        capacity <= MAX_CAPACITY_SATS,
        "{payments} payments per pair of {PAYMENT_MSAT} msat do not fit in one channel; \
         use fewer (TILL_BENCH_PAYMENTS, TILL_BENCH_BURST, TILL_BENCH_ROUNDS)"
    );
    capacity
}

fn main() {
    let payments = env_or("TILL_BENCH_PAYMENTS", 40usize);
    let burst = env_or("TILL_BENCH_BURST", 20usize);
    let rounds = env_or("TILL_BENCH_ROUNDS", 4usize).clamp(1, payments.max(1));
    let chosen = chosen_pairs();
    let capacity = capacity_for(payments + rounds * burst + 1);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = StoreArg::DataDir(dir.path().join("server"));
    let bin = release_server();
    let till_token = add_user(&bin, &store, "till");
    let a0_token = add_user(&bin, &store, "till-linger-0");
    let a1_token = add_user(&bin, &store, "till-one-in-flight");
    let ldk_token = add_user(&bin, &store, "ldk");
    let server = TillServer::start(&bin, store, &[]);
    // 0 (the default) is plain loopback; more puts that round trip between the merchants and
    // the server, as a server across a network would.
    let round_trip = Duration::from_millis(env_or("TILL_BENCH_RTT_MS", 0u64));
    let proxy = || CountingProxy::with_round_trip(server.addr(), round_trip);
    let (till_proxy, a0_proxy, a1_proxy, ldk_proxy) = (proxy(), proxy(), proxy(), proxy());
    let chain = TestChain::start();

    let url = |proxy: &CountingProxy| format!("http://{}/vss", proxy.addr());
    let till = |label: &str, proxy: &CountingProxy, token: &str, config| {
        till_merchant(&format!("({label})"), &chain, &url(proxy), token, config)
    };
    let mut pairs = Vec::new();
    for &label in &chosen {
        let (name, merchant, proxy) = match label {
            "a" => (
                "(a) Till: log + remote barrier",
                till(label, &till_proxy, &till_token, ReplicatorConfig::default()),
                Some(&till_proxy),
            ),
            // The same with every event shipped at once: what lingering saves.
            "a0" => (
                "(a0) Till, linger 0",
                till(
                    label,
                    &a0_proxy,
                    &a0_token,
                    ReplicatorConfig {
                        linger: Duration::ZERO,
                        ..ReplicatorConfig::default()
                    },
                ),
                Some(&a0_proxy),
            ),
            // The same with one upload in flight at most: what pipelining saves.
            "a1" => (
                "(a1) Till, one upload in flight",
                till(
                    label,
                    &a1_proxy,
                    &a1_token,
                    ReplicatorConfig {
                        pipeline: false,
                        ..ReplicatorConfig::default()
                    },
                ),
                Some(&a1_proxy),
            ),
            "b" => ("(b) ldk-node, SQLite", ldk_merchant(&chain, None), None),
            _ => (
                "(c) ldk-node, VSS on till-server",
                ldk_merchant(&chain, Some((&url(&ldk_proxy), &ldk_token))),
                Some(&ldk_proxy),
            ),
        };
        pairs.push(Pair::new((label, name), &chain, merchant, proxy, capacity));
    }
    measure(&mut pairs, payments, burst, rounds);
    // Let the last commitment dances and background persistence settle before counting bytes.
    std::thread::sleep(Duration::from_millis(500));
    let rows: Vec<Row> = pairs.into_iter().map(Pair::finish).collect();
    let row = |label: &str| rows.iter().find(|r| r.label == label);

    println!();
    println!(
        "engine_payments: a customer (ldk-node, SQLite) pays each merchant {} msat over a {capacity} sat channel; {payments} sequential + {rounds} bursts of {burst}, in {rounds} interleaved rounds; {}, release till-server (redb)",
        PAYMENT_MSAT,
        if round_trip.is_zero() {
            "loopback".to_owned()
        } else {
            format!(
                "loopback + {} ms round trip to the server",
                round_trip.as_millis()
            )
        }
    );
    println!(
        "{:<34} {:>8} {:>8} {:>9} {:>10} {:>12} {:>12} {:>12}",
        "merchant store",
        "p50 ms",
        "p99 ms",
        "seq pay/s",
        "burst pay/s",
        "wire B/pay",
        "values B/pay",
        "uploads/pay"
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    for row in &rows {
        println!(
            "{:<34} {:>8.1} {:>8.1} {:>9.1} {:>10.1} {:>12} {:>12} {:>12}",
            row.name,
            row.p50_ms,
            row.p99_ms,
            row.seq_pps,
            row.burst_pps,
            opt(row.wire_up_per_payment, 0),
            opt(row.values_up_per_payment, 0),
            opt(row.uploads_per_payment, 1)
        );
    }
    println!(
        "sequential payments, mean ms: invoice + send until the customer's success + until the merchant counts it received"
    );
    for row in &rows {
        println!(
            "{:<34} {:>8.1} + {:>8.1} + {:>8.1}",
            row.name, row.mean_invoice_ms, row.mean_latency_ms, row.mean_receive_ms
        );
    }
    if let (Some(a), Some(b)) = (row("a"), row("b")) {
        println!(
            "ratios: a/b p50 latency {:.2}x, a/b p99 latency {:.2}x",
            a.p50_ms / b.p50_ms,
            a.p99_ms / b.p99_ms,
        );
    }
    if let (Some(a), Some(c)) = (row("a"), row("c")) {
        println!(
            "ratios: a/c p50 latency {:.2}x, p99 latency {:.2}x; a/c throughput {:.2}x sequential, {:.2}x burst; a/c wire bytes per payment {:.2}x",
            a.p50_ms / c.p50_ms,
            a.p99_ms / c.p99_ms,
            a.seq_pps / c.seq_pps,
            a.burst_pps / c.burst_pps,
            a.wire_up_per_payment.unwrap() / c.wire_up_per_payment.unwrap()
        );
        let per_round: Vec<f64> = a
            .round_pps
            .iter()
            .zip(&c.round_pps)
            .map(|(a, c)| a / c)
            .collect();
        println!(
            "a/c sequential throughput per round: {} (median {:.2}x)",
            per_round
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" "),
            median(per_round.clone())
        );
        for (kind, samples, a, c) in [
            ("sequential", "payments", &a.cycles, &c.cycles),
            ("burst", "bursts", &a.bursts, &c.bursts),
        ] {
            let (low, high, at_least) = throughput_ratio_interval(a, c);
            println!(
                "a/c {kind} throughput 95% interval (bootstrap over {} and {} {samples}): {low:.3}x to {high:.3}x; at least 1x in {:.1}% of resamples",
                a.len(),
                c.len(),
                at_least * 100.0
            );
        }
    }
    if let (Some(a), Some(a0)) = (row("a"), row("a0")) {
        println!(
            "lingering: a/a0 uploads per payment {:.2}x, p50 latency {:.2}x, sequential throughput {:.2}x",
            a.uploads_per_payment.unwrap() / a0.uploads_per_payment.unwrap(),
            a.p50_ms / a0.p50_ms,
            a.seq_pps / a0.seq_pps
        );
    }
    if let (Some(a), Some(a1)) = (row("a"), row("a1")) {
        let (landed, refused) = a.followers_per_payment.unwrap();
        println!(
            "pipelining: a/a1 p50 latency {:.2}x, sequential throughput {:.2}x, burst throughput {:.2}x; (a) uploads sent behind one in flight per payment: {landed:.2} landed, {refused:.2} refused",
            a.p50_ms / a1.p50_ms,
            a.seq_pps / a1.seq_pps,
            a.burst_pps / a1.burst_pps
        );
    }
    for row in &rows {
        if let Some((commits, gathers)) = row.commits_per_payment {
            println!(
                "{}: log commits per payment {commits:.1}, of which a leader held back for more appenders {gathers:.2}",
                row.name
            );
        }
    }
    println!(
        "(total bench time {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
