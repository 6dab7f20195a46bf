//! A merchant's Till node (till-engine: ldk-node on a real redb event log) and a customer's plain
//! ldk-node node on the in-process devnet: a channel, 20 payments each way, a refund recorded
//! against the original payment, balances to the sat, and a restart from the same log file that
//! keeps the channel and the balances. Every channel-state write passes a recording barrier, and
//! the test checks that none reached LDK without it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldk_node::Event;
use ldk_node::bitcoin::{Amount, Network};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
};
use till_engine::{
    BackupState, BarrierError, BarrierFuture, BarrierPassed, DurabilityBarrier, Error, Keys,
    LogStore, Node, NodeConfig, PaymentDirection, PaymentFilter, PaymentKind, PaymentStatus,
    TILL_NAMESPACE,
};
use till_log::{Key, Log, Op};
use till_tests::ldk::{
    CHANNEL_READY_CONFIRMATIONS, TestChain, TestNode, WAIT, free_address, fund_node, start_node,
    wait_event, wait_until,
};

const CUSTOMER_FUNDING: Amount = Amount::from_sat(1_000_000);
const MERCHANT_FUNDING: Amount = Amount::from_sat(100_000);
const CAPACITY_SATS: u64 = 500_000;
const ROUNDS: usize = 20;
const SALE_SATS: u64 = 10_000;
const CHANGE_SATS: u64 = 3_000;
const REFUND_SATS: u64 = 2_500;

/// A barrier for a till without a remote that checks and records: every seq waited for must
/// already be committed locally (the store notified it first), and every seq is recorded.
#[derive(Default)]
struct Recording {
    notified: Mutex<u64>,
    waited: Mutex<Vec<u64>>,
}

impl Recording {
    fn wait(&self, seq: u64) -> Result<(), BarrierError> {
        let notified = *self.notified.lock().unwrap();
        assert!(
            seq <= notified,
            "waited for seq {seq} before it was committed (head {notified})"
        );
        self.waited.lock().unwrap().push(seq);
        Ok(())
    }
}

struct RecordingBarrier(Arc<Recording>);

impl DurabilityBarrier for RecordingBarrier {
    fn notify(&self, seq: u64) {
        let mut notified = self.0.notified.lock().unwrap();
        *notified = (*notified).max(seq);
    }

    fn wait_durable_blocking(&self, seq: u64) -> Result<(), BarrierError> {
        self.0.wait(seq)
    }

    fn wait_durable(&self, seq: u64) -> BarrierFuture {
        let result = self.0.wait(seq);
        Box::pin(std::future::ready(result))
    }

    fn state(&self) -> BackupState {
        BackupState::Ok
    }
}

/// The merchant's till and what it needs to be rebuilt from the same log file.
struct Merchant {
    node: Node,
    keys: Keys,
    listen: SocketAddress,
    log_path: PathBuf,
    storage: PathBuf,
    passed: Arc<Mutex<Vec<BarrierPassed>>>,
    events: tokio::sync::broadcast::Receiver<Event>,
}

fn build_merchant(
    chain: &TestChain,
    keys: Keys,
    listen: SocketAddress,
    dir: &Path,
    passed: Arc<Mutex<Vec<BarrierPassed>>>,
) -> Merchant {
    build_merchant_with(chain, keys, listen, dir, passed, |_| {})
}

/// [`build_merchant`], with `tweak` changing the node's config last.
fn build_merchant_with(
    chain: &TestChain,
    keys: Keys,
    listen: SocketAddress,
    dir: &Path,
    passed: Arc<Mutex<Vec<BarrierPassed>>>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Merchant {
    let log_path = dir.join("till.redb");
    let storage = dir.join("ldk");
    let log = Arc::new(Log::open(&log_path).expect("the merchant's log opens"));
    let seen = Arc::clone(&passed);
    let store = LogStore::new(log, Arc::new(RecordingBarrier(Arc::default())))
        .with_observer(move |p| seen.lock().unwrap().push(p.clone()));
    let mut config = NodeConfig::new(Network::Regtest, chain.url(), storage.clone());
    config.listen = vec![listen.clone()];
    config.alias = Some("till test merchant".to_owned());
    config.background_sync = false;
    tweak(&mut config);
    let node = Node::build(config, &keys, store).expect("the merchant's node builds");
    let events = node.subscribe();
    node.start().expect("the merchant's node starts");
    Merchant {
        node,
        keys,
        listen,
        log_path,
        storage,
        passed,
        events,
    }
}

impl Merchant {
    /// Waits for the till's event loop to pass on an event `matches` accepts.
    fn wait_event<T>(&mut self, what: &str, mut matches: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    if let Some(found) = matches(&event) {
                        return found;
                    }
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("merchant events: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the merchant to see {what}"
            );
        }
    }

    fn lightning_sats(&self) -> u64 {
        self.node.balances().lightning_sats
    }
}

fn can_send(channels: &[ldk_node::ChannelDetails], amount_msat: u64) -> bool {
    channels
        .iter()
        .any(|c| c.is_usable && c.next_outbound_htlc_limit_msat >= amount_msat)
}

/// The customer pays the merchant's invoice; returns the merchant's payment id.
fn customer_pays(
    merchant: &Merchant,
    customer: &TestNode,
    sats: u64,
) -> ldk_node::lightning::ln::channelmanager::PaymentId {
    let invoice = merchant
        .node
        .create_invoice(sats * 1000, "coffee", 600)
        .expect("the till creates an invoice");
    wait_until("the customer to be able to pay", || {
        can_send(&customer.list_channels(), sats * 1000)
    });
    customer
        .bolt11_payment()
        .send(&invoice.invoice, None)
        .expect("the customer pays");
    wait_event(customer, "PaymentSuccessful", |event| {
        matches!(event, Event::PaymentSuccessful { .. }).then_some(())
    });
    let paid = merchant
        .node
        .wait_payment(&invoice.payment_id, WAIT)
        .expect("the till sees the payment settle");
    assert_eq!(paid.status, PaymentStatus::Succeeded);
    assert_eq!(paid.amount_msat, Some(sats * 1000));
    invoice.payment_id
}

fn customer_invoice(customer: &TestNode, sats: u64) -> ldk_node::lightning_invoice::Bolt11Invoice {
    till_tests::ldk::invoice(customer, sats * 1000, "change", 600)
}

/// The merchant pays the customer's invoice.
fn merchant_pays(merchant: &Merchant, customer: &TestNode, sats: u64) {
    let invoice = customer_invoice(customer, sats);
    wait_until("the merchant to be able to pay", || {
        can_send(&merchant.node.channels(), sats * 1000)
    });
    let id = merchant.node.pay(&invoice, None).expect("the till pays");
    let paid = merchant
        .node
        .wait_payment(&id, WAIT)
        .expect("the till's payment settles");
    assert_eq!(paid.status, PaymentStatus::Succeeded, "{paid:?}");
    let received = wait_event(customer, "PaymentReceived", |event| match event {
        Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
        _ => None,
    });
    assert_eq!(received, sats * 1000);
}

fn is_channel_state(key: &Key) -> bool {
    key.namespace == CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE
        || key.namespace == CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE
        || (key.namespace.is_empty() && key.key == CHANNEL_MANAGER_PERSISTENCE_KEY)
}

/// Every channel-state write in the log passed the barrier with its own seq before it returned
/// to LDK. A write still in flight (committed, its future not yet resolved) has not returned, so
/// the check waits for it. Returns how many channel-state writes there were.
fn check_every_channel_state_write_waited(merchant: &Merchant) -> usize {
    let log = merchant.node.log();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (writes, missing) = loop {
        let passed = merchant.passed.lock().unwrap().clone();
        let waited: HashSet<u64> = passed.iter().map(|p| p.seq).collect();
        for p in &passed {
            assert!(
                is_channel_state(&p.key),
                "{} waited but is not channel state",
                p.key
            );
            if !p.removed {
                let event = log.event(p.seq).unwrap().expect("the waited seq exists");
                assert_eq!(event.key, p.key, "seq {} is the write's own event", p.seq);
            }
        }
        let head = log.head().unwrap().seq;
        let mut writes = 0;
        let mut missing = Vec::new();
        for event in log.events(1, head, usize::MAX).unwrap() {
            if is_channel_state(&event.key) && matches!(event.op, Op::Put(_)) {
                writes += 1;
                if !waited.contains(&event.seq) {
                    missing.push(format!("{} at seq {}", event.key, event.seq));
                }
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break (writes, missing);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        missing.is_empty(),
        "channel-state writes that never passed the barrier: {missing:?}"
    );
    writes
}

fn open_channel_from_customer(chain: &TestChain, merchant: &mut Merchant, customer: &TestNode) {
    let merchant_id = merchant.node.info().node_id;
    customer
        .open_channel(
            merchant_id,
            merchant.listen.clone(),
            CAPACITY_SATS,
            None,
            None,
        )
        .expect("the customer opens a channel");
    let funding = wait_event(customer, "ChannelPending", |event| match event {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    merchant.wait_event("ChannelPending", |event| {
        matches!(event, Event::ChannelPending { .. }).then_some(())
    });
    chain.wait_for_tx(&funding.txid);
    chain.mine(CHANNEL_READY_CONFIRMATIONS);
    customer.sync_wallets().unwrap();
    merchant.node.sync().unwrap();
    wait_event(customer, "ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
    merchant.wait_event("ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
}

#[test]
fn a_till_takes_payments_refunds_and_restarts_from_its_log() {
    let started = Instant::now();
    let chain = TestChain::start();
    let customer = start_node(&chain, "customer");
    fund_node(&chain, &customer, CUSTOMER_FUNDING);

    let dir = tempfile::tempdir().unwrap();
    let passed = Arc::new(Mutex::new(Vec::new()));
    let mut merchant = build_merchant(
        &chain,
        Keys::generate(),
        free_address(),
        dir.path(),
        Arc::clone(&passed),
    );
    // ldk-node accepts an inbound anchor channel only with an on-chain reserve for fee bumps.
    let address = merchant.node.new_address().unwrap();
    chain.faucet(&address, MERCHANT_FUNDING);
    chain.mine(1);
    merchant.node.sync().unwrap();
    wait_until("the merchant to see its funding", || {
        merchant.node.balances().onchain_spendable_sats >= MERCHANT_FUNDING.to_sat()
    });

    open_channel_from_customer(&chain, &mut merchant, &customer);
    eprintln!("channel ready after {:?}", started.elapsed());

    // 20 sales and 20 payouts, interleaved.
    let mut sales = Vec::new();
    for _ in 0..ROUNDS {
        sales.push(customer_pays(&merchant, &customer, SALE_SATS));
        merchant_pays(&merchant, &customer, CHANGE_SATS);
    }
    eprintln!("{} payments after {:?}", 2 * ROUNDS, started.elapsed());
    let net_sats = ROUNDS as u64 * (SALE_SATS - CHANGE_SATS);
    assert_eq!(merchant.lightning_sats(), net_sats);

    // A refund of part of the first sale, recorded against it.
    let first = sales[0];
    let refund_invoice = customer_invoice(&customer, REFUND_SATS);
    let refund_id = merchant
        .node
        .refund(&first, &refund_invoice, None)
        .expect("the till refunds");
    assert_eq!(
        merchant.node.wait_payment(&refund_id, WAIT).unwrap().status,
        PaymentStatus::Succeeded
    );
    wait_event(&customer, "the refund", |event| {
        matches!(event, Event::PaymentReceived { .. }).then_some(())
    });
    let refunds = merchant.node.refunds_of(&first).unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].payment_id, refund_id);
    assert_eq!(refunds[0].amount_msat, REFUND_SATS * 1000);
    assert_eq!(refunds[0].status, PaymentStatus::Succeeded);
    assert!(merchant.node.refunds_of(&sales[1]).unwrap().is_empty());
    // What is left of the sale can be refunded, not more; a payout is not refundable.
    let too_much = customer_invoice(&customer, SALE_SATS - REFUND_SATS + 1);
    match merchant.node.refund(&first, &too_much, None) {
        Err(Error::RefundTooLarge { remaining_msat, .. }) => {
            assert_eq!(remaining_msat, (SALE_SATS - REFUND_SATS) * 1000)
        }
        other => panic!("expected RefundTooLarge, got {other:?}"),
    }
    assert!(matches!(
        merchant.node.refund(&refund_id, &too_much, None),
        Err(Error::NotRefundable { .. })
    ));
    assert_eq!(
        merchant.node.refunds().unwrap().len(),
        1,
        "refused refunds leave no record"
    );

    // Balances add up to the sat: the merchant did not fund the channel, so it pays no
    // commitment fees; the customer's side is the rest minus its fees.
    let merchant_sats = net_sats - REFUND_SATS;
    assert_eq!(merchant.lightning_sats(), merchant_sats);
    let customer_sats = customer.list_balances().total_lightning_balance_sats;
    assert!(
        customer_sats <= CAPACITY_SATS - merchant_sats
            && customer_sats > CAPACITY_SATS - merchant_sats - 10_000,
        "the customer holds the rest of the channel minus fees: {customer_sats}"
    );

    // Payments listed, filtered.
    let received = merchant.node.payments(PaymentFilter {
        direction: Some(PaymentDirection::Inbound),
        status: Some(PaymentStatus::Succeeded),
    });
    // The faucet's on-chain payment to the merchant is inbound and succeeded too.
    assert_eq!(received.len(), ROUNDS + 1);
    let received: Vec<_> = received
        .into_iter()
        .filter(|p| matches!(p.kind, PaymentKind::Bolt11 { .. }))
        .collect();
    assert_eq!(received.len(), ROUNDS);
    let received_msat: u64 = received.iter().filter_map(|p| p.amount_msat).sum();
    assert_eq!(received_msat, ROUNDS as u64 * SALE_SATS * 1000);
    let sent = merchant.node.payments(PaymentFilter {
        direction: Some(PaymentDirection::Outbound),
        ..PaymentFilter::default()
    });
    assert_eq!(sent.len(), ROUNDS + 1);
    assert!(sent.iter().all(|p| p.status == PaymentStatus::Succeeded));
    // The event loop recorded each outcome in Till's own namespace.
    wait_until("the event loop to record every payment", || {
        merchant
            .node
            .log()
            .list(TILL_NAMESPACE, "payments")
            .unwrap()
            .len()
            == 2 * ROUNDS + 1
    });

    let channel_state_writes = check_every_channel_state_write_waited(&merchant);
    assert!(
        channel_state_writes > 4 * ROUNDS,
        "every payment updates the monitor several times: {channel_state_writes}"
    );
    let info = merchant.node.info();
    assert_eq!(info.channels, 1);
    assert_eq!(info.backup, BackupState::Ok);
    let channel = merchant.node.channels()[0].clone();

    // Restart from the same log file: stop, drop everything holding the log, reopen.
    merchant.node.stop().expect("the till stops");
    let Merchant {
        node,
        keys,
        listen,
        log_path,
        storage,
        ..
    } = merchant;
    let device = node.info().device_id;
    drop(node);
    assert!(log_path.exists() && storage.exists());
    Log::open(&log_path)
        .expect("nothing holds the log after the node is dropped")
        .verify()
        .expect("the log's hash chain verifies");
    let merchant = build_merchant(&chain, keys, listen, dir.path(), passed);
    assert_eq!(
        merchant.node.info().device_id,
        device,
        "the device id is kept"
    );
    let channels = merchant.node.channels();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].channel_id, channel.channel_id);
    assert_eq!(channels[0].user_channel_id, channel.user_channel_id);
    assert_eq!(merchant.lightning_sats(), merchant_sats);
    assert_eq!(
        merchant.node.payments(PaymentFilter::default()).len(),
        2 * ROUNDS + 2,
        "the lightning payments, the refund and the on-chain funding are all kept"
    );
    assert_eq!(merchant.node.refunds_of(&first).unwrap().len(), 1);

    // The customer reconnects, and the channel works both ways again.
    customer
        .connect(merchant.node.info().node_id, merchant.listen.clone(), true)
        .expect("the customer reconnects");
    wait_until("the channel to be usable on both sides", || {
        merchant.node.channels().iter().all(|c| c.is_usable)
            && customer.list_channels().iter().all(|c| c.is_usable)
    });
    customer_pays(&merchant, &customer, SALE_SATS);
    merchant_pays(&merchant, &customer, CHANGE_SATS);
    assert_eq!(
        merchant.lightning_sats(),
        merchant_sats + SALE_SATS - CHANGE_SATS
    );
    check_every_channel_state_write_waited(&merchant);
    merchant.node.stop().unwrap();
    eprintln!("done after {:?}", started.elapsed());
}

#[test]
fn the_mnemonic_decides_the_node_and_commands_refuse_bad_input() {
    let chain = TestChain::start();
    let phrase = Keys::generate().phrase();
    let first_dir = tempfile::tempdir().unwrap();
    let first = build_merchant(
        &chain,
        Keys::from_phrase(&phrase, None).unwrap(),
        free_address(),
        first_dir.path(),
        Arc::default(),
    );
    let info = first.node.info();
    assert!(info.running);
    assert_eq!(info.network, Network::Regtest);
    assert_eq!(info.alias.as_deref(), Some("till test merchant"));
    assert_eq!(info.listening, vec![first.listen.clone()]);
    assert_eq!(info.backup, BackupState::Ok);

    // Invoices carry what was asked; their id is the payment the till will wait for.
    let invoice = first
        .node
        .create_invoice(42_000, "two coffees", 300)
        .unwrap();
    assert_eq!(invoice.invoice.amount_milli_satoshis(), Some(42_000));
    assert_eq!(invoice.invoice.expiry_time(), Duration::from_secs(300));
    let parsed = till_engine::parse_invoice(&invoice.invoice.to_string()).unwrap();
    assert_eq!(till_engine::payment_id_of(&parsed), invoice.payment_id);
    let pending = first
        .node
        .payment(&invoice.payment_id)
        .expect("an inbound record");
    assert_eq!(pending.status, PaymentStatus::Pending);
    assert!(matches!(
        first
            .node
            .wait_payment(&invoice.payment_id, Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));

    assert!(matches!(
        till_engine::parse_invoice("lnbc1nonsense"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        first.node.pay(&parsed, Some(1)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        first.node.refund(&invoice.payment_id, &parsed, None),
        Err(Error::NotRefundable { .. })
    ));
    let unknown = ldk_node::lightning::ln::channelmanager::PaymentId([1; 32]);
    assert!(matches!(
        first.node.refund(&unknown, &parsed, None),
        Err(Error::PaymentNotFound(_))
    ));
    assert!(first.node.refunds().unwrap().is_empty());
    assert_eq!(first.node.balances(), till_engine::Balances::default());

    // The same mnemonic on a fresh log is the same Lightning node with the same wallet, on a new
    // device id; another passphrase is another node.
    let second_dir = tempfile::tempdir().unwrap();
    let second = build_merchant(
        &chain,
        Keys::from_phrase(&phrase, None).unwrap(),
        free_address(),
        second_dir.path(),
        Arc::default(),
    );
    assert_eq!(second.node.info().node_id, info.node_id);
    assert_ne!(second.node.info().device_id, info.device_id);
    // This one keeps more free disk than any disk has: it refuses new sales, saying why.
    let third_dir = tempfile::tempdir().unwrap();
    let third = build_merchant_with(
        &chain,
        Keys::from_phrase(&phrase, Some("another passphrase")).unwrap(),
        free_address(),
        third_dir.path(),
        Arc::default(),
        |config| config.min_free_disk = u64::MAX,
    );
    assert_ne!(third.node.info().node_id, info.node_id);
    let free = info.disk_free.expect("the log is a file on a disk");
    assert!(free > 0);
    let refused = third
        .node
        .create_invoice(42_000, "two coffees", 300)
        .unwrap_err();
    match &refused {
        Error::DiskNearlyFull { free, floor } => {
            assert!(*free > 0);
            assert_eq!(*floor, u64::MAX);
        }
        other => panic!("a sale on a disk below the floor must be refused as such, got {other}"),
    }
    let text = refused.to_string();
    assert!(
        text.starts_with("this device's disk has ")
            && text.contains("new sales are refused until space is freed"),
        "{text}"
    );
    assert!(matches!(
        third
            .node
            .create_jit_invoice(42_000, "two coffees", 300, None),
        Err(Error::DiskNearlyFull { .. })
    ));

    for merchant in [&first, &second, &third] {
        merchant.node.stop().unwrap();
        assert!(matches!(merchant.node.stop(), Err(Error::NotRunning)));
    }
}
