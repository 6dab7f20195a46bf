//! A BDK wallet synced with bdk_esplora against the devnet: it receives from the faucet, sees the
//! payment confirm, and spends.

mod common;

use bdk_esplora::EsploraAsyncExt;
use bdk_esplora::esplora_client;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::Xpriv;
use bitcoin::{Amount, FeeRate, Network};
use common::Key;
use till_devnet::Devnet;

const STOP_GAP: usize = 10;
const PARALLEL_REQUESTS: usize = 2;

fn wallet() -> Wallet {
    let xprv = Xpriv::new_master(Network::Regtest, &[42; 32]).unwrap();
    Wallet::create(
        format!("wpkh({xprv}/84'/1'/0'/0/*)"),
        format!("wpkh({xprv}/84'/1'/0'/1/*)"),
    )
    .network(Network::Regtest)
    .create_wallet_no_persist()
    .unwrap()
}

async fn full_scan(wallet: &mut Wallet, client: &esplora_client::AsyncClient) {
    let request = wallet.start_full_scan().build();
    let update = client
        .full_scan(request, STOP_GAP, PARALLEL_REQUESTS)
        .await
        .unwrap();
    wallet.apply_update(update).unwrap();
}

async fn sync(wallet: &mut Wallet, client: &esplora_client::AsyncClient) {
    let request = wallet.start_sync_with_revealed_spks().build();
    let update = client.sync(request, PARALLEL_REQUESTS).await.unwrap();
    wallet.apply_update(update).unwrap();
}

#[tokio::test]
async fn a_bdk_wallet_receives_from_the_faucet_and_spends() {
    let devnet = Devnet::start("127.0.0.1:0").await.unwrap();
    let client = esplora_client::Builder::new(devnet.url())
        .max_retries(0)
        .build_async()
        .unwrap();
    let mut wallet = wallet();
    full_scan(&mut wallet, &client).await;
    assert_eq!(wallet.balance().total(), Amount::ZERO);
    assert_eq!(wallet.latest_checkpoint().height(), 0);

    // Receive: seen unconfirmed first, then confirmed.
    let address = wallet.reveal_next_address(KeychainKind::External).address;
    let received = Amount::from_sat(250_000);
    let faucet_txid = devnet.faucet(&address, received).unwrap();
    full_scan(&mut wallet, &client).await;
    assert_eq!(wallet.balance().untrusted_pending, received);
    devnet.mine(1, None).unwrap();
    full_scan(&mut wallet, &client).await;
    assert_eq!(wallet.balance().confirmed, received);
    assert_eq!(wallet.latest_checkpoint().height(), devnet.height());
    let tx = wallet
        .get_tx(faucet_txid)
        .expect("the wallet knows the payment");
    assert!(tx.chain_position.is_confirmed());

    // Spend to someone else.
    let bob = Key::new("bob");
    let sent = Amount::from_sat(100_000);
    let mut builder = wallet.build_tx();
    builder
        .add_recipient(bob.script(), sent)
        .fee_rate(FeeRate::from_sat_per_vb(2).unwrap());
    let mut psbt = builder.finish().unwrap();
    assert!(wallet.sign(&mut psbt, SignOptions::default()).unwrap());
    let spend = psbt.extract_tx().unwrap();
    let fee = wallet.calculate_fee(&spend).unwrap();
    client.broadcast(&spend).await.unwrap();
    devnet.mine(1, None).unwrap();
    sync(&mut wallet, &client).await;

    assert_eq!(wallet.balance().confirmed, received - sent - fee);
    let info = client
        .get_tx_info(&spend.compute_txid())
        .await
        .unwrap()
        .unwrap();
    assert!(info.status.confirmed);
    assert_eq!(
        info.fee,
        fee.to_sat(),
        "the devnet reports the fee BDK paid"
    );
}
