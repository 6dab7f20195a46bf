//! Two ldk-node nodes on the in-process devnet: channels, payments both ways, cooperative and
//! force closes with sweeps, and reorgs the nodes must notice. Balances are checked to the sat
//! against the fees the chain shows the nodes paid.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ldk_node::Event;
use ldk_node::bitcoin::{Amount, Txid};
use ldk_node::io::sqlite_store::SqliteStore;
use ldk_node::lightning::io;
use ldk_node::lightning::util::async_poll::AsyncResult;
use ldk_node::lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, KVStore, KVStoreSync,
};
use ldk_node::payment::{ConfirmationStatus, PaymentKind};
use till_tests::ldk::{
    TestChain, TestNode, all_on_chain, free_address, fund_node, funded_pair, invoice,
    lightning_balance_sats, mine_and_sync, mine_until_settled, node_builder, open_channel, pay,
    start_node, swept, sync, wait_event, wait_until,
};
use tokio::sync::watch;

const FUNDING: Amount = Amount::from_sat(1_000_000);
const CAPACITY_SATS: u64 = 400_000;

fn wait_closed(node: &TestNode) {
    wait_event(node, "ChannelClosed", |event| {
        matches!(event, Event::ChannelClosed { .. }).then_some(())
    });
}

#[test]
fn cooperative_close_after_payments_both_ways() {
    let pair = funded_pair(FUNDING);
    let (chain, alice, bob) = (&pair.chain, &pair.alice, &pair.bob);

    let (channel, funding) = open_channel(chain, alice, bob, CAPACITY_SATS, 0);
    // Each payment stays under the peer's default in-flight limit, 10% of the capacity.
    pay(alice, bob, 30_000_000);
    pay(bob, alice, 10_000_000);
    assert_eq!(lightning_balance_sats(bob), 20_000);

    alice
        .close_channel(&channel, bob.node_id())
        .expect("alice starts a cooperative close");
    wait_closed(alice);
    wait_closed(bob);
    let closing = chain.wait_for_spend(&funding);
    mine_and_sync(chain, 1, &[alice, bob]);
    assert!(chain.is_confirmed(&closing));
    mine_until_settled(
        chain,
        &[alice, bob],
        10,
        1,
        "the close to settle",
        all_on_chain,
    );

    // Bob funded nothing and paid no fee: he holds his funding plus the 20,000 sat net he received.
    let bob_sats = bob.list_balances().total_onchain_balance_sats;
    assert_eq!(bob_sats, FUNDING.to_sat() + 20_000);
    // Alice paid the funding and closing fees; together nothing is lost.
    let alice_sats = alice.list_balances().total_onchain_balance_sats;
    let fees = chain.fees_paid_above(pair.funded_height);
    assert!(fees > 0, "the funding and closing transactions pay fees");
    assert_eq!(
        alice_sats + bob_sats + fees,
        pair.funded_sats,
        "alice {alice_sats} + bob {bob_sats} + fees {fees} must equal what the faucet paid"
    );
}

#[test]
fn force_close_and_both_sweep_after_the_timelocks() {
    let pair = funded_pair(FUNDING);
    let (chain, alice, bob) = (&pair.chain, &pair.alice, &pair.bob);

    let (channel, funding) = open_channel(chain, alice, bob, CAPACITY_SATS, 0);
    pay(alice, bob, 35_000_000);
    pay(bob, alice, 5_000_000);

    alice
        .force_close_channel(&channel, bob.node_id(), None)
        .expect("alice force-closes");
    wait_closed(alice);
    wait_closed(bob);
    let commitment = chain.wait_for_spend(&funding);
    mine_and_sync(chain, 1, &[alice, bob]);
    assert!(
        chain.is_confirmed(&commitment),
        "the commitment transaction confirms"
    );

    // Alice's output waits out her to_self_delay (144 blocks by default); six blocks a round.
    mine_until_settled(
        chain,
        &[alice, bob],
        40,
        6,
        "both sweeps to settle",
        |node| swept(chain, node),
    );

    let alice_sats = alice.list_balances().total_onchain_balance_sats;
    let bob_sats = bob.list_balances().total_onchain_balance_sats;
    let fees = chain.fees_paid_above(pair.funded_height);
    // The commitment's anchor outputs (330 sat each) are left unspent when no fee bump needs them:
    // they leave the nodes' balances without being fees.
    let stranded: u64 = chain
        .unspent_outputs(&commitment)
        .iter()
        .map(|&(vout, value)| {
            assert_eq!(value, 330, "only anchors stay unswept, not output {vout}");
            value
        })
        .sum();
    assert!(
        bob_sats > FUNDING.to_sat() + 25_000,
        "bob swept his 30,000 sat: {bob_sats}"
    );
    assert_eq!(
        alice_sats + bob_sats + fees + stranded,
        pair.funded_sats,
        "alice {alice_sats} + bob {bob_sats} + fees {fees} + anchors {stranded} must equal what the faucet paid"
    );
}

fn onchain_status(node: &TestNode, txid: &Txid) -> ConfirmationStatus {
    node.list_payments()
        .into_iter()
        .find_map(|payment| match payment.kind {
            PaymentKind::Onchain { txid: t, status } if t == *txid => Some(status),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{} has no on-chain payment {txid}", node.name))
}

#[test]
fn a_reorg_unconfirms_transactions_for_both_nodes() {
    let chain = TestChain::start();
    let alice = start_node(&chain, "alice");
    let bob = start_node(&chain, "bob");
    let alice_funding = fund_node(&chain, &alice, FUNDING);
    let bob_funding = fund_node(&chain, &bob, FUNDING);
    // Bob's funding is in the tip block; alice's one below.
    let height = chain.height();
    sync(&[&alice, &bob]);
    assert!(matches!(
        onchain_status(&bob, &bob_funding),
        ConfirmationStatus::Confirmed { height: h, .. } if h == height
    ));

    // Replace the tip: bob's funding goes back to the mempool, alice's stays confirmed.
    let reorg = chain.reorg(1);
    assert_eq!(reorg.returned_to_mempool, vec![bob_funding]);
    sync(&[&alice, &bob]);
    assert_eq!(
        onchain_status(&bob, &bob_funding),
        ConfirmationStatus::Unconfirmed
    );
    assert!(matches!(
        onchain_status(&alice, &alice_funding),
        ConfirmationStatus::Confirmed { .. }
    ));
    assert_eq!(bob.list_balances().spendable_onchain_balance_sats, 0);

    // Mined again, it is confirmed in the new block.
    mine_and_sync(&chain, 1, &[&alice, &bob]);
    assert!(matches!(
        onchain_status(&bob, &bob_funding),
        ConfirmationStatus::Confirmed { height: h, .. } if h == height + 2
    ));

    // LDK's side: a channel funding with two confirmations loses them in a deeper reorg.
    alice
        .open_channel(bob.node_id(), bob.listen.clone(), CAPACITY_SATS, None, None)
        .expect("alice opens a channel");
    let funding = wait_event(&alice, "ChannelPending", |event| match event {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    wait_event(&bob, "ChannelPending", |event| {
        matches!(event, Event::ChannelPending { .. }).then_some(())
    });
    chain.wait_for_tx(&funding.txid);
    mine_and_sync(&chain, 2, &[&alice, &bob]);
    let confirmations = |node: &TestNode| {
        node.list_channels()
            .into_iter()
            .find(|c| c.funding_txo == Some(funding))
            .expect("the channel is listed")
            .confirmations
            .unwrap_or(0)
    };
    assert_eq!(confirmations(&alice), 2);
    assert_eq!(confirmations(&bob), 2);

    let reorg = chain.reorg(2);
    assert!(reorg.returned_to_mempool.contains(&funding.txid));
    sync(&[&alice, &bob]);
    assert_eq!(
        confirmations(&alice),
        0,
        "alice notices the funding left the chain"
    );
    assert_eq!(
        confirmations(&bob),
        0,
        "bob notices the funding left the chain"
    );

    // Confirmed again, the channel becomes ready as usual.
    mine_and_sync(&chain, 6, &[&alice, &bob]);
    wait_event(&alice, "ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
    wait_event(&bob, "ChannelReady", |event| {
        matches!(event, Event::ChannelReady { .. }).then_some(())
    });
}

/// The vendored ldk-node's forward timer (`vendor/ldk-node/src/forward_timer.rs`) draws its
/// delays from the background processor's law, so pending HTLCs are still processed at random
/// intervals of the same spread: median 50 ms, a log-normal spread of 0.5 (a quarter of the
/// delays below about 36 ms, a quarter above about 70 ms), none beyond 201 ms.
#[test]
fn the_forward_timer_keeps_the_background_processors_random_delays() {
    let mut ms: Vec<f64> = (0..20_000)
        .map(|_| ldk_node::forward_timer::next_delay().as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[(q * ms.len() as f64) as usize];
    let (q1, median, q3) = (at(0.25), at(0.5), at(0.75));
    assert!((47.0..53.5).contains(&median), "median {median} ms");
    assert!((33.0..39.0).contains(&q1), "first quartile {q1} ms");
    assert!((66.0..74.0).contains(&q3), "third quartile {q3} ms");
    assert!(ms[ms.len() - 1] < 201.0, "longest {} ms", ms[ms.len() - 1]);
    assert!(ms[0] > 0.0);
}

/// ldk-node's SQLite store, except that while `hold` is set the channel manager's asynchronous
/// writes (the background processor's) do not return until it is cleared.
struct HoldsManagerWrites {
    inner: SqliteStore,
    hold: watch::Sender<bool>,
    /// Manager writes waiting on the hold now.
    waiting: Arc<AtomicUsize>,
}

impl HoldsManagerWrites {
    fn new(dir: &Path) -> Self {
        Self {
            inner: SqliteStore::new(dir.to_path_buf(), None, None).expect("a SQLite store"),
            hold: watch::channel(false).0,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set_hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

impl KVStoreSync for HoldsManagerWrites {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> Result<Vec<u8>, io::Error> {
        KVStoreSync::read(&self.inner, primary, secondary, key)
    }
    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        KVStoreSync::write(&self.inner, primary, secondary, key, buf)
    }
    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        lazy: bool,
    ) -> Result<(), io::Error> {
        KVStoreSync::remove(&self.inner, primary, secondary, key, lazy)
    }
    fn list(&self, primary: &str, secondary: &str) -> Result<Vec<String>, io::Error> {
        KVStoreSync::list(&self.inner, primary, secondary)
    }
}

impl KVStore for HoldsManagerWrites {
    fn read(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
    ) -> AsyncResult<'static, Vec<u8>, io::Error> {
        KVStore::read(&self.inner, primary, secondary, key)
    }
    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> AsyncResult<'static, (), io::Error> {
        let write = KVStore::write(&self.inner, primary, secondary, key, buf);
        let manager = primary == CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE
            && secondary == CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE
            && key == CHANNEL_MANAGER_PERSISTENCE_KEY;
        if !manager || !*self.hold.borrow() {
            return write;
        }
        let mut hold = self.hold.subscribe();
        let waiting = Arc::clone(&self.waiting);
        waiting.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let released = hold.wait_for(|on| !*on).await.map(|_| ());
            waiting.fetch_sub(1, Ordering::SeqCst);
            released.map_err(|_| io::Error::new(io::ErrorKind::Other, "the hold was dropped"))?;
            write.await
        })
    }
    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        lazy: bool,
    ) -> AsyncResult<'static, (), io::Error> {
        KVStore::remove(&self.inner, primary, secondary, key, lazy)
    }
    fn list(&self, primary: &str, secondary: &str) -> AsyncResult<'static, Vec<String>, io::Error> {
        KVStore::list(&self.inner, primary, secondary)
    }
}

/// The vendored ldk-node's forward timer hands out the events its processing made at once: a
/// received payment is claimed, and the customer's payment succeeds, while the merchant's
/// background processor is still waiting for its write of the manager to return. Without it the
/// claim waited for that write (a whole store write on every received payment); here the write is
/// held until the payment has succeeded, so the payment could not succeed at all.
#[test]
fn a_received_payment_is_claimed_while_the_background_processor_persists_the_manager() {
    let chain = TestChain::start();
    let alice = start_node(&chain, "alice");
    let storage = tempfile::tempdir().expect("a temporary directory");
    let listen = free_address();
    let store = Arc::new(HoldsManagerWrites::new(storage.path()));
    let node = node_builder(&chain, storage.path(), &listen)
        .build_with_store(Arc::clone(&store) as _)
        .expect("bob builds on the holding store");
    node.start().expect("bob starts");
    let bob = TestNode::new(node, "bob", listen, storage);
    fund_node(&chain, &alice, FUNDING);
    open_channel(&chain, &alice, &bob, CAPACITY_SATS, 0);
    pay(&alice, &bob, 10_000_000);
    assert_eq!(lightning_balance_sats(&bob), 10_000);

    // A new block changes bob's manager; his background processor writes it and is held there.
    store.set_hold(true);
    mine_and_sync(&chain, 1, &[&alice, &bob]);
    wait_until(
        "bob's background processor to wait on its manager write",
        || store.waiting() == 1,
    );

    let invoice = invoice(&bob, 20_000_000, "held", 3600);
    alice
        .bolt11_payment()
        .send(&invoice, None)
        .expect("alice pays");
    wait_event(&alice, "PaymentSuccessful", |event| {
        matches!(event, Event::PaymentSuccessful { .. }).then_some(())
    });
    assert_eq!(
        store.waiting(),
        1,
        "the payment succeeded while bob's manager write was still held"
    );

    store.set_hold(false);
    wait_until("bob's manager write to return", || store.waiting() == 0);
    let received = wait_event(&bob, "PaymentReceived", |event| match event {
        Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
        _ => None,
    });
    assert_eq!(received, 20_000_000);
    assert_eq!(lightning_balance_sats(&bob), 30_000);
    pay(&alice, &bob, 5_000_000);
    assert_eq!(lightning_balance_sats(&bob), 35_000);
}
