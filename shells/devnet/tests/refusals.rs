//! The mempool refuses invalid transactions with a 400 and a reason that says what to do.

mod common;

use bitcoin::{Amount, ScriptBuf, Sequence, absolute, transaction};
use common::{Key, broadcast, fund, get, mine_coinbase_to};
use till_devnet::Devnet;

const FEE: Amount = Amount::from_sat(500);

async fn devnet() -> Devnet {
    Devnet::start("127.0.0.1:0").await.unwrap()
}

fn assert_refused(answer: &common::Answer, reason: &str) {
    assert_eq!(
        answer.status,
        400,
        "expected a refusal, got: {}",
        answer.text()
    );
    assert!(
        answer.text().contains(reason),
        "refusal {:?} does not mention {reason:?}",
        answer.text()
    );
}

#[tokio::test]
async fn a_valid_spend_is_accepted_and_mined() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let bob = Key::new("bob");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;
    // Spending an unconfirmed output is fine.
    let tx = alice.spend(&coin, bob.script(), FEE);
    let answer = broadcast(&devnet, &tx).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), tx.compute_txid().to_string());
    // Broadcasting it again is harmless.
    assert_eq!(broadcast(&devnet, &tx).await.status, 200);
    devnet.mine(1, None).unwrap();
    let status = get(&devnet, &format!("/tx/{}/status", tx.compute_txid()))
        .await
        .json();
    assert_eq!(status["confirmed"], true);
    // Once confirmed, it cannot be broadcast again.
    assert_refused(&broadcast(&devnet, &tx).await, "already confirmed");
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let mallory = Key::new("mallory");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;
    devnet.mine(1, None).unwrap();

    // Mallory signs for Alice's coin with her own key.
    let forged = mallory.spend(&coin, mallory.script(), FEE);
    assert_refused(&broadcast(&devnet, &forged).await, "bad signature");

    // Alice's valid signature over a different amount than the one broadcast.
    let mut tampered = alice.spend(&coin, mallory.script(), FEE);
    tampered.output[0].value -= Amount::from_sat(1);
    assert_refused(&broadcast(&devnet, &tampered).await, "bad signature");

    // The untampered transaction goes through, so the refusals were about the signatures.
    let honest = alice.spend(&coin, mallory.script(), FEE);
    assert_eq!(broadcast(&devnet, &honest).await.status, 200);
}

#[tokio::test]
async fn a_double_spend_is_refused_unless_it_pays_more() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let bob = Key::new("bob");
    let carol = Key::new("carol");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;
    devnet.mine(1, None).unwrap();

    let to_bob = alice.spend(&coin, bob.script(), FEE);
    assert_eq!(broadcast(&devnet, &to_bob).await.status, 200);

    // Same fee: refused.
    let to_carol = alice.spend(&coin, carol.script(), FEE);
    assert_refused(&broadcast(&devnet, &to_carol).await, "double spend");

    // Higher fee: replaces the first, which leaves the mempool.
    let to_carol = alice.spend(&coin, carol.script(), FEE * 2);
    let answer = broadcast(&devnet, &to_carol).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        get(&devnet, &format!("/tx/{}", to_bob.compute_txid()))
            .await
            .status,
        404
    );

    // Once confirmed, no fee can replace it.
    devnet.mine(1, None).unwrap();
    let to_bob = alice.spend(&coin, bob.script(), FEE * 10);
    let answer = broadcast(&devnet, &to_bob).await;
    assert_refused(&answer, "double spend");
    assert!(
        answer.text().contains("confirmed in block"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn an_immature_coinbase_spend_is_refused() {
    let devnet = devnet().await;
    let miner = Key::new("miner");
    let coin = mine_coinbase_to(&devnet, &miner).await;
    let spend = miner.spend(&coin, miner.script(), FEE);
    let answer = broadcast(&devnet, &spend).await;
    assert_refused(&answer, "immature coinbase");
    assert!(
        answer.text().contains("mine 99 more block(s)"),
        "{}",
        answer.text()
    );

    // One block short is still refused; at maturity it is accepted.
    devnet.mine(98, None).unwrap();
    assert_refused(&broadcast(&devnet, &spend).await, "mine 1 more block(s)");
    devnet.mine(1, None).unwrap();
    let answer = broadcast(&devnet, &spend).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_non_final_timelock_is_refused() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;
    devnet.mine(1, None).unwrap();
    let next = devnet.height() + 1;

    // Absolute height lock three blocks ahead.
    let locked = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.lock_time = absolute::LockTime::from_height(next + 2).unwrap();
        tx.input[0].sequence = Sequence::ENABLE_LOCKTIME_NO_RBF;
    });
    let answer = broadcast(&devnet, &locked).await;
    assert_refused(&answer, "non-final");
    assert!(
        answer.text().contains("mine 3 more block(s)"),
        "{}",
        answer.text()
    );

    // Absolute time lock far in the future.
    let time_locked = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.lock_time = absolute::LockTime::from_time(2_000_000_000).unwrap();
        tx.input[0].sequence = Sequence::ENABLE_LOCKTIME_NO_RBF;
    });
    assert_refused(
        &broadcast(&devnet, &time_locked).await,
        "non-final: locktime is time",
    );

    // A relative (BIP68) lock of 5 blocks on a coin with one confirmation.
    let relative = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.input[0].sequence = Sequence::from_height(5);
    });
    assert_refused(&broadcast(&devnet, &relative).await, "relative timelock");
    // BIP68 only applies from version 2.
    let version_one = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.version = transaction::Version::ONE;
        tx.input[0].sequence = Sequence::from_height(5);
    });
    assert_eq!(broadcast(&devnet, &version_one).await.status, 200);
}

#[tokio::test]
async fn timelocks_are_accepted_once_met() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;
    devnet.mine(1, None).unwrap();
    let next = devnet.height() + 1;
    let locked = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.lock_time = absolute::LockTime::from_height(next + 2).unwrap();
        tx.input[0].sequence = Sequence::from_height(5);
    });
    assert_refused(&broadcast(&devnet, &locked).await, "non-final");
    devnet.mine(3, None).unwrap();
    // The absolute lock is met; the relative one (5 blocks, 4 confirmations so far) is not.
    assert_refused(&broadcast(&devnet, &locked).await, "relative timelock");
    devnet.mine(1, None).unwrap();
    let answer = broadcast(&devnet, &locked).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn other_refusals_name_their_reason() {
    let devnet = devnet().await;
    let alice = Key::new("alice");
    let coin = fund(&devnet, &alice, Amount::from_sat(100_000)).await;

    // More out than in.
    let greedy = alice.spend_with(&coin, alice.script(), FEE, |tx| {
        tx.output[0].value = Amount::from_sat(100_001);
    });
    assert_refused(&broadcast(&devnet, &greedy).await, "exceed inputs");

    // An input that does not exist.
    let mut missing = coin.clone();
    missing.outpoint.vout = 7;
    assert_refused(
        &broadcast(&devnet, &alice.spend(&missing, alice.script(), FEE)).await,
        "does not exist",
    );

    // Not a transaction.
    assert_refused(
        &common::post(&devnet, "/tx", "zz").await,
        "not a hex-encoded transaction",
    );
    assert_refused(
        &common::post(&devnet, "/tx", "0200").await,
        "not a hex-encoded transaction",
    );

    // Taproot spends cannot be verified by Bitcoin Core 25's library, so they are refused.
    let taproot =
        ScriptBuf::new_p2tr_tweaked(bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(
            alice.pubkey.0.x_only_public_key().0,
        ));
    let taproot_address =
        bitcoin::Address::from_script(&taproot, bitcoin::Network::Regtest).unwrap();
    let txid = devnet
        .faucet(&taproot_address, Amount::from_sat(10_000))
        .unwrap();
    let tx = common::raw_tx(&devnet, &txid).await;
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == taproot)
        .unwrap();
    let taproot_coin = common::Coin {
        outpoint: bitcoin::OutPoint {
            txid,
            vout: vout as u32,
        },
        txout: tx.output[vout].clone(),
    };
    // Any witness will do: the refusal comes before script verification.
    let mut spend = alice.spend(&coin, alice.script(), FEE);
    spend.input[0].previous_output = taproot_coin.outpoint;
    spend.output[0].value = taproot_coin.txout.value - FEE;
    assert_refused(&broadcast(&devnet, &spend).await, "taproot");
}
