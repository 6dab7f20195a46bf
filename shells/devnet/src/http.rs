//! The HTTP face: the Esplora subset (docs/DEVNET.md lists it) and the `/devnet/*` control
//! endpoints. Unknown things are 404, malformed requests and refused transactions 400, each with a
//! plain-text reason.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bitcoin::consensus::encode::{self, serialize_hex};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{
    Address, Amount, Block, BlockHash, MerkleBlock, Network, OutPoint, Transaction, TxOut, Txid,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chain::ScriptKey;
use crate::error::ControlError;
use crate::state::State;

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // Every operation leaves the state consistent before it can panic, so a poisoned lock is safe
    // to keep using.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Most blocks one `/devnet/mine` request may ask for.
pub(crate) const MAX_BLOCKS_PER_REQUEST: u32 = 10_000;
/// Esplora's page sizes for script histories.
const MEMPOOL_TXS_PER_PAGE: usize = 50;
const CHAIN_TXS_PER_PAGE: usize = 25;
/// `/blocks` answers this many blocks.
const BLOCKS_PER_PAGE: u32 = 10;

pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/blocks/tip/hash", get(tip_hash))
        .route("/blocks/tip/height", get(tip_height))
        .route("/blocks", get(blocks_from_tip))
        .route("/blocks/{height}", get(blocks_from))
        .route("/block/{hash}", get(block_info))
        .route("/block/{hash}/header", get(block_header))
        .route("/block/{hash}/status", get(block_status))
        .route("/block/{hash}/raw", get(block_raw))
        .route("/block/{hash}/txids", get(block_txids))
        .route("/block-height/{height}", get(block_at_height))
        .route("/tx", post(post_tx))
        .route("/tx/{txid}", get(tx_json))
        .route("/tx/{txid}/raw", get(tx_raw))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/tx/{txid}/merkleblock-proof", get(merkleblock_proof))
        .route("/tx/{txid}/outspend/{vout}", get(outspend))
        .route("/scripthash/{hash}/txs", get(scripthash_txs))
        .route("/scripthash/{hash}/txs/chain", get(scripthash_chain))
        .route(
            "/scripthash/{hash}/txs/chain/{last_seen}",
            get(scripthash_chain_after),
        )
        .route("/scripthash/{hash}/txs/mempool", get(scripthash_mempool))
        .route("/fee-estimates", get(fee_estimates))
        .route("/devnet/mine", post(mine))
        .route("/devnet/faucet", post(faucet))
        .route("/devnet/reorg", post(reorg))
        .fallback(unknown_path)
        .with_state(shared)
}

/// A refusal: 404 for unknown things, 400 for malformed or refused requests.
enum ApiError {
    NotFound(String),
    BadRequest(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound(reason) => (StatusCode::NOT_FOUND, reason).into_response(),
            Self::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        Self::BadRequest(err.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn parse<T: FromStr>(what: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a valid {what}")))
}

fn parse_script_key(raw: &str) -> Result<ScriptKey, ApiError> {
    <[u8; 32]>::from_hex(raw).map_err(|_| {
        ApiError::BadRequest(format!(
            "{raw:?} is not a script hash (64 hex digits of sha256(scriptPubKey))"
        ))
    })
}

fn unknown_block(hash: &BlockHash) -> ApiError {
    ApiError::NotFound(format!("block {hash} not found"))
}

fn unknown_tx(txid: &Txid) -> ApiError {
    ApiError::NotFound(format!("transaction {txid} not found"))
}

async fn unknown_path() -> ApiError {
    ApiError::NotFound("no such endpoint on the till devnet; see docs/DEVNET.md".into())
}

async fn tip_hash(Extract(shared): Extract<Shared>) -> Response {
    text(lock(&shared).chain.tip_hash().to_string())
}

async fn tip_height(Extract(shared): Extract<Shared>) -> Response {
    text(lock(&shared).chain.tip_height().to_string())
}

async fn blocks_from_tip(Extract(shared): Extract<Shared>) -> Response {
    let state = lock(&shared);
    let tip = state.chain.tip_height();
    axum::Json(blocks_json(&state, tip)).into_response()
}

async fn blocks_from(Extract(shared): Extract<Shared>, Path(height): Path<String>) -> ApiResult {
    let height: u32 = parse("block height", &height)?;
    let state = lock(&shared);
    if height > state.chain.tip_height() {
        return Err(ApiError::NotFound(format!(
            "no block at height {height}; the tip is at {}",
            state.chain.tip_height()
        )));
    }
    Ok(axum::Json(blocks_json(&state, height)).into_response())
}

fn blocks_json(state: &State, from: u32) -> Value {
    let to = from.saturating_sub(BLOCKS_PER_PAGE - 1);
    (to..=from)
        .rev()
        .filter_map(|height| {
            state
                .chain
                .block_at(height)
                .map(|b| block_json(state, b, height))
        })
        .collect()
}

fn block_json(state: &State, block: &Block, height: u32) -> Value {
    let header = &block.header;
    let mut value = json!({
        "id": block.block_hash().to_string(),
        "height": height,
        "version": header.version.to_consensus(),
        "timestamp": header.time,
        "tx_count": block.txdata.len(),
        "size": block.total_size(),
        "weight": block.weight().to_wu(),
        "merkle_root": header.merkle_root.to_string(),
        "mediantime": state.chain.median_time_past(height),
        "nonce": header.nonce,
        "bits": header.bits.to_consensus(),
        "difficulty": header.difficulty_float(),
    });
    if height > 0 {
        value["previousblockhash"] = json!(header.prev_blockhash.to_string());
    }
    value
}

async fn block_info(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash: BlockHash = parse("block hash", &hash)?;
    let state = lock(&shared);
    let height = state
        .chain
        .height_of(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    let block = state
        .chain
        .block(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    Ok(axum::Json(block_json(&state, block, height)).into_response())
}

async fn block_header(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash: BlockHash = parse("block hash", &hash)?;
    let state = lock(&shared);
    let block = state
        .chain
        .block(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    Ok(text(serialize_hex(&block.header)))
}

async fn block_status(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash: BlockHash = parse("block hash", &hash)?;
    let state = lock(&shared);
    state
        .chain
        .block(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    let status = match state.chain.height_of(&hash) {
        Some(height) => {
            let mut status = json!({ "in_best_chain": true, "height": height });
            if let Some(next) = state.chain.hash_at(height + 1) {
                status["next_best"] = json!(next.to_string());
            }
            status
        }
        None => json!({ "in_best_chain": false }),
    };
    Ok(axum::Json(status).into_response())
}

async fn block_raw(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash: BlockHash = parse("block hash", &hash)?;
    let state = lock(&shared);
    let block = state
        .chain
        .block(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    Ok(binary(encode::serialize(&**block)))
}

async fn block_txids(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash: BlockHash = parse("block hash", &hash)?;
    let state = lock(&shared);
    let block = state
        .chain
        .block(&hash)
        .ok_or_else(|| unknown_block(&hash))?;
    let txids: Vec<String> = block
        .txdata
        .iter()
        .map(|tx| tx.compute_txid().to_string())
        .collect();
    Ok(axum::Json(txids).into_response())
}

async fn block_at_height(
    Extract(shared): Extract<Shared>,
    Path(height): Path<String>,
) -> ApiResult {
    let height: u32 = parse("block height", &height)?;
    let state = lock(&shared);
    let hash = state.chain.hash_at(height).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no block at height {height}; the tip is at {}",
            state.chain.tip_height()
        ))
    })?;
    Ok(text(hash.to_string()))
}

fn binary(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

async fn post_tx(Extract(shared): Extract<Shared>, body: Bytes) -> ApiResult {
    let hex = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("body is not a hex-encoded transaction".into()))?
        .trim();
    let bytes = Vec::<u8>::from_hex(hex).map_err(|err| {
        ApiError::BadRequest(format!("body is not a hex-encoded transaction: {err}"))
    })?;
    let tx: Transaction = encode::deserialize(&bytes).map_err(|err| {
        ApiError::BadRequest(format!("body is not a hex-encoded transaction: {err}"))
    })?;
    let txid = lock(&shared)
        .submit(tx)
        .map_err(|rejection| ApiError::BadRequest(rejection.to_string()))?;
    Ok(text(txid.to_string()))
}

/// A transaction the devnet knows, confirmed or in the mempool.
struct Found {
    tx: Transaction,
    prevouts: Vec<Option<TxOut>>,
    fee: Amount,
    status: Value,
}

fn find(state: &State, txid: &Txid) -> Option<Found> {
    if let Some((tx, height, block)) = state.chain.tx(txid) {
        let prevouts: Vec<Option<TxOut>> = if tx.is_coinbase() {
            vec![None]
        } else {
            tx.input
                .iter()
                .map(|input| state.chain.output(&input.previous_output).cloned())
                .collect()
        };
        let fee = if tx.is_coinbase() {
            Amount::ZERO
        } else {
            let inputs: Amount = prevouts.iter().flatten().map(|txout| txout.value).sum();
            let outputs: Amount = tx.output.iter().map(|txout| txout.value).sum();
            inputs.checked_sub(outputs).unwrap_or(Amount::ZERO)
        };
        return Some(Found {
            tx: tx.clone(),
            prevouts,
            fee,
            status: confirmed_status(height, block),
        });
    }
    state.mempool.get(txid).map(|entry| Found {
        tx: entry.tx.clone(),
        prevouts: entry.prevouts.iter().cloned().map(Some).collect(),
        fee: entry.fee,
        status: json!({ "confirmed": false }),
    })
}

fn confirmed_status(height: u32, block: &Block) -> Value {
    json!({
        "confirmed": true,
        "block_height": height,
        "block_hash": block.block_hash().to_string(),
        "block_time": block.header.time,
    })
}

fn found_json(found: &Found) -> Value {
    let tx = &found.tx;
    let vin: Vec<Value> = tx
        .input
        .iter()
        .zip(&found.prevouts)
        .map(|(input, prevout)| {
            json!({
                "txid": input.previous_output.txid.to_string(),
                "vout": input.previous_output.vout,
                "prevout": prevout.as_ref().map(|txout| json!({
                    "value": txout.value.to_sat(),
                    "scriptpubkey": txout.script_pubkey.as_bytes().to_lower_hex_string(),
                })),
                "scriptsig": input.script_sig.as_bytes().to_lower_hex_string(),
                "witness": input.witness.iter().map(|item| item.to_lower_hex_string()).collect::<Vec<_>>(),
                "sequence": input.sequence.0,
                "is_coinbase": tx.is_coinbase(),
            })
        })
        .collect();
    let vout: Vec<Value> = tx
        .output
        .iter()
        .map(|txout| {
            json!({
                "value": txout.value.to_sat(),
                "scriptpubkey": txout.script_pubkey.as_bytes().to_lower_hex_string(),
            })
        })
        .collect();
    json!({
        "txid": tx.compute_txid().to_string(),
        "version": tx.version.0,
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": vout,
        "size": tx.total_size(),
        "weight": tx.weight().to_wu(),
        "fee": found.fee.to_sat(),
        "status": found.status,
    })
}

async fn tx_json(Extract(shared): Extract<Shared>, Path(txid): Path<String>) -> ApiResult {
    let txid: Txid = parse("txid", &txid)?;
    let state = lock(&shared);
    let found = find(&state, &txid).ok_or_else(|| unknown_tx(&txid))?;
    Ok(axum::Json(found_json(&found)).into_response())
}

async fn tx_raw(Extract(shared): Extract<Shared>, Path(txid): Path<String>) -> ApiResult {
    let txid: Txid = parse("txid", &txid)?;
    let state = lock(&shared);
    let found = find(&state, &txid).ok_or_else(|| unknown_tx(&txid))?;
    Ok(binary(encode::serialize(&found.tx)))
}

async fn tx_status(Extract(shared): Extract<Shared>, Path(txid): Path<String>) -> ApiResult {
    let txid: Txid = parse("txid", &txid)?;
    let state = lock(&shared);
    let found = find(&state, &txid).ok_or_else(|| unknown_tx(&txid))?;
    Ok(axum::Json(found.status).into_response())
}

async fn merkleblock_proof(
    Extract(shared): Extract<Shared>,
    Path(txid): Path<String>,
) -> ApiResult {
    let txid: Txid = parse("txid", &txid)?;
    let state = lock(&shared);
    let (_, _, block) = state.chain.tx(&txid).ok_or_else(|| {
        ApiError::NotFound(format!(
            "transaction {txid} is not confirmed in the best chain"
        ))
    })?;
    let proof = MerkleBlock::from_block_with_predicate(block, |candidate| *candidate == txid);
    Ok(text(serialize_hex(&proof)))
}

async fn outspend(
    Extract(shared): Extract<Shared>,
    Path((txid, vout)): Path<(String, String)>,
) -> ApiResult {
    let txid: Txid = parse("txid", &txid)?;
    let vout: u32 = parse("output index", &vout)?;
    let state = lock(&shared);
    let found = find(&state, &txid).ok_or_else(|| unknown_tx(&txid))?;
    if vout as usize >= found.tx.output.len() {
        return Err(ApiError::NotFound(format!(
            "transaction {txid} has no output {vout}"
        )));
    }
    let outpoint = OutPoint { txid, vout };
    let status = if let Some(spender) = state.chain.spender(&outpoint) {
        let (_, height, block) = state
            .chain
            .tx(&spender.txid)
            .expect("a confirmed spender is in the chain");
        json!({
            "spent": true,
            "txid": spender.txid.to_string(),
            "vin": spender.vin,
            "status": confirmed_status(height, block),
        })
    } else if let Some(spender) = state.mempool.spender(&outpoint) {
        json!({
            "spent": true,
            "txid": spender.txid.to_string(),
            "vin": spender.vin,
            "status": { "confirmed": false },
        })
    } else {
        json!({ "spent": false })
    };
    Ok(axum::Json(status).into_response())
}

/// Mempool transactions touching the script (paying to it or spending from it), newest first.
fn mempool_history(state: &State, key: &ScriptKey) -> Vec<Value> {
    state
        .mempool
        .iter()
        .rev()
        .filter(|(_, entry)| {
            entry
                .tx
                .output
                .iter()
                .chain(&entry.prevouts)
                .any(|txout| crate::chain::script_key(&txout.script_pubkey) == *key)
        })
        .take(MEMPOOL_TXS_PER_PAGE)
        .filter_map(|(txid, _)| find(state, txid).map(|found| found_json(&found)))
        .collect()
}

/// Confirmed transactions touching the script, newest first, after `last_seen` if given.
fn chain_history(state: &State, key: &ScriptKey, last_seen: Option<&Txid>) -> Vec<Value> {
    let history = state.chain.history(key);
    let older = match last_seen {
        None => history,
        Some(last_seen) => match history.iter().position(|txid| txid == last_seen) {
            Some(position) => &history[..position],
            None => &[],
        },
    };
    older
        .iter()
        .rev()
        .take(CHAIN_TXS_PER_PAGE)
        .filter_map(|txid| find(state, txid).map(|found| found_json(&found)))
        .collect()
}

async fn scripthash_txs(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let key = parse_script_key(&hash)?;
    let state = lock(&shared);
    let mut txs = mempool_history(&state, &key);
    txs.extend(chain_history(&state, &key, None));
    Ok(axum::Json(txs).into_response())
}

async fn scripthash_chain(Extract(shared): Extract<Shared>, Path(hash): Path<String>) -> ApiResult {
    let key = parse_script_key(&hash)?;
    let state = lock(&shared);
    Ok(axum::Json(chain_history(&state, &key, None)).into_response())
}

async fn scripthash_chain_after(
    Extract(shared): Extract<Shared>,
    Path((hash, last_seen)): Path<(String, String)>,
) -> ApiResult {
    let key = parse_script_key(&hash)?;
    let last_seen: Txid = parse("txid", &last_seen)?;
    let state = lock(&shared);
    Ok(axum::Json(chain_history(&state, &key, Some(&last_seen))).into_response())
}

async fn scripthash_mempool(
    Extract(shared): Extract<Shared>,
    Path(hash): Path<String>,
) -> ApiResult {
    let key = parse_script_key(&hash)?;
    let state = lock(&shared);
    Ok(axum::Json(mempool_history(&state, &key)).into_response())
}

/// Fixed estimates in sat/vB by confirmation target: the devnet has no fee market, and fixed
/// values keep fees in tests reproducible.
async fn fee_estimates() -> Response {
    let estimates: BTreeMap<String, f64> = [
        (1, 2.0),
        (2, 2.0),
        (3, 2.0),
        (4, 2.0),
        (5, 2.0),
        (6, 2.0),
        (10, 1.5),
        (12, 1.5),
        (25, 1.0),
        (144, 1.0),
        (504, 1.0),
        (1008, 1.0),
    ]
    .into_iter()
    .map(|(target, rate)| (u32::to_string(&target), rate))
    .collect();
    axum::Json(estimates).into_response()
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("expected JSON {shape}: {err}")))
}

pub(crate) fn parse_address(raw: &str) -> Result<Address, ControlError> {
    let bad = |reason: String| ControlError::BadAddress {
        address: raw.to_owned(),
        reason,
    };
    Address::from_str(raw)
        .map_err(|err| bad(err.to_string()))?
        .require_network(Network::Regtest)
        .map_err(|err| bad(err.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MineRequest {
    blocks: u32,
    address: Option<String>,
}

async fn mine(Extract(shared): Extract<Shared>, body: Bytes) -> ApiResult {
    let request: MineRequest =
        parse_body(&body, r#"{"blocks": N, "address": "bcrt1..." (optional)}"#)?;
    let address = request.address.as_deref().map(parse_address).transpose()?;
    let hashes = crate::mine(&shared, request.blocks, address.as_ref())?;
    let hashes: Vec<String> = hashes.iter().map(ToString::to_string).collect();
    Ok(axum::Json(hashes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaucetRequest {
    address: String,
    amount_sat: u64,
}

async fn faucet(Extract(shared): Extract<Shared>, body: Bytes) -> ApiResult {
    let request: FaucetRequest = parse_body(&body, r#"{"address": "bcrt1...", "amount_sat": N}"#)?;
    let address = parse_address(&request.address)?;
    let txid = lock(&shared).faucet(
        address.script_pubkey(),
        Amount::from_sat(request.amount_sat),
    )?;
    Ok(axum::Json(json!({ "txid": txid.to_string() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReorgRequest {
    depth: u32,
}

async fn reorg(Extract(shared): Extract<Shared>, body: Bytes) -> ApiResult {
    let request: ReorgRequest = parse_body(&body, r#"{"depth": N}"#)?;
    let reorg = lock(&shared).reorg(request.depth)?;
    let strings =
        |items: &[Txid]| -> Vec<String> { items.iter().map(ToString::to_string).collect() };
    Ok(axum::Json(json!({
        "removed": reorg.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "added": reorg.added.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "returned_to_mempool": strings(&reorg.returned_to_mempool),
        "dropped": strings(&reorg.dropped),
    }))
    .into_response())
}
