//! A merchant's shop for the store API tests: a real till-server process, a till-engine Node on the
//! devnet connected to it through the hub client as the store's master, and a customer's ldk-node
//! node with a 500,000 sat channel to the merchant.

use crate::ldk::{
    CHANNEL_READY_CONFIRMATIONS, TestChain, TestNode, WAIT, free_address, fund_node, start_node,
    wait_event, wait_until,
};
use crate::server::{StoreArg, TillServer, add_token, add_user, server_binary};
use ldk_node::Event;
use ldk_node::bitcoin::{Amount, Network};
use std::sync::Arc;
use till_engine::{HubClient, HubConfig, Keys, LocalOnly, LogStore, Node, NodeConfig};
use till_log::Log;

/// The store's name on the server.
pub const STORE: &str = "shop";

/// Everything a store API test needs; fields drop in reverse order of need.
pub struct Shop {
    /// The master's hub connection.
    pub hub: HubClient,
    /// Runs the hub client and the tests' HTTP calls.
    pub runtime: tokio::runtime::Runtime,
    /// The merchant's till, the store's master.
    pub merchant: Arc<Node>,
    /// The customer's node, with a channel to the merchant.
    pub customer: TestNode,
    /// The server.
    pub server: TillServer,
    /// An owner token of the store.
    pub owner: String,
    /// A cashier token of the store.
    pub cashier: String,
    /// The devnet.
    pub chain: TestChain,
    _dir: tempfile::TempDir,
}

impl Shop {
    /// Starts everything and waits until the merchant's device is the store's master on the hub.
    pub fn start(server_args: &[&str]) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let binary = server_binary();
        let store = StoreArg::DataDir(dir.path().join("server"));
        let owner = add_user(&binary, &store, STORE);
        let cashier = add_token(&binary, &store, STORE, "cashier");
        let server = TillServer::start(&binary, store, server_args);

        let chain = TestChain::start();
        let customer = start_node(&chain, "customer");
        fund_node(&chain, &customer, Amount::from_sat(1_000_000));
        let log = Arc::new(Log::open(dir.path().join("till.redb")).unwrap());
        let listen = free_address();
        let mut config = NodeConfig::new(Network::Regtest, chain.url(), dir.path().join("ldk"));
        config.listen = vec![listen.clone()];
        config.background_sync = false;
        let node = Node::build(
            config,
            &Keys::generate(),
            LogStore::new(log, Arc::new(LocalOnly)),
        )
        .unwrap();
        node.start().unwrap();
        let merchant = Arc::new(node);
        // ldk-node accepts an inbound anchor channel only with an on-chain reserve.
        chain.faucet(&merchant.new_address().unwrap(), Amount::from_sat(100_000));
        chain.mine(1);
        merchant.sync().unwrap();
        wait_until("the merchant's funding", || {
            merchant.balances().onchain_spendable_sats >= 100_000
        });
        customer
            .open_channel(merchant.info().node_id, listen, 500_000, None, None)
            .unwrap();
        let funding = wait_event(&customer, "ChannelPending", |e| match e {
            Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
            _ => None,
        });
        chain.wait_for_tx(&funding.txid);
        chain.mine(CHANNEL_READY_CONFIRMATIONS);
        customer.sync_wallets().unwrap();
        merchant.sync().unwrap();
        wait_until("the channel to be usable on both sides", || {
            customer.list_channels().iter().any(|c| c.is_usable)
                && merchant.channels().iter().any(|c| c.is_usable)
        });

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let device = merchant.info().device_id;
        let hub = {
            let _guard = runtime.enter();
            HubClient::start(HubConfig::new(
                server.url(),
                owner.clone(),
                STORE,
                device,
                Some(merchant.clone()),
            ))
        };
        // The head write a master's replicator makes when it acquires the lease.
        runtime.block_on(write_head(
            &server.vss_url(),
            &owner,
            "till-vss-store",
            device,
            1,
            true,
        ));
        runtime
            .block_on(hub.wait_for(WAIT, |s| {
                s.connected
                    && s.master.as_ref().map(|m| m.device.clone()) == Some(device.to_string())
            }))
            .expect("the merchant's device becomes master");
        Shop {
            hub,
            runtime,
            merchant,
            customer,
            server,
            owner,
            cashier,
            chain,
            _dir: dir,
        }
    }
}

/// The WebSocket request that opens `server`'s device hub with `token` as its bearer, for tests
/// that speak the hub protocol themselves.
pub fn hub_request(
    server: &TillServer,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/api/v1/hub", server.addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Writes a head whose lease header names `device` at `epoch` (held or released) to VSS store
/// `store_id`, unconditionally, as a master's replicator would: the server reads only the
/// plaintext header, so the rest is filler. This is how tests make a device the store's master.
pub async fn write_head(
    vss_url: &str,
    token: &str,
    store_id: &str,
    device: till_log::DeviceId,
    epoch: u64,
    held: bool,
) {
    try_write_head(vss_url, token, store_id, device, epoch, held)
        .await
        .expect("the head write is accepted");
}

/// [`write_head`], returning the server's refusal or failure instead of panicking.
pub async fn try_write_head(
    vss_url: &str,
    token: &str,
    store_id: &str,
    device: till_log::DeviceId,
    epoch: u64,
    held: bool,
) -> Result<(), till_vss::Error> {
    use till_vss::replica::{LeaseHeader, LeaseState};
    let mut value = LeaseHeader {
        device,
        epoch,
        state: if held {
            LeaseState::Held
        } else {
            LeaseState::Released
        },
    }
    .encode()
    .to_vec();
    value.extend_from_slice(b"sealed manifest stand-in");
    let client = till_vss::VssClient::new(
        vss_url,
        till_vss::BearerToken::new(token).expect("a valid token"),
        till_vss::ClientConfig {
            retry: till_vss::RetryPolicy::never(),
            ..Default::default()
        },
    )
    .expect("a VSS client");
    client
        .put_objects(&till_vss::PutObjectRequest {
            store_id: store_id.to_owned(),
            global_version: None,
            transaction_items: vec![till_vss::KeyValue {
                key: "head".to_owned(),
                version: -1,
                value,
            }],
            delete_items: vec![],
        })
        .await
}

/// Reads server-sent events from a store's invoice stream (`GET .../invoices/events`) until `want`
/// invoices have been seen, each waited for at most [`WAIT`].
pub async fn read_events(mut response: reqwest::Response, want: usize) -> Vec<serde_json::Value> {
    let mut buffer = String::new();
    let mut seen = Vec::new();
    while seen.len() < want {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                seen.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
    seen
}
