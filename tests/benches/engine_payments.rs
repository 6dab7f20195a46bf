//! `cargo bench -p till-tests --bench engine_payments`: Lightning payments on loopback between a
//! customer (plain ldk-node on SQLite) and a merchant on three stores, side by side:
//!
//! - (a) Till: the engine's node on the event log, channel state acknowledged only once the
//!   till-vss replicator has it on a real till-server (the engine's `ReplicatorBarrier`);
//! - (a0) the same with the replicator's `linger` at 0 (every event shipped as soon as it is
//!   committed), to show what lingering saves;
//! - (b) ldk-node on its default SQLite store (local disk only);
//! - (c) ldk-node on its own VSS store against the same till-server.
//!
//! For each: p50/p99 latency of sequential payments (send until the customer sees
//! `PaymentSuccessful`), payments per second sequentially and in a burst of payments in flight at
//! once, and bytes uploaded to the server per payment, on the wire (through a counting proxy,
//! HTTP included) for (a) and (c), and as object values and uploads (the replicator's own
//! counts) for (a) and (a0).
//! `TILL_BENCH_PAYMENTS` and `TILL_BENCH_BURST` change the counts (default 40 and 20);
//! `TILL_BENCH_KEEP=1` keeps the till's files and prints where.

use std::collections::HashMap;
use std::sync::Arc;
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
use till_tests::ldk::{
    CHANNEL_READY_CONFIRMATIONS, TestChain, TestNode, free_address, fund_node, node_builder,
    start_node, wait_event, wait_until,
};
use till_tests::server::{StoreArg, TillServer, add_user, release_server};
use till_vss::replica::{Replica, Replicator, ReplicatorConfig, ReplicatorHandle};

const CAPACITY_SATS: u64 = 2_000_000;
const PAYMENT_MSAT: u64 = 5_000_000;
const MERCHANT_RESERVE: Amount = Amount::from_sat(100_000);
const CUSTOMER_FUNDING: Amount = Amount::from_sat(3_000_000);
const WAIT: Duration = Duration::from_secs(60);

/// The merchant under test.
enum Merchant {
    Till {
        node: Node,
        handle: ReplicatorHandle,
        listen: SocketAddress,
        _dir: tempfile::TempDir,
    },
    Ldk(TestNode),
}

impl Merchant {
    fn node_id(&self) -> PublicKey {
        match self {
            Merchant::Till { node, .. } => node.info().node_id,
            Merchant::Ldk(n) => n.node_id(),
        }
    }

    fn listen(&self) -> SocketAddress {
        match self {
            Merchant::Till { listen, .. } => listen.clone(),
            Merchant::Ldk(n) => n.listen.clone(),
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
            Merchant::Ldk(n) => {
                fund_node(chain, n, MERCHANT_RESERVE);
            }
        }
    }

    fn sync(&self) {
        match self {
            Merchant::Till { node, .. } => node.sync().unwrap(),
            Merchant::Ldk(n) => n.sync_wallets().unwrap(),
        }
    }

    fn usable(&self) -> bool {
        let channels = match self {
            Merchant::Till { node, .. } => node.channels(),
            Merchant::Ldk(n) => {
                drain(n);
                n.list_channels()
            }
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
            Merchant::Ldk(n) => {
                let description =
                    Bolt11InvoiceDescription::Direct(Description::new("bench".to_owned()).unwrap());
                n.bolt11_payment()
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
            Merchant::Ldk(n) => {
                let deadline = Instant::now() + WAIT;
                loop {
                    drain(n);
                    if n.payment(&id)
                        .is_some_and(|p| p.status == PaymentStatus::Succeeded)
                    {
                        return;
                    }
                    assert!(Instant::now() < deadline, "the merchant never got paid");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn stop(&self) {
        match self {
            Merchant::Till { node, handle, .. } => {
                node.stop().unwrap();
                handle.stop();
            }
            Merchant::Ldk(n) => {
                let _ = n.stop();
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

/// Waits for the customer's `PaymentSuccessful` of `hash`, handling other events; blocking, so
/// the latency is not rounded to a polling interval.
fn wait_success(customer: &TestNode, invoice: &Bolt11Invoice) {
    let hash = payment_id_of(invoice).0;
    loop {
        let event = customer.wait_next_event();
        customer.event_handled().unwrap();
        match event {
            Event::PaymentSuccessful { payment_hash, .. } if payment_hash.0 == hash => return,
            Event::PaymentFailed { reason, .. } => panic!("a payment failed: {reason:?}"),
            _ => {}
        }
    }
}

fn till_merchant(chain: &TestChain, url: &str, token: &str, linger: Duration) -> Merchant {
    // TILL_BENCH_KEEP keeps the till's files (its log, ldk-node's debug log) to study a run.
    let keep = std::env::var_os("TILL_BENCH_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        println!("(a) keeps its files in {}", dir.path().display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = Keys::generate();
    let log = Arc::new(Log::open(dir.path().join("till.redb")).unwrap());
    let remote = till_engine::remote(&keys, &BackupConfig::new(url, token)).unwrap();
    let replica = Replica::new(Arc::clone(&log), remote.clone(), device_id(&log).unwrap());
    let lease = runtime.block_on(replica.acquire()).unwrap();
    let config = ReplicatorConfig {
        linger,
        ..ReplicatorConfig::default()
    };
    let handle = Replicator::start(Arc::clone(&log), remote, lease, config);
    let store = LogStore::new(log, Arc::new(ReplicatorBarrier::new(handle.clone())));
    let listen = free_address();
    let mut config = NodeConfig::new(Network::Regtest, chain.url(), dir.path().join("ldk"));
    config.listen = vec![listen.clone()];
    config.background_sync = false;
    let node = Node::build(config, &keys, store).unwrap();
    node.start().unwrap();
    Merchant::Till {
        node,
        handle,
        listen,
        _dir: dir,
    }
}

fn ldk_merchant(chain: &TestChain, vss: Option<(&str, &str)>) -> Merchant {
    let storage = tempfile::tempdir().unwrap();
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
    Merchant::Ldk(TestNode::new(node, "merchant", listen, storage))
}

fn open(chain: &TestChain, customer: &TestNode, merchant: &Merchant) -> UserChannelId {
    let id = customer
        .open_channel(
            merchant.node_id(),
            merchant.listen(),
            CAPACITY_SATS,
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
    name: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    seq_pps: f64,
    burst_pps: f64,
    wire_up_per_payment: Option<f64>,
    values_up_per_payment: Option<f64>,
    uploads_per_payment: Option<f64>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn run(
    name: &'static str,
    chain: &TestChain,
    merchant: Merchant,
    proxy: Option<&CountingProxy>,
    payments: usize,
    burst: usize,
) -> Row {
    let customer = start_node(chain, "customer");
    fund_node(chain, &customer, CUSTOMER_FUNDING);
    merchant.fund(chain);
    open(chain, &customer, &merchant);
    // One warm-up payment (first route, first HTLC).
    let warm = merchant.invoice(PAYMENT_MSAT);
    customer.bolt11_payment().send(&warm, None).unwrap();
    wait_success(&customer, &warm);
    merchant.wait_received(&warm);

    let wire_before = proxy.map(CountingProxy::uploaded);
    let status_before = match &merchant {
        Merchant::Till { handle, .. } => Some(handle.status()),
        Merchant::Ldk(_) => None,
    };
    let mut latencies = Vec::with_capacity(payments);
    let started = Instant::now();
    for _ in 0..payments {
        let invoice = merchant.invoice(PAYMENT_MSAT);
        let t = Instant::now();
        customer.bolt11_payment().send(&invoice, None).unwrap();
        wait_success(&customer, &invoice);
        latencies.push(t.elapsed());
        merchant.wait_received(&invoice);
    }
    let seq_elapsed = started.elapsed();

    let invoices: Vec<_> = (0..burst).map(|_| merchant.invoice(PAYMENT_MSAT)).collect();
    let started = Instant::now();
    for invoice in &invoices {
        customer.bolt11_payment().send(invoice, None).unwrap();
    }
    for invoice in &invoices {
        wait_success(&customer, invoice);
    }
    let burst_elapsed = started.elapsed();
    for invoice in &invoices {
        merchant.wait_received(invoice);
    }
    // Let the last commitment dance and background persistence settle before counting bytes.
    std::thread::sleep(Duration::from_millis(500));
    let total = (payments + burst) as f64;
    let wire = wire_before.map(|b| (proxy.unwrap().uploaded() - b) as f64 / total);
    let (values, uploads) = match (&merchant, status_before) {
        (Merchant::Till { handle, .. }, Some(before)) => {
            let now = handle.status();
            (
                Some((now.bytes_uploaded - before.bytes_uploaded) as f64 / total),
                Some((now.uploads - before.uploads) as f64 / total),
            )
        }
        _ => (None, None),
    };
    merchant.stop();
    drop(customer);
    latencies.sort();
    Row {
        name,
        p50_ms: pct(&latencies, 0.5),
        p99_ms: pct(&latencies, 0.99),
        seq_pps: payments as f64 / seq_elapsed.as_secs_f64(),
        burst_pps: burst as f64 / burst_elapsed.as_secs_f64(),
        wire_up_per_payment: wire,
        values_up_per_payment: values,
        uploads_per_payment: uploads,
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let payments = env_count("TILL_BENCH_PAYMENTS", 40);
    let burst = env_count("TILL_BENCH_BURST", 20);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = StoreArg::DataDir(dir.path().join("server"));
    let bin = release_server();
    let till_token = add_user(&bin, &store, "till");
    let ldk_token = add_user(&bin, &store, "ldk");
    let server = TillServer::start(&bin, store, &[]);
    let till_proxy = CountingProxy::start(server.addr());
    let ldk_proxy = CountingProxy::start(server.addr());
    let chain = TestChain::start();

    let till_url = format!("http://{}/vss", till_proxy.addr());
    let till = |name, linger| {
        let merchant = till_merchant(&chain, &till_url, &till_token, linger);
        run(name, &chain, merchant, Some(&till_proxy), payments, burst)
    };
    let a = till(
        "(a) Till: log + remote barrier",
        ReplicatorConfig::default().linger,
    );
    // The same with every event shipped at once: what lingering saves.
    let a0 = till("(a0) Till, linger 0", Duration::ZERO);
    let b = run(
        "(b) ldk-node, SQLite",
        &chain,
        ldk_merchant(&chain, None),
        None,
        payments,
        burst,
    );
    let c = run(
        "(c) ldk-node, VSS on till-server",
        &chain,
        ldk_merchant(
            &chain,
            Some((&format!("http://{}/vss", ldk_proxy.addr()), &ldk_token)),
        ),
        Some(&ldk_proxy),
        payments,
        burst,
    );

    println!();
    println!(
        "engine_payments: customer (ldk-node, SQLite) pays the merchant {} msat; {payments} sequential + {burst} in a burst; loopback, release till-server (redb)",
        PAYMENT_MSAT
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
    for row in [&a, &a0, &b, &c] {
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
        "ratios: a/b p50 latency {:.2}x, a/b p99 latency {:.2}x; a/c throughput {:.2}x sequential, {:.2}x burst; a/c wire bytes per payment {:.2}x",
        a.p50_ms / b.p50_ms,
        a.p99_ms / b.p99_ms,
        a.seq_pps / c.seq_pps,
        a.burst_pps / c.burst_pps,
        a.wire_up_per_payment.unwrap() / c.wire_up_per_payment.unwrap()
    );
    println!(
        "lingering: a/a0 uploads per payment {:.2}x, p50 latency {:.2}x, sequential throughput {:.2}x",
        a.uploads_per_payment.unwrap() / a0.uploads_per_payment.unwrap(),
        a.p50_ms / a0.p50_ms,
        a.seq_pps / a0.seq_pps
    );
    println!(
        "(total bench time {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
