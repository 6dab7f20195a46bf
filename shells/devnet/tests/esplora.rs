//! Every Esplora endpoint in ESPLORA-SUBSET.md, checked for format and status codes: once through
//! the real `esplora-client` (the one ldk-node and BDK use), once as raw HTTP for the fields and
//! codes the client does not show.

mod common;

use bdk_esplora::esplora_client::{self, AsyncClient};
use bitcoin::consensus::encode;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::hex::DisplayHex;
use bitcoin::{Amount, BlockHash, MerkleBlock, Network, Txid};
use common::{Key, broadcast, fund, get, post};
use till_devnet::Devnet;

async fn devnet() -> Devnet {
    Devnet::start("127.0.0.1:0").await.unwrap()
}

fn client(devnet: &Devnet) -> AsyncClient {
    // No retries: a 5xx must fail the test, not be retried into a pass.
    esplora_client::Builder::new(devnet.url())
        .max_retries(0)
        .build_async()
        .unwrap()
}

fn script_hash(key: &Key) -> String {
    sha256::Hash::hash(key.script().as_bytes()).to_string()
}

#[tokio::test]
async fn the_chain_starts_at_the_regtest_genesis_block() {
    let devnet = devnet().await;
    let genesis = bitcoin::constants::genesis_block(Network::Regtest).block_hash();
    let client = client(&devnet);
    assert_eq!(client.get_tip_hash().await.unwrap(), genesis);
    assert_eq!(client.get_block_hash(0).await.unwrap(), genesis);
    assert_eq!(client.get_height().await.unwrap(), 0);

    let blocks = get(&devnet, "/blocks").await.json();
    let blocks = blocks.as_array().unwrap();
    assert_eq!(blocks.len(), 1, "never empty: genesis alone");
    assert_eq!(blocks[0]["id"], genesis.to_string());
    assert!(
        blocks[0].get("previousblockhash").is_none(),
        "absent for genesis"
    );

    let status = client.get_block_status(&genesis).await.unwrap();
    assert!(status.in_best_chain);
    assert_eq!(status.height, Some(0));
    assert_eq!(status.next_best, None);
}

#[tokio::test]
async fn block_endpoints() {
    let devnet = devnet().await;
    let client = client(&devnet);
    let hashes = devnet.mine(12, None).unwrap();
    let tip = *hashes.last().unwrap();

    // 1. tip hash, as text.
    let answer = get(&devnet, "/blocks/tip/hash").await;
    assert_eq!((answer.status, answer.text()), (200, tip.to_string()));

    // 2. header: hex of 80 bytes that hash to the block.
    let answer = get(&devnet, &format!("/block/{tip}/header")).await;
    assert_eq!(answer.text().len(), 160);
    let header = client.get_header_by_hash(&tip).await.unwrap();
    assert_eq!(header.block_hash(), tip);
    header.validate_pow(header.target()).unwrap();

    // 3. status: next_best links forward, none at the tip.
    let status = client.get_block_status(&hashes[10]).await.unwrap();
    assert_eq!(
        (status.in_best_chain, status.height, status.next_best),
        (true, Some(11), Some(tip))
    );
    let raw = get(&devnet, &format!("/block/{tip}/status")).await.json();
    assert_eq!(
        raw,
        serde_json::json!({"in_best_chain": true, "height": 12})
    );

    // 7. /blocks: the latest ten, tip first, every field present.
    let infos = client.get_block_infos(None).await.unwrap();
    assert_eq!(infos.len(), 10);
    assert_eq!(infos[0].id, tip);
    assert_eq!(infos[0].height, 12);
    assert_eq!(infos[1].id, hashes[10]);
    assert_eq!(infos[0].previousblockhash, Some(hashes[10]));
    assert_eq!(infos[0].bits.to_consensus(), 0x207f_ffff);
    assert_eq!(infos[0].tx_count, 1);
    assert!(infos[0].mediantime <= infos[0].timestamp);
    assert!(infos[0].difficulty > 0.0);
    let raw = get(&devnet, "/blocks").await.json();
    for field in [
        "id",
        "height",
        "version",
        "timestamp",
        "tx_count",
        "size",
        "weight",
        "merkle_root",
        "previousblockhash",
        "mediantime",
        "nonce",
        "bits",
        "difficulty",
    ] {
        assert!(raw[0].get(field).is_some(), "/blocks lacks {field}");
    }
    assert!(raw[0]["bits"].is_number(), "bits is a number");
    // From a height, too.
    let from_three = client.get_block_infos(Some(3)).await.unwrap();
    assert_eq!(
        from_three.iter().map(|b| b.height).collect::<Vec<_>>(),
        vec![3, 2, 1, 0]
    );

    // 8. block-height: best-chain hash as text; 404 above the tip.
    assert_eq!(client.get_block_hash(5).await.unwrap(), hashes[4]);
    assert_eq!(get(&devnet, "/block-height/13").await.status, 404);

    // The raw block decodes and checks out.
    let block = client.get_block_by_hash(&tip).await.unwrap().unwrap();
    assert!(block.check_merkle_root() && block.check_witness_commitment());
    // BIP34: the coinbase starts with the height as Bitcoin Core pushes it (OP_12 for 12).
    assert_eq!(block.txdata[0].input[0].script_sig.as_bytes()[0], 0x5c);
}

#[tokio::test]
async fn transaction_endpoints() {
    let devnet = devnet().await;
    let client = client(&devnet);
    let alice = Key::new("alice");
    let bob = Key::new("bob");
    let coin = fund(&devnet, &alice, Amount::from_sat(200_000)).await;

    // Unconfirmed: known, with an unconfirmed status and no merkle proof.
    let info = client
        .get_tx_info(&coin.outpoint.txid)
        .await
        .unwrap()
        .unwrap();
    assert!(!info.status.confirmed);
    assert_eq!(
        get(
            &devnet,
            &format!("/tx/{}/merkleblock-proof", coin.outpoint.txid)
        )
        .await
        .status,
        404
    );
    let raw = get(&devnet, &format!("/tx/{}", coin.outpoint.txid))
        .await
        .json();
    assert_eq!(raw["status"], serde_json::json!({"confirmed": false}));

    let hash = devnet.mine(1, None).unwrap()[0];
    let height = devnet.height();

    // 13. JSON Tx: confirmed with all three of height, hash and time; prevouts; exact fee.
    let info = client
        .get_tx_info(&coin.outpoint.txid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.txid, coin.outpoint.txid);
    assert!(info.status.confirmed);
    assert_eq!(info.status.block_height, Some(height));
    assert_eq!(info.status.block_hash, Some(hash));
    assert!(info.status.block_time.is_some());
    let tx = info.to_tx();
    assert_eq!(
        tx.compute_txid(),
        coin.outpoint.txid,
        "the JSON round-trips to the same transaction"
    );
    let inputs: u64 = info
        .vin
        .iter()
        .map(|vin| vin.prevout.as_ref().unwrap().value)
        .sum();
    let outputs: u64 = info.vout.iter().map(|vout| vout.value).sum();
    assert_eq!(info.fee, inputs - outputs);
    assert!(info.fee > 0);
    assert_eq!(info.weight, tx.weight().to_wu());
    assert_eq!(info.size, tx.total_size());

    // A coinbase: zero txid, vout 0xffffffff, null prevout, is_coinbase.
    let coinbase: Txid = get(&devnet, &format!("/block/{hash}/txids")).await.json()[0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let raw = get(&devnet, &format!("/tx/{coinbase}")).await.json();
    assert_eq!(raw["vin"][0]["txid"], Txid::all_zeros().to_string());
    assert_eq!(raw["vin"][0]["vout"], 4_294_967_295u64);
    assert!(raw["vin"][0]["prevout"].is_null());
    assert_eq!(raw["vin"][0]["is_coinbase"], true);
    assert_eq!(raw["fee"], 0);

    // 5. raw: the consensus bytes.
    let answer = get(&devnet, &format!("/tx/{}/raw", coin.outpoint.txid)).await;
    assert_eq!(answer.content_type, "application/octet-stream");
    assert_eq!(
        client.get_tx(&coin.outpoint.txid).await.unwrap().unwrap(),
        tx
    );

    // 4. merkleblock-proof: a BIP37 merkle block whose single match is the txid.
    let proof = client
        .get_merkle_block(&coin.outpoint.txid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proof.header.block_hash(), hash);
    let (mut matches, mut indexes) = (Vec::new(), Vec::new());
    let root = proof
        .txn
        .extract_matches(&mut matches, &mut indexes)
        .unwrap();
    assert_eq!(root, proof.header.merkle_root);
    assert_eq!(matches, vec![coin.outpoint.txid]);
    let hex = get(
        &devnet,
        &format!("/tx/{}/merkleblock-proof", coin.outpoint.txid),
    )
    .await
    .text();
    let decoded: MerkleBlock = encode::deserialize_hex(&hex).unwrap();
    assert_eq!(decoded.header, proof.header);

    // 6. outspend: unspent; spent in the mempool (unconfirmed status); spent in a block.
    let status = client
        .get_output_status(&coin.outpoint.txid, coin.outpoint.vout.into())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.spent);
    assert_eq!(
        get(
            &devnet,
            &format!("/tx/{}/outspend/{}", coin.outpoint.txid, coin.outpoint.vout)
        )
        .await
        .json(),
        serde_json::json!({"spent": false})
    );
    let spend = alice.spend(&coin, bob.script(), Amount::from_sat(300));
    // 12. POST /tx: the txid as text.
    let answer = broadcast(&devnet, &spend).await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, spend.compute_txid().to_string())
    );
    let status = client
        .get_output_status(&coin.outpoint.txid, coin.outpoint.vout.into())
        .await
        .unwrap()
        .unwrap();
    assert!(status.spent);
    assert_eq!(status.txid, Some(spend.compute_txid()));
    assert_eq!(status.vin, Some(0));
    assert!(!status.status.unwrap().confirmed);
    let hash = devnet.mine(1, None).unwrap()[0];
    let status = client
        .get_output_status(&coin.outpoint.txid, coin.outpoint.vout.into())
        .await
        .unwrap()
        .unwrap();
    let confirmed = status.status.unwrap();
    assert!(confirmed.confirmed);
    assert_eq!(confirmed.block_hash, Some(hash));

    // The client's broadcast accepts the devnet's answer too.
    let back = bob.spend(
        &common::Coin {
            outpoint: bitcoin::OutPoint {
                txid: spend.compute_txid(),
                vout: 0,
            },
            txout: spend.output[0].clone(),
        },
        alice.script(),
        Amount::from_sat(300),
    );
    client.broadcast(&back).await.unwrap();
    let status = client.get_tx_status(&back.compute_txid()).await.unwrap();
    assert!(!status.confirmed);
}

#[tokio::test]
async fn scripthash_history_includes_spends_and_pages() {
    let devnet = devnet().await;
    let client = client(&devnet);
    let alice = Key::new("alice");
    let bob = Key::new("bob");

    // 30 confirmed payments to alice, then one spend of the first, then one in the mempool.
    let mut coins = Vec::new();
    for _ in 0..30 {
        coins.push(fund(&devnet, &alice, Amount::from_sat(10_000)).await);
        devnet.mine(1, None).unwrap();
    }
    let spend = alice.spend(&coins[0], bob.script(), Amount::from_sat(300));
    assert_eq!(broadcast(&devnet, &spend).await.status, 200);
    devnet.mine(1, None).unwrap();
    let pending = fund(&devnet, &alice, Amount::from_sat(10_000)).await;

    let page = client.scripthash_txs(&alice.script(), None).await.unwrap();
    // Mempool first, then 25 confirmed, newest first; the spend counts as alice's history.
    assert_eq!(page.len(), 26);
    assert_eq!(page[0].txid, pending.outpoint.txid);
    assert!(!page[0].status.confirmed);
    assert_eq!(
        page[1].txid,
        spend.compute_txid(),
        "spends from the script are in its history"
    );
    assert_eq!(page[2].txid, coins[29].outpoint.txid);
    let heights: Vec<u32> = page[1..]
        .iter()
        .map(|tx| tx.status.block_height.unwrap())
        .collect();
    assert!(
        heights.windows(2).all(|w| w[0] > w[1]),
        "newest first: {heights:?}"
    );

    // 10. The rest, older than the last seen.
    let last_seen = page.last().unwrap().txid;
    let rest = client
        .scripthash_txs(&alice.script(), Some(last_seen))
        .await
        .unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(rest.last().unwrap().txid, coins[0].outpoint.txid);
    let end = client
        .scripthash_txs(&alice.script(), Some(coins[0].outpoint.txid))
        .await
        .unwrap();
    assert!(end.is_empty());

    // Bob's history holds only the spend paying him; an unused script has none.
    let raw = get(&devnet, &format!("/scripthash/{}/txs", script_hash(&bob)))
        .await
        .json();
    assert_eq!(raw.as_array().unwrap().len(), 1);
    let unused = Key::new("unused");
    let raw = get(
        &devnet,
        &format!("/scripthash/{}/txs", script_hash(&unused)),
    )
    .await;
    assert_eq!((raw.status, raw.json()), (200, serde_json::json!([])));
}

#[tokio::test]
async fn fee_estimates_are_fixed_rates_by_target() {
    let devnet = devnet().await;
    let estimates = client(&devnet).get_fee_estimates().await.unwrap();
    for target in [1u16, 2, 3, 6, 12, 25, 144, 1008] {
        let rate = estimates[&target];
        assert!((1.0..=2.0).contains(&rate), "target {target}: {rate}");
    }
}

#[tokio::test]
async fn unknown_things_are_404_and_malformed_requests_400() {
    let devnet = devnet().await;
    let client = client(&devnet);
    let unknown_tx = Txid::from_byte_array([7; 32]);
    let unknown_block = BlockHash::from_byte_array([7; 32]);
    for path in [
        format!("/tx/{unknown_tx}"),
        format!("/tx/{unknown_tx}/raw"),
        format!("/tx/{unknown_tx}/status"),
        format!("/tx/{unknown_tx}/merkleblock-proof"),
        format!("/tx/{unknown_tx}/outspend/0"),
        format!("/block/{unknown_block}"),
        format!("/block/{unknown_block}/header"),
        format!("/block/{unknown_block}/status"),
        format!("/block/{unknown_block}/raw"),
        "/block-height/1".to_owned(),
        "/blocks/5".to_owned(),
        "/no/such/endpoint".to_owned(),
    ] {
        let answer = get(&devnet, &path).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.text());
    }
    // The client reads those 404s as "none", not as errors.
    assert!(client.get_tx(&unknown_tx).await.unwrap().is_none());
    assert!(client.get_tx_info(&unknown_tx).await.unwrap().is_none());
    assert!(
        client
            .get_merkle_block(&unknown_tx)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        client
            .get_output_status(&unknown_tx, 0)
            .await
            .unwrap()
            .is_none()
    );

    // An output index past the end of a known transaction.
    let coinbase_txid =
        bitcoin::constants::genesis_block(Network::Regtest).txdata[0].compute_txid();
    assert_eq!(
        get(&devnet, &format!("/tx/{coinbase_txid}/outspend/1"))
            .await
            .status,
        404
    );

    for path in [
        "/tx/nothex",
        "/block/xyz/header",
        "/block-height/minus",
        "/scripthash/abc/txs",
    ] {
        let answer = get(&devnet, path).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
    }
    let answer = post(&devnet, "/tx", [0xffu8, 0x00].to_lower_hex_string()).await;
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn control_endpoints() {
    let devnet = devnet().await;
    let alice = Key::new("alice");

    // mine: an array of new hashes, oldest first, to the given address.
    let answer = post(
        &devnet,
        "/devnet/mine",
        format!(r#"{{"blocks": 3, "address": "{}"}}"#, alice.address),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let hashes: Vec<BlockHash> = serde_json::from_value(answer.json()).unwrap();
    assert_eq!(hashes.len(), 3);
    let info = get(&devnet, &format!("/block/{}", hashes[2])).await.json();
    assert_eq!(info["previousblockhash"], hashes[1].to_string());
    assert_eq!(info["height"], 3);
    let history = get(&devnet, &format!("/scripthash/{}/txs", script_hash(&alice)))
        .await
        .json();
    assert_eq!(
        history.as_array().unwrap().len(),
        3,
        "three coinbases to alice"
    );
    // Address optional.
    let answer = post(&devnet, "/devnet/mine", r#"{"blocks": 1}"#).await;
    assert_eq!(answer.json().as_array().unwrap().len(), 1);

    // faucet: {"txid"}, unconfirmed until the next block.
    let answer = post(
        &devnet,
        "/devnet/faucet",
        format!(r#"{{"address": "{}", "amount_sat": 12345}}"#, alice.address),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let txid: Txid = answer.json()["txid"].as_str().unwrap().parse().unwrap();
    let tx = get(&devnet, &format!("/tx/{txid}")).await.json();
    assert_eq!(tx["status"]["confirmed"], false);
    assert!(
        tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["value"] == 12345
                && o["scriptpubkey"] == alice.script().as_bytes().to_lower_hex_string())
    );
    devnet.mine(1, None).unwrap();
    assert_eq!(
        get(&devnet, &format!("/tx/{txid}")).await.json()["status"]["confirmed"],
        true
    );

    // Refusals: 400 with a reason.
    let mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    for (path, body, reason) in [
        (
            "/devnet/mine",
            r#"{"blocks": "three"}"#.to_owned(),
            "expected JSON",
        ),
        ("/devnet/mine", r#"{"blocks": 100000}"#.to_owned(), "limit"),
        (
            "/devnet/mine",
            format!(r#"{{"blocks": 1, "address": "{mainnet}"}}"#),
            "not a regtest address",
        ),
        (
            "/devnet/faucet",
            format!(r#"{{"address": "{}", "amount_sat": 10}}"#, alice.address),
            "dust",
        ),
        (
            "/devnet/faucet",
            r#"{"address": "bcrt1nonsense", "amount_sat": 1000}"#.to_owned(),
            "not a regtest address",
        ),
        ("/devnet/reorg", r#"{"depth": 0}"#.to_owned(), "depth"),
        ("/devnet/reorg", r#"{"depth": 1000}"#.to_owned(), "depth"),
    ] {
        let answer = post(&devnet, path, body.clone()).await;
        assert_eq!(answer.status, 400, "{path} {body}: {}", answer.text());
        assert!(
            answer.text().contains(reason),
            "{path} {body}: {}",
            answer.text()
        );
    }
}

#[tokio::test]
async fn reorg_replaces_blocks_and_returns_transactions() {
    let devnet = devnet().await;
    let client = client(&devnet);
    let alice = Key::new("alice");
    let miner = Key::new("miner");
    let coin = fund(&devnet, &alice, Amount::from_sat(50_000)).await;
    devnet.mine(2, None).unwrap();
    // A coinbase that will vanish, and a transaction that will return.
    let old_tip = devnet.mine(1, Some(&miner.address)).unwrap()[0];
    let spend = alice.spend(&coin, alice.script(), Amount::from_sat(300));
    assert_eq!(broadcast(&devnet, &spend).await.status, 200);
    let with_spend = devnet.mine(1, None).unwrap()[0];
    let height = devnet.height();

    let answer = post(&devnet, "/devnet/reorg", r#"{"depth": 2}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let reorg = answer.json();
    assert_eq!(
        reorg["removed"],
        serde_json::json!([old_tip.to_string(), with_spend.to_string()])
    );
    assert_eq!(reorg["added"].as_array().unwrap().len(), 3);
    assert_eq!(
        reorg["returned_to_mempool"],
        serde_json::json!([spend.compute_txid().to_string()])
    );
    assert_eq!(reorg["dropped"], serde_json::json!([]));

    assert_eq!(devnet.height(), height + 1);
    // The old blocks are stale; their headers are still served.
    let status = client.get_block_status(&with_spend).await.unwrap();
    assert!(!status.in_best_chain);
    assert_eq!(status.height, None);
    assert_eq!(
        client
            .get_header_by_hash(&with_spend)
            .await
            .unwrap()
            .block_hash(),
        with_spend
    );
    // The spend is unconfirmed again, with no proof.
    assert!(
        !client
            .get_tx_status(&spend.compute_txid())
            .await
            .unwrap()
            .confirmed
    );
    assert!(
        client
            .get_merkle_block(&spend.compute_txid())
            .await
            .unwrap()
            .is_none()
    );
    // The miner's coinbase is gone.
    let history = client.scripthash_txs(&miner.script(), None).await.unwrap();
    assert!(history.is_empty());
    // The parent of the returned spend is untouched.
    assert!(
        client
            .get_tx_status(&coin.outpoint.txid)
            .await
            .unwrap()
            .confirmed
    );
}
