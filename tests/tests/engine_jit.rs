//! A just-in-time channel: a fresh merchant Till node (no channel, no on-chain funds) receives
//! its first payment through an LSP (a plain ldk-node configured as an LSPS2 provider) from a
//! customer who has a channel to the LSP. The LSP opens the merchant's channel on the fly.
//!
//! The merchant ships its log to a real `till-server` through the engine's `ReplicatorBarrier`,
//! and a journal records, in order, every seq the store reports committed and every
//! channel-state write the barrier released (with the server's durable seq at that moment). The
//! test checks that the new channel's first monitor write was durable on the server and released
//! to LDK before the till recorded the payment as received (which it does before reporting it),
//! and afterwards decodes the merchant's log with the audit views: the JIT payment, the channel
//! from its monitor, and the local chain against the server's head.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldk_node::Event;
use ldk_node::bitcoin::{Amount, Network};
use ldk_node::lightning::util::persist::CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE;
use ldk_node::liquidity::LSPS2ServiceConfig;
use till_engine::{
    Audit, BackupConfig, BackupState, BarrierError, BarrierFuture, DurabilityBarrier, Keys,
    LogStore, LspConfig, Node, NodeConfig, PAYMENTS, PaymentKind, Records, RemoteStatus,
    ReplicatorBarrier, TILL_NAMESPACE, device_id,
};
use till_log::{Key, Log};
use till_tests::ldk::{
    TestChain, TestNode, WAIT, free_address, fund_node, node_builder, open_channel, wait_event,
};
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::replica::{Replica, Replicator, ReplicatorConfig, ReplicatorHandle};

const JIT_AMOUNT_MSAT: u64 = 100_000_000;
const OPENING_FEE_PPM: u32 = 10_000;

/// What the merchant's store did, in order.
#[derive(Clone, Debug)]
enum Step {
    /// The store committed up to this seq and told the barrier.
    Committed(u64),
    /// A channel-state write was released by the barrier; the server's durable seq then.
    Passed { key: Key, seq: u64, durable: u64 },
}

type Journal = Arc<Mutex<Vec<Step>>>;

/// The engine's replicator barrier, journaling what passes through it.
struct Journaled {
    inner: ReplicatorBarrier,
    journal: Journal,
}

impl DurabilityBarrier for Journaled {
    fn notify(&self, seq: u64) {
        self.journal.lock().unwrap().push(Step::Committed(seq));
        self.inner.notify(seq);
    }

    fn wait_durable_blocking(&self, seq: u64) -> Result<(), BarrierError> {
        self.inner.wait_durable_blocking(seq)
    }

    fn wait_durable(&self, seq: u64) -> BarrierFuture {
        self.inner.wait_durable(seq)
    }

    fn state(&self) -> BackupState {
        self.inner.state()
    }
}

fn lsp_config() -> LSPS2ServiceConfig {
    LSPS2ServiceConfig {
        require_token: None,
        advertise_service: false,
        channel_opening_fee_ppm: OPENING_FEE_PPM,
        channel_over_provisioning_ppm: 100_000,
        min_channel_opening_fee_msat: 0,
        min_channel_lifetime: 100,
        max_client_to_self_delay: 1024,
        min_payment_size_msat: 0,
        max_payment_size_msat: 1_000_000_000,
        client_trusts_lsp: false,
    }
}

#[test]
fn a_fresh_till_receives_its_first_payment_through_a_jit_channel() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let bin = server_binary();
    let store = StoreArg::DataDir(dir.path().join("server"));
    let token = add_user(&bin, &store, "merchant");
    let server = TillServer::start(&bin, store, &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let chain = TestChain::start();
    // The LSP and the customer: plain ldk-node nodes, the customer with a channel to the LSP.
    let lsp_storage = tempfile::tempdir().unwrap();
    let lsp_listen = free_address();
    let mut builder = node_builder(&chain, lsp_storage.path(), &lsp_listen);
    builder.set_liquidity_provider_lsps2(lsp_config());
    let lsp = builder.build().expect("the LSP builds");
    lsp.start().expect("the LSP starts");
    let lsp = TestNode::new(lsp, "lsp", lsp_listen, lsp_storage);
    let customer = till_tests::ldk::start_node(&chain, "customer");
    fund_node(&chain, &lsp, Amount::from_sat(2_000_000));
    fund_node(&chain, &customer, Amount::from_sat(2_000_000));
    open_channel(&chain, &customer, &lsp, 1_000_000, 0);
    eprintln!(
        "customer -> LSP channel ready after {:?}",
        started.elapsed()
    );

    // The merchant: a fresh till shipping to till-server.
    let keys = Keys::generate();
    let log = Arc::new(Log::open(dir.path().join("till.redb")).unwrap());
    let remote = till_engine::remote(&keys, &BackupConfig::new(server.vss_url(), &token)).unwrap();
    let device = device_id(&log).unwrap();
    let replica = Replica::new(Arc::clone(&log), remote.clone(), device);
    let lease = runtime
        .block_on(replica.acquire())
        .expect("the till takes the lease");
    let handle: ReplicatorHandle = Replicator::start(
        Arc::clone(&log),
        remote.clone(),
        lease,
        ReplicatorConfig::default(),
    );
    let journal: Journal = Arc::default();
    let barrier = Journaled {
        inner: ReplicatorBarrier::new(handle.clone()),
        journal: Arc::clone(&journal),
    };
    let (seen, shipper) = (Arc::clone(&journal), handle.clone());
    let store = LogStore::new(Arc::clone(&log), Arc::new(barrier)).with_observer(move |p| {
        let durable = shipper.durable_seq();
        assert!(
            durable >= p.seq,
            "{} was released at seq {} but the server has only {durable}",
            p.key,
            p.seq
        );
        seen.lock().unwrap().push(Step::Passed {
            key: p.key.clone(),
            seq: p.seq,
            durable,
        });
    });
    let mut config = NodeConfig::new(Network::Regtest, chain.url(), dir.path().join("ldk"));
    config.listen = vec![free_address()];
    config.background_sync = false;
    config.lsp = Some(LspConfig {
        node_id: lsp.node_id(),
        address: lsp.listen.clone(),
        token: None,
    });
    let merchant = Node::build(config, &keys, store).expect("the till builds");
    let mut events = merchant.subscribe();
    merchant.start().expect("the till starts");
    assert!(merchant.channels().is_empty());
    assert_eq!(
        merchant.balances().onchain_sats,
        0,
        "a fresh till has nothing"
    );

    let invoice = merchant
        .create_jit_invoice(JIT_AMOUNT_MSAT, "first sale", 600, None)
        .expect("the till gets a JIT invoice from the LSP");
    customer
        .bolt11_payment()
        .send(&invoice.invoice, None)
        .expect("the customer pays");
    wait_event(&customer, "PaymentSuccessful", |e| {
        matches!(e, Event::PaymentSuccessful { .. }).then_some(())
    });
    let fee_msat = JIT_AMOUNT_MSAT * u64::from(OPENING_FEE_PPM) / 1_000_000;
    let deadline = Instant::now() + WAIT;
    let received = loop {
        match events.try_recv() {
            Ok(Event::PaymentReceived {
                payment_id,
                amount_msat,
                ..
            }) => break (payment_id.expect("an id"), amount_msat),
            Ok(other) => eprintln!("merchant: {other:?}"),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "the till never saw the payment");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("merchant events: {e}"),
        }
    };
    eprintln!("JIT payment received after {:?}", started.elapsed());
    assert_eq!(received.0, invoice.payment_id);
    assert_eq!(
        received.1,
        JIT_AMOUNT_MSAT - fee_msat,
        "the LSP kept its fee"
    );

    // The channel was opened on the fly, from the LSP.
    let channels = merchant.channels();
    assert_eq!(channels.len(), 1);
    let channel = &channels[0];
    assert_eq!(channel.counterparty_node_id, lsp.node_id());
    let funding = channel.funding_txo.expect("a funded channel");
    let monitor = Key::new(
        CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
        "",
        format!("{}_{}", funding.txid, funding.vout),
    );

    // Its first monitor write was durable on the server and released to LDK before the till
    // recorded the payment (the event loop records before it reports).
    let record = Key::new(TILL_NAMESPACE, PAYMENTS, hex(&invoice.payment_id.0));
    let recorded_seq = log.history(&record).unwrap()[0].seq;
    let first_monitor_seq = log.history(&monitor).unwrap()[0].seq;
    assert!(first_monitor_seq < recorded_seq);
    let journal = journal.lock().unwrap().clone();
    let passed_at = journal
        .iter()
        .position(|s| matches!(s, Step::Passed { key, seq, .. } if *key == monitor && *seq == first_monitor_seq))
        .expect("the new channel's monitor write passed the barrier");
    let recorded_at = journal
        .iter()
        .position(|s| matches!(s, Step::Committed(seq) if *seq >= recorded_seq))
        .expect("the payment record was committed");
    assert!(
        passed_at < recorded_at,
        "the monitor write (journal step {passed_at}) passed before the payment was recorded (step {recorded_at})"
    );
    let Step::Passed { durable, .. } = &journal[passed_at] else {
        unreachable!()
    };
    assert!(*durable >= first_monitor_seq);
    let passed = journal
        .iter()
        .filter(|s| matches!(s, Step::Passed { .. }))
        .count();
    eprintln!(
        "{passed} channel-state writes passed the barrier; the monitor at seq {first_monitor_seq} \
         (server durable to {durable}) before the payment record at seq {recorded_seq}"
    );

    // The audit views decode what happened from the log alone.
    let state = log.state().unwrap();
    let records = Records::new(&state);
    let payments = records.payments().unwrap();
    let jit = payments
        .iter()
        .find(|p| p.id == invoice.payment_id)
        .expect("ldk-node's payment record decodes");
    assert!(
        matches!(jit.kind, PaymentKind::Bolt11Jit { counterparty_skimmed_fee_msat: Some(fee), .. } if fee == fee_msat),
        "{jit:?}"
    );
    let recorded = records.recorded_payments().unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].inbound && recorded[0].succeeded);
    assert_eq!(recorded[0].amount_msat, Some(JIT_AMOUNT_MSAT - fee_msat));
    let views = records.channels();
    assert_eq!(views.len(), 1);
    let view = views[0]
        .monitor
        .as_ref()
        .unwrap_or_else(|| panic!("the monitor decodes: {:?}", views[0].undecodable));
    assert_eq!(view.funding_txo, funding);
    assert_eq!(view.channel_value_sats, channel.channel_value_sats);
    eprintln!("channel from its monitor: {:?}", views[0]);
    let wallet = records.wallet().unwrap();
    assert!(
        wallet.contains(&till_engine::WalletRecord::Network(Network::Regtest)),
        "{wallet:?}"
    );
    for summary in records.summary() {
        if let Some(d) = &summary.description {
            eprintln!("{} v{}: {d}", summary.key, summary.version);
        }
    }

    // The local chain against the server's head.
    merchant.stop().unwrap();
    let check = runtime
        .block_on(Audit::new(&log).verify_remote(&remote))
        .expect("the audit reads the server");
    match check.status {
        RemoteStatus::InSync { seq }
        | RemoteStatus::Ahead {
            remote_seq: seq, ..
        } => {
            assert!(seq >= recorded_seq, "{check:?}")
        }
        other => panic!("the server's head should match the local chain: {other:?}"),
    }
    handle.stop();
    eprintln!("done after {:?}", started.elapsed());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
