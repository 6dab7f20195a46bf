//! The devnet's whole state behind one lock: the chain, the mempool and the faucet's key, with the
//! operations that change them (accepting, mining, paying from the faucet, reorganising).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::opcodes::all::OP_RETURN;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, CompressedPublicKey, OutPoint, PrivateKey, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness, absolute,
};

use crate::chain::{COINBASE_MATURITY, Chain};
use crate::error::ControlError;
use crate::mempool::{Entry, Mempool};
use crate::validate::{self, Checked, Rejection};

/// Regtest's proof-of-work limit; every block uses it (regtest never retargets).
const REGTEST_BITS: u32 = 0x207f_ffff;
/// Regtest halves the subsidy every 150 blocks.
const HALVING_INTERVAL: u32 = 150;
const INITIAL_SUBSIDY: Amount = Amount::from_sat(50 * 100_000_000);
/// Room left in a block for the coinbase.
const MAX_BLOCK_TX_WEIGHT: u64 = 4_000_000 - 8_000;
/// The witness commitment's output prefix (BIP141).
const WITNESS_COMMITMENT_HEADER: [u8; 4] = [0xaa, 0x21, 0xa9, 0xed];
/// The faucet's fee rate; fixed because the devnet's fee estimates are fixed too.
const FAUCET_SAT_PER_VB: u64 = 2;
/// Weight of one signed P2WPKH input's witness: item count, signature and key with their lengths.
const P2WPKH_WITNESS_WEIGHT: u64 = 1 + 1 + 72 + 1 + 33;
/// How many blocks one faucet request may mine to fund itself before giving up.
const MAX_FAUCET_FUNDING_BLOCKS: u32 = 1_000;

/// What a reorganisation did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reorg {
    /// The disconnected blocks, oldest first; they are now stale.
    pub removed: Vec<BlockHash>,
    /// The new, empty blocks, oldest first; one more than `removed`.
    pub added: Vec<BlockHash>,
    /// Transactions of the removed blocks (and of the old mempool) that are valid on the new chain
    /// and wait in the mempool again.
    pub returned_to_mempool: Vec<Txid>,
    /// Transactions of the removed blocks (and of the old mempool) that are no longer valid, such
    /// as spends of a removed coinbase; they are forgotten.
    pub dropped: Vec<Txid>,
}

/// The devnet's own wallet: one key, whose P2WPKH script receives the coinbases of blocks mined
/// without an address and pays the faucet.
struct Faucet {
    secp: Secp256k1<All>,
    secret: SecretKey,
    pubkey: CompressedPublicKey,
    script: ScriptBuf,
}

impl Faucet {
    fn new() -> Self {
        let secp = Secp256k1::new();
        // A fixed key: the devnet's coins are worthless and tests are easier to read when the
        // faucet's address is the same on every run.
        let seed = sha256::Hash::hash(b"till-devnet faucet key").to_byte_array();
        let secret = SecretKey::from_slice(&seed).expect("a sha256 digest is a valid key");
        let private = PrivateKey::new(secret, bitcoin::Network::Regtest);
        let pubkey =
            CompressedPublicKey::from_private_key(&secp, &private).expect("the key is compressed");
        let script = ScriptBuf::new_p2wpkh(&pubkey.wpubkey_hash());
        Self {
            secp,
            secret,
            pubkey,
            script,
        }
    }

    fn sign(&self, tx: &mut Transaction, prevouts: &[TxOut]) {
        let mut witnesses = Vec::with_capacity(prevouts.len());
        {
            let mut cache = SighashCache::new(&*tx);
            for (index, prevout) in prevouts.iter().enumerate() {
                let sighash = cache
                    .p2wpkh_signature_hash(
                        index,
                        &prevout.script_pubkey,
                        prevout.value,
                        EcdsaSighashType::All,
                    )
                    .expect("the faucet signs its own P2WPKH inputs");
                let signature = self.secp.sign_ecdsa(&Message::from(sighash), &self.secret);
                let signature = bitcoin::ecdsa::Signature {
                    signature,
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&signature, &self.pubkey.0));
            }
        }
        for (input, witness) in tx.input.iter_mut().zip(witnesses) {
            input.witness = witness;
        }
    }
}

pub(crate) struct State {
    pub(crate) chain: Chain,
    pub(crate) mempool: Mempool,
    faucet: Faucet,
    /// Counts every block mined, into each coinbase, so that a block replacing another at the same
    /// height never repeats its hash.
    extra_nonce: u64,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            chain: Chain::new(),
            mempool: Mempool::default(),
            faucet: Faucet::new(),
            extra_nonce: 0,
        }
    }

    /// Validates `tx` and adds it to the mempool, evicting what it replaces.
    pub(crate) fn submit(&mut self, tx: Transaction) -> Result<Txid, Rejection> {
        match validate::check(&self.chain, &self.mempool, &tx)? {
            Checked::AlreadyInMempool(txid) => Ok(txid),
            Checked::New(accepted) => {
                self.mempool.remove(&accepted.evicts);
                self.mempool.insert(
                    accepted.txid,
                    Entry {
                        tx,
                        fee: accepted.fee,
                        prevouts: accepted.prevouts,
                    },
                );
                Ok(accepted.txid)
            }
        }
    }

    /// Mines `count` blocks paying to `script` (the faucet's when `None`), each including every
    /// mempool transaction that fits.
    pub(crate) fn mine(&mut self, count: u32, script: Option<ScriptBuf>) -> Vec<BlockHash> {
        let script = script.unwrap_or_else(|| self.faucet.script.clone());
        (0..count).map(|_| self.mine_block(&script, true)).collect()
    }

    fn mine_block(&mut self, script: &ScriptBuf, include_mempool: bool) -> BlockHash {
        let height = self.chain.tip_height() + 1;
        let mut txdata = vec![Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: Vec::new(),
            output: Vec::new(),
        }];
        let mut fees = Amount::ZERO;
        let mut included = BTreeSet::new();
        if include_mempool {
            let mut weight = 0;
            for (txid, entry) in self.mempool.iter() {
                let tx_weight = entry.tx.weight().to_wu();
                let parents_in = entry.tx.input.iter().all(|input| {
                    self.mempool.get(&input.previous_output.txid).is_none()
                        || included.contains(&input.previous_output.txid)
                });
                if weight + tx_weight > MAX_BLOCK_TX_WEIGHT || !parents_in {
                    continue;
                }
                weight += tx_weight;
                fees += entry.fee;
                included.insert(*txid);
                txdata.push(entry.tx.clone());
            }
        }

        self.extra_nonce += 1;
        let script_sig = Builder::new()
            .push_int(i64::from(height))
            .push_slice(self.extra_nonce.to_le_bytes())
            .push_slice(b"till-devnet")
            .into_script();
        txdata[0].input.push(TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            // The witness reserved value (BIP141).
            witness: Witness::from_slice(&[[0u8; 32]]),
        });
        txdata[0].output.push(TxOut {
            value: subsidy(height) + fees,
            script_pubkey: script.clone(),
        });

        let prev = self.chain.tip_hash();
        let time = self.next_block_time();
        let mut block = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata,
        };
        let witness_root = block.witness_root().expect("the block has a coinbase");
        let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
        let mut push = PushBytesBuf::from(WITNESS_COMMITMENT_HEADER);
        push.extend_from_slice(commitment.as_byte_array())
            .expect("36 bytes fit a push");
        block.txdata[0].output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: Builder::new()
                .push_opcode(OP_RETURN)
                .push_slice(push)
                .into_script(),
        });
        block.header.merkle_root = block
            .compute_merkle_root()
            .expect("the block has transactions");
        let target = block.header.target();
        while block.header.validate_pow(target).is_err() {
            block.header.nonce = block.header.nonce.wrapping_add(1);
        }
        debug_assert!(block.check_merkle_root() && block.check_witness_commitment());

        let hash = block.block_hash();
        self.chain.connect(Arc::new(block));
        self.mempool.remove(&included);
        hash
    }

    /// Now, or just past the median time past when blocks come faster than one a second: a block's
    /// time must exceed the median of the eleven before it.
    fn next_block_time(&self) -> u32 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        now.max(self.chain.median_time_past(self.chain.tip_height()) + 1)
    }

    /// Pays `amount` to `script` from the faucet's coins, mining blocks to the faucet (without
    /// mempool transactions, so nothing else confirms) until it has enough mature coins.
    pub(crate) fn faucet(
        &mut self,
        script: ScriptBuf,
        amount: Amount,
    ) -> Result<Txid, ControlError> {
        let dust = script.minimal_non_dust();
        if amount < dust {
            return Err(ControlError::AmountBelowDust {
                amount_sat: amount.to_sat(),
                dust_sat: dust.to_sat(),
            });
        }
        let faucet_script = self.faucet.script.clone();
        for _ in 0..=MAX_FAUCET_FUNDING_BLOCKS {
            if let Some(tx) = self.faucet_tx(&script, amount) {
                return self
                    .submit(tx)
                    .map_err(|rejection| ControlError::Internal(rejection.to_string()));
            }
            self.mine_block(&faucet_script, false);
        }
        Err(ControlError::FaucetExhausted {
            amount_sat: amount.to_sat(),
            blocks: MAX_FAUCET_FUNDING_BLOCKS,
        })
    }

    /// A signed payment from the faucet's spendable coins, or `None` if they do not cover it.
    fn faucet_tx(&self, script: &ScriptBuf, amount: Amount) -> Option<Transaction> {
        let next_height = self.chain.tip_height() + 1;
        let mut coins: Vec<(OutPoint, TxOut)> = self
            .chain
            .utxos()
            .filter(|(_, coin)| coin.txout.script_pubkey == self.faucet.script)
            .filter(|(_, coin)| !coin.is_coinbase || next_height - coin.height >= COINBASE_MATURITY)
            .map(|(outpoint, coin)| (*outpoint, coin.txout.clone()))
            .collect();
        for (txid, entry) in self.mempool.iter() {
            for (vout, txout) in entry.tx.output.iter().enumerate() {
                if txout.script_pubkey == self.faucet.script {
                    let vout = u32::try_from(vout).expect("output index fits in u32");
                    coins.push((OutPoint { txid: *txid, vout }, txout.clone()));
                }
            }
        }
        coins.retain(|(outpoint, _)| self.mempool.spender(outpoint).is_none());
        // Largest first (ties by outpoint, so the choice is reproducible).
        coins.sort_by(|a, b| b.1.value.cmp(&a.1.value).then(a.0.cmp(&b.0)));

        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: Vec::new(),
            output: vec![
                TxOut {
                    value: amount,
                    script_pubkey: script.clone(),
                },
                TxOut {
                    value: Amount::ZERO,
                    script_pubkey: self.faucet.script.clone(),
                },
            ],
        };
        let mut prevouts = Vec::new();
        let mut total = Amount::ZERO;
        for (outpoint, txout) in coins {
            total += txout.value;
            tx.input.push(TxIn {
                previous_output: outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            });
            prevouts.push(txout);
            let fee = faucet_fee(&tx);
            if total >= amount + fee {
                let change = total - amount - fee;
                if change >= self.faucet.script.minimal_non_dust() {
                    tx.output[1].value = change;
                } else {
                    tx.output.pop();
                }
                self.faucet.sign(&mut tx, &prevouts);
                return Some(tx);
            }
        }
        None
    }

    /// Replaces the last `depth` blocks with `depth + 1` empty ones. The removed blocks'
    /// transactions, then the old mempool's, are offered to the new mempool in their old order;
    /// those no longer valid are dropped.
    pub(crate) fn reorg(&mut self, depth: u32) -> Result<Reorg, ControlError> {
        let height = self.chain.tip_height();
        if depth == 0 || depth > height {
            return Err(ControlError::BadReorgDepth { depth, height });
        }
        let removed_blocks = self.chain.truncate(height - depth);
        let mut candidates: Vec<Transaction> = removed_blocks
            .iter()
            .flat_map(|block| block.txdata.iter().skip(1).cloned())
            .collect();
        candidates.extend(self.mempool.drain());

        let faucet_script = self.faucet.script.clone();
        let added = (0..=depth)
            .map(|_| self.mine_block(&faucet_script, false))
            .collect();
        let mut returned_to_mempool = Vec::new();
        let mut dropped = Vec::new();
        for tx in candidates {
            let txid = tx.compute_txid();
            match self.submit(tx) {
                Ok(_) => returned_to_mempool.push(txid),
                Err(_) => dropped.push(txid),
            }
        }
        Ok(Reorg {
            removed: removed_blocks.iter().map(|b| b.block_hash()).collect(),
            added,
            returned_to_mempool,
            dropped,
        })
    }
}

/// The block subsidy at `height` on regtest.
fn subsidy(height: u32) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat(INITIAL_SUBSIDY.to_sat() >> halvings)
}

/// The faucet's fee for `tx` once its P2WPKH inputs are signed.
fn faucet_fee(tx: &Transaction) -> Amount {
    let inputs = tx.input.len() as u64;
    // The unsigned transaction, plus the segwit marker and flag, plus each input's witness.
    let weight = tx.weight().to_wu() + 2 + inputs * P2WPKH_WITNESS_WEIGHT;
    Amount::from_sat(weight.div_ceil(4) * FAUCET_SAT_PER_VB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(subsidy(0), Amount::from_sat(5_000_000_000));
        assert_eq!(subsidy(149), Amount::from_sat(5_000_000_000));
        assert_eq!(subsidy(150), Amount::from_sat(2_500_000_000));
        assert_eq!(subsidy(300), Amount::from_sat(1_250_000_000));
        assert_eq!(subsidy(150 * 64), Amount::ZERO);
    }

    #[test]
    fn mined_blocks_are_valid_and_chain_up() {
        let mut state = State::new();
        let genesis = state.chain.tip_hash();
        let hashes = state.mine(3, None);
        assert_eq!(state.chain.tip_height(), 3);
        let first = state.chain.block(&hashes[0]).unwrap();
        assert_eq!(first.header.prev_blockhash, genesis);
        for hash in &hashes {
            let block = state.chain.block(hash).unwrap();
            assert!(block.check_merkle_root());
            assert!(block.check_witness_commitment());
            block.header.validate_pow(block.header.target()).unwrap();
        }
    }

    #[test]
    fn faucet_funds_itself_and_pays() {
        let mut state = State::new();
        let to = ScriptBuf::new_p2wpkh(&state.faucet.pubkey.wpubkey_hash());
        let txid = state.faucet(to, Amount::from_sat(100_000)).unwrap();
        assert!(state.mempool.get(&txid).is_some());
        // The coinbase of block 1 is the first that can be spent in block 101.
        assert_eq!(state.chain.tip_height(), COINBASE_MATURITY);
    }
}
