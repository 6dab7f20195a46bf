//! ldk-node's own VSS store (`build_with_vss_store_and_fixed_headers`) against a real
//! `till-server` process: a third-party VSS client runs a Lightning node on our server. The node
//! opens a channel to a peer on the devnet, pays and is paid, stops, and is rebuilt from the server
//! alone (a new, empty storage directory, the same seed and store id): its channel and balances
//! come back and the channel keeps working. (A wrong token is not tried here: ldk-node's VSS store
//! retries authentication failures for up to 180 s; the conformance suite covers auth.)

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use ldk_node::bitcoin::Amount;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::{BuildError, Event, Node};
use till_tests::ldk::{
    TestChain, TestNode, free_address, fund_node, node_builder, open_channel, pay, start_node,
    wait_until,
};
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::{BearerToken, ClientConfig, VssClient};

const FUNDING: Amount = Amount::from_sat(1_000_000);
const CAPACITY_SATS: u64 = 400_000;
const PUSH_MSAT: u64 = 50_000_000;
const STORE_ID: &str = "ldk-node-vss";

fn vss_node(
    chain: &TestChain,
    server: &TillServer,
    token: &str,
    seed: [u8; 64],
    storage: &Path,
    listen: &SocketAddress,
) -> Result<Node, BuildError> {
    let mut builder = node_builder(chain, storage, listen);
    builder.set_entropy_seed_bytes(seed);
    let headers = HashMap::from([("Authorization".to_owned(), format!("Bearer {token}"))]);
    builder.build_with_vss_store_and_fixed_headers(server.vss_url(), STORE_ID.to_owned(), headers)
}

/// How many objects the server holds in the node's store, read through Till's own VSS client.
fn objects_on_server(server: &TillServer, token: &str) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = VssClient::new(
        server.vss_url(),
        BearerToken::new(token).unwrap(),
        ClientConfig::default(),
    )
    .unwrap();
    runtime.block_on(async {
        let (all, _) = client.list_all_key_versions(STORE_ID, None).await.unwrap();
        all.len()
    })
}

#[test]
fn ldk_nodes_vss_store_runs_a_node_on_till_server_and_restores_from_it() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let bin = server_binary();
    let store = StoreArg::DataDir(dir.path().join("server"));
    let token = add_user(&bin, &store, "merchant");
    let server = TillServer::start(&bin, store, &[]);

    let chain = TestChain::start();
    let peer = start_node(&chain, "peer");
    let seed: [u8; 64] = std::array::from_fn(|_| rand::random());
    let listen = free_address();
    let first_storage = dir.path().join("ldk-first");
    let node = vss_node(&chain, &server, &token, seed, &first_storage, &listen)
        .expect("ldk-node builds on till-server's VSS store");
    node.start().expect("the VSS node starts");
    let vss = TestNode::new(node, "vss", listen.clone(), tempfile::tempdir().unwrap());
    fund_node(&chain, &vss, FUNDING);
    open_channel(&chain, &vss, &peer, CAPACITY_SATS, PUSH_MSAT);
    eprintln!("channel ready after {:?}", started.elapsed());
    for _ in 0..5 {
        pay(&vss, &peer, 20_000_000);
        pay(&peer, &vss, 7_000_000);
    }
    // The payer's success can come before the last commitment dance ends (the HTLC's output,
    // whose fee the funder pays, still in the commitment): read the balances once they hold
    // still, as the restored node will see them.
    let mut balances = vss.list_balances();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = vss.list_balances();
        if now.total_lightning_balance_sats == balances.total_lightning_balance_sats {
            break;
        }
        assert!(Instant::now() < deadline, "the balances never settled");
        balances = now;
    }
    let channel = vss.list_channels()[0].clone();
    let payments = vss.list_payments().len();
    assert!(balances.total_lightning_balance_sats > 0);
    let stored = objects_on_server(&server, &token);
    assert!(
        stored > 10,
        "the node's state lives on till-server ({stored} objects)"
    );
    eprintln!(
        "{} payments, {stored} objects on the server after {:?}",
        payments,
        started.elapsed()
    );

    // Stop and rebuild from the server alone: a new, empty storage directory.
    vss.node.stop().expect("the VSS node stops");
    drop(vss);
    let second_storage = dir.path().join("ldk-second");
    assert!(!second_storage.exists());
    let node = vss_node(&chain, &server, &token, seed, &second_storage, &listen)
        .expect("ldk-node rebuilds from till-server");
    node.start().expect("the restored node starts");
    let vss = TestNode::new(node, "vss-restored", listen, tempfile::tempdir().unwrap());
    let channels = vss.list_channels();
    assert_eq!(channels.len(), 1, "the channel came back from the server");
    assert_eq!(channels[0].channel_id, channel.channel_id);
    assert_eq!(channels[0].funding_txo, channel.funding_txo);
    assert_eq!(channels[0].channel_value_sats, CAPACITY_SATS);
    let restored = vss.list_balances();
    assert_eq!(
        restored.total_lightning_balance_sats,
        balances.total_lightning_balance_sats
    );
    assert_eq!(
        restored.total_onchain_balance_sats,
        balances.total_onchain_balance_sats
    );
    assert_eq!(vss.list_payments().len(), payments);

    // The peer reconnects and the channel carries payments both ways again.
    vss.connect(peer.node_id(), peer.listen.clone(), true)
        .expect("the restored node reconnects");
    wait_until("the channel to be usable on both sides", || {
        vss.list_channels().iter().all(|c| c.is_usable)
            && peer.list_channels().iter().all(|c| c.is_usable)
    });
    pay(&vss, &peer, 10_000_000);
    pay(&peer, &vss, 3_000_000);
    // No force close anywhere.
    let closed = peer
        .next_event()
        .filter(|e| matches!(e, Event::ChannelClosed { .. }));
    assert!(closed.is_none(), "the peer saw {closed:?}");
    assert_eq!(peer.list_channels().len(), 1);

    vss.node.stop().unwrap();
    eprintln!("done after {:?}", started.elapsed());
}
