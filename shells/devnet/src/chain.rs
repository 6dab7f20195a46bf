//! The best chain and its indexes: blocks by hash and height, confirmed transactions, the UTXO set,
//! confirmed spends and per-script histories.
//!
//! Blocks are only ever connected at the tip, and a reorganisation truncates and rebuilds every index
//! from genesis: the chain is small and in memory, and one rebuild path is easier to trust than an
//! undo log.

use std::collections::HashMap;
use std::sync::Arc;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::{Block, BlockHash, Network, OutPoint, Script, Transaction, TxOut, Txid};

/// Blocks a coinbase output must wait before it can be spent (consensus rule).
pub(crate) const COINBASE_MATURITY: u32 = 100;

/// A script's key in the history index: sha256 of the scriptPubKey, in forward byte order, as in
/// Esplora's `/scripthash/:hash` paths.
pub(crate) type ScriptKey = [u8; 32];

pub(crate) fn script_key(script: &Script) -> ScriptKey {
    sha256::Hash::hash(script.as_bytes()).to_byte_array()
}

/// An unspent output of the best chain.
#[derive(Clone, Debug)]
pub(crate) struct Coin {
    pub(crate) txout: TxOut,
    pub(crate) height: u32,
    pub(crate) is_coinbase: bool,
}

/// Where a confirmed transaction sits.
#[derive(Clone, Copy, Debug)]
struct InBlock {
    height: u32,
    index: usize,
}

/// The transaction input that spends an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spender {
    pub(crate) txid: Txid,
    pub(crate) vin: u32,
}

pub(crate) struct Chain {
    /// Every block ever connected, including those a reorganisation made stale, so that
    /// `/block/:hash/status` can answer `in_best_chain: false` for them.
    blocks: HashMap<BlockHash, Arc<Block>>,
    best: Vec<BlockHash>,
    heights: HashMap<BlockHash, u32>,
    txs: HashMap<Txid, InBlock>,
    utxos: HashMap<OutPoint, Coin>,
    spends: HashMap<OutPoint, Spender>,
    /// Confirmed transactions that pay to or spend from each script, oldest first.
    history: HashMap<ScriptKey, Vec<Txid>>,
}

impl Chain {
    /// A chain holding only the regtest genesis block.
    pub(crate) fn new() -> Self {
        let mut chain = Self {
            blocks: HashMap::new(),
            best: Vec::new(),
            heights: HashMap::new(),
            txs: HashMap::new(),
            utxos: HashMap::new(),
            spends: HashMap::new(),
            history: HashMap::new(),
        };
        chain.connect(Arc::new(bitcoin::constants::genesis_block(
            Network::Regtest,
        )));
        chain
    }

    pub(crate) fn tip_height(&self) -> u32 {
        u32::try_from(self.best.len() - 1).expect("chain height fits in u32")
    }

    pub(crate) fn tip_hash(&self) -> BlockHash {
        *self.best.last().expect("the chain always holds genesis")
    }

    /// Any block ever mined here, stale or not.
    pub(crate) fn block(&self, hash: &BlockHash) -> Option<&Arc<Block>> {
        self.blocks.get(hash)
    }

    /// The height of a block if it is in the best chain.
    pub(crate) fn height_of(&self, hash: &BlockHash) -> Option<u32> {
        self.heights.get(hash).copied()
    }

    pub(crate) fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.best.get(height as usize).copied()
    }

    pub(crate) fn block_at(&self, height: u32) -> Option<&Arc<Block>> {
        self.hash_at(height).and_then(|hash| self.blocks.get(&hash))
    }

    /// Median time past of the block at `height`: the median timestamp of it and the ten blocks
    /// before it (BIP113).
    pub(crate) fn median_time_past(&self, height: u32) -> u32 {
        let from = height.saturating_sub(10);
        let mut times: Vec<u32> = (from..=height)
            .filter_map(|h| self.block_at(h))
            .map(|b| b.header.time)
            .collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// A confirmed transaction, with the height and block that hold it.
    pub(crate) fn tx(&self, txid: &Txid) -> Option<(&Transaction, u32, &Arc<Block>)> {
        let at = self.txs.get(txid)?;
        let block = self.block_at(at.height)?;
        Some((&block.txdata[at.index], at.height, block))
    }

    /// An unspent output of the best chain.
    pub(crate) fn coin(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxos.get(outpoint)
    }

    pub(crate) fn utxos(&self) -> impl Iterator<Item = (&OutPoint, &Coin)> {
        self.utxos.iter()
    }

    /// The confirmed input that spends `outpoint`, if any.
    pub(crate) fn spender(&self, outpoint: &OutPoint) -> Option<Spender> {
        self.spends.get(outpoint).copied()
    }

    /// An output of a confirmed transaction, spent or not.
    pub(crate) fn output(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        let (tx, _, _) = self.tx(&outpoint.txid)?;
        tx.output.get(outpoint.vout as usize)
    }

    /// Confirmed transactions touching a script, oldest first.
    pub(crate) fn history(&self, key: &ScriptKey) -> &[Txid] {
        self.history.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Connects a block on top of the tip. The caller has validated it: every input spends an
    /// unspent output.
    pub(crate) fn connect(&mut self, block: Arc<Block>) {
        let height = u32::try_from(self.best.len()).expect("chain height fits in u32");
        let hash = block.block_hash();
        for (index, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            let mut touched: Vec<ScriptKey> = Vec::new();
            if !tx.is_coinbase() {
                for (vin, input) in tx.input.iter().enumerate() {
                    let coin = self.utxos.remove(&input.previous_output);
                    debug_assert!(coin.is_some(), "connected a block spending a missing coin");
                    if let Some(coin) = coin {
                        touched.push(script_key(&coin.txout.script_pubkey));
                    }
                    let vin = u32::try_from(vin).expect("input index fits in u32");
                    self.spends
                        .insert(input.previous_output, Spender { txid, vin });
                }
            }
            for (vout, txout) in tx.output.iter().enumerate() {
                touched.push(script_key(&txout.script_pubkey));
                // Genesis's coinbase is unspendable by consensus: it never enters the UTXO set.
                if height > 0 {
                    let vout = u32::try_from(vout).expect("output index fits in u32");
                    self.utxos.insert(
                        OutPoint { txid, vout },
                        Coin {
                            txout: txout.clone(),
                            height,
                            is_coinbase: tx.is_coinbase(),
                        },
                    );
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for key in touched {
                self.history.entry(key).or_default().push(txid);
            }
            self.txs.insert(txid, InBlock { height, index });
        }
        self.blocks.insert(hash, block);
        self.best.push(hash);
        self.heights.insert(hash, height);
    }

    /// Disconnects every block above `height` and returns them, oldest first. They stay known as
    /// stale blocks.
    pub(crate) fn truncate(&mut self, height: u32) -> Vec<Arc<Block>> {
        let keep = height as usize + 1;
        if keep >= self.best.len() {
            return Vec::new();
        }
        let kept: Vec<Arc<Block>> = self.best[..keep]
            .iter()
            .map(|hash| Arc::clone(&self.blocks[hash]))
            .collect();
        let removed: Vec<Arc<Block>> = self.best[keep..]
            .iter()
            .map(|hash| Arc::clone(&self.blocks[hash]))
            .collect();
        self.best.clear();
        self.heights.clear();
        self.txs.clear();
        self.utxos.clear();
        self.spends.clear();
        self.history.clear();
        for block in kept {
            self.connect(block);
        }
        removed
    }
}
