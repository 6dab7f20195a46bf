//! Mempool acceptance: the checks a transaction must pass before it can be mined, each refusal with
//! a reason a developer can act on.

use std::collections::{BTreeSet, HashMap};

use bitcoin::consensus::encode;
use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid, absolute};

use crate::chain::{COINBASE_MATURITY, Chain};
use crate::mempool::Mempool;

/// Script verification flags handed to libbitcoinconsensus: every flag it supports (P2SH, strict
/// DER, NULLDUMMY, CHECKLOCKTIMEVERIFY, CHECKSEQUENCEVERIFY and segwit), which is the consensus
/// set Bitcoin Core enforces for new blocks. Bitcoin Core 25's library has no taproot flag, so
/// taproot spends are refused instead of being waved through as anyone-can-spend.
const SCRIPT_FLAGS: u32 = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11);

/// The largest weight Bitcoin Core relays for one transaction.
const MAX_STANDARD_TX_WEIGHT: u64 = 400_000;

const SEQUENCE_LOCKTIME_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_LOCKTIME_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_LOCKTIME_MASK: u32 = 0x0000_ffff;
const SEQUENCE_LOCKTIME_GRANULARITY: u32 = 9;

/// Why a transaction was refused. The `Display` text is the body of the 400 answer to `POST /tx`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Rejection {
    #[error("coinbase transactions cannot be submitted; mine a block instead (POST /devnet/mine)")]
    Coinbase,
    #[error("transaction has no inputs or no outputs")]
    Empty,
    #[error("transaction weighs {weight} WU, more than the {MAX_STANDARD_TX_WEIGHT} WU limit")]
    TooLarge { weight: u64 },
    #[error("output {vout} value {value} sat is out of range")]
    OutputRange { vout: usize, value: u64 },
    #[error("transaction {txid} is already confirmed in block {height}")]
    AlreadyConfirmed { txid: Txid, height: u32 },
    #[error("inputs {first} and {second} both spend {outpoint}")]
    DuplicateInput {
        first: usize,
        second: usize,
        outpoint: OutPoint,
    },
    #[error(
        "input {vin} spends {outpoint}, which does not exist (unknown transaction or output index); broadcast its parent first"
    )]
    MissingInput { vin: usize, outpoint: OutPoint },
    #[error(
        "double spend: input {vin} spends {outpoint}, already spent by {spender} confirmed in block {height}"
    )]
    SpentInChain {
        vin: usize,
        outpoint: OutPoint,
        spender: Txid,
        height: u32,
    },
    #[error(
        "double spend: input {vin} spends {outpoint}, already spent by mempool transaction {spender}; a replacement must pay more than the {evicted_fee} sat in fees of the {evicted_count} transaction(s) it would evict, it pays {fee} sat"
    )]
    InsufficientReplacementFee {
        vin: usize,
        outpoint: OutPoint,
        spender: Txid,
        evicted_fee: u64,
        evicted_count: usize,
        fee: u64,
    },
    #[error(
        "input {vin} spends {outpoint}, an output of {parent}, which this transaction would itself replace"
    )]
    SpendsReplaced {
        vin: usize,
        outpoint: OutPoint,
        parent: Txid,
    },
    #[error(
        "immature coinbase: input {vin} spends {outpoint}, the coinbase of block {coin_height}, spendable from height {spendable_at}; the next block is {next_height}, mine {blocks_needed} more block(s)"
    )]
    ImmatureCoinbase {
        vin: usize,
        outpoint: OutPoint,
        coin_height: u32,
        spendable_at: u32,
        next_height: u32,
        blocks_needed: u32,
    },
    #[error("outputs ({outputs} sat) exceed inputs ({inputs} sat)")]
    NegativeFee { inputs: u64, outputs: u64 },
    #[error(
        "non-final: locktime is block height {locktime} and the next block is {next_height}, mine {blocks_needed} more block(s) (or set every input's sequence to 0xffffffff)"
    )]
    LocktimeHeight {
        locktime: u32,
        next_height: u32,
        blocks_needed: u32,
    },
    #[error(
        "non-final: locktime is time {locktime} and the median time past is {median_time_past}; mine blocks until it passes (or set every input's sequence to 0xffffffff)"
    )]
    LocktimeTime {
        locktime: u32,
        median_time_past: u32,
    },
    #[error(
        "non-final: input {vin} has a relative timelock (BIP68) of {blocks} block(s) on an output confirmed at {coin_height}; the next block is {next_height}, mine {blocks_needed} more block(s)"
    )]
    RelativeHeight {
        vin: usize,
        blocks: u32,
        coin_height: u32,
        next_height: u32,
        blocks_needed: u32,
    },
    #[error(
        "non-final: input {vin} has a relative timelock (BIP68) of {seconds} s; the median time past must exceed {min_time} but is {median_time_past}; mine more blocks"
    )]
    RelativeTime {
        vin: usize,
        seconds: u32,
        min_time: i64,
        median_time_past: u32,
    },
    #[error(
        "input {vin} spends the taproot output {outpoint}; this devnet's consensus library (Bitcoin Core 25) cannot verify taproot spends"
    )]
    Taproot { vin: usize, outpoint: OutPoint },
    #[error(
        "bad signature or script: input {vin} does not satisfy the {script_type} scriptPubKey of {outpoint} ({value} sat) under the consensus script rules ({detail})"
    )]
    Script {
        vin: usize,
        outpoint: OutPoint,
        script_type: &'static str,
        value: u64,
        detail: String,
    },
}

/// A transaction that passed every check.
pub(crate) struct Accepted {
    pub(crate) txid: Txid,
    pub(crate) fee: Amount,
    pub(crate) prevouts: Vec<TxOut>,
    /// Mempool transactions it replaces, with their descendants.
    pub(crate) evicts: BTreeSet<Txid>,
}

/// What validation found: a new transaction, or one already in the mempool.
pub(crate) enum Checked {
    New(Accepted),
    AlreadyInMempool(Txid),
}

/// Checks `tx` for the block after the current tip.
pub(crate) fn check(
    chain: &Chain,
    mempool: &Mempool,
    tx: &Transaction,
) -> Result<Checked, Rejection> {
    let txid = tx.compute_txid();
    if let Some((_, height, _)) = chain.tx(&txid) {
        return Err(Rejection::AlreadyConfirmed { txid, height });
    }
    if mempool.get(&txid).is_some() {
        return Ok(Checked::AlreadyInMempool(txid));
    }
    if tx.is_coinbase() {
        return Err(Rejection::Coinbase);
    }
    if tx.input.is_empty() || tx.output.is_empty() {
        return Err(Rejection::Empty);
    }
    let weight = tx.weight().to_wu();
    if weight > MAX_STANDARD_TX_WEIGHT {
        return Err(Rejection::TooLarge { weight });
    }
    let mut outputs: u64 = 0;
    for (vout, txout) in tx.output.iter().enumerate() {
        let value = txout.value.to_sat();
        outputs = outputs.saturating_add(value);
        if value > Amount::MAX_MONEY.to_sat() || outputs > Amount::MAX_MONEY.to_sat() {
            return Err(Rejection::OutputRange { vout, value });
        }
    }
    let mut first_use: HashMap<OutPoint, usize> = HashMap::new();
    for (vin, input) in tx.input.iter().enumerate() {
        if let Some(first) = first_use.insert(input.previous_output, vin) {
            return Err(Rejection::DuplicateInput {
                first,
                second: vin,
                outpoint: input.previous_output,
            });
        }
    }

    let next_height = chain.tip_height() + 1;
    let median_time_past = chain.median_time_past(chain.tip_height());

    // Find each spent output, the height it confirmed at (the next block's for unconfirmed ones),
    // and the mempool transactions this one conflicts with.
    let mut prevouts = Vec::with_capacity(tx.input.len());
    let mut coin_heights = Vec::with_capacity(tx.input.len());
    let mut conflicts: BTreeSet<Txid> = BTreeSet::new();
    let mut first_conflict = None;
    for (vin, input) in tx.input.iter().enumerate() {
        let outpoint = input.previous_output;
        let (txout, coin_height) = if let Some(coin) = chain.coin(&outpoint) {
            if coin.is_coinbase && next_height - coin.height < COINBASE_MATURITY {
                let spendable_at = coin.height + COINBASE_MATURITY;
                return Err(Rejection::ImmatureCoinbase {
                    vin,
                    outpoint,
                    coin_height: coin.height,
                    spendable_at,
                    next_height,
                    blocks_needed: spendable_at - next_height,
                });
            }
            (coin.txout.clone(), coin.height)
        } else if let Some(parent) = mempool.get(&outpoint.txid) {
            match parent.tx.output.get(outpoint.vout as usize) {
                Some(txout) => (txout.clone(), next_height),
                None => return Err(Rejection::MissingInput { vin, outpoint }),
            }
        } else if let Some(spender) = chain.spender(&outpoint) {
            let height = chain.tx(&spender.txid).map_or(0, |(_, height, _)| height);
            return Err(Rejection::SpentInChain {
                vin,
                outpoint,
                spender: spender.txid,
                height,
            });
        } else {
            return Err(Rejection::MissingInput { vin, outpoint });
        };
        if let Some(spender) = mempool.spender(&outpoint) {
            conflicts.insert(spender.txid);
            first_conflict.get_or_insert((vin, outpoint, spender.txid));
        }
        prevouts.push(txout);
        coin_heights.push(coin_height);
    }

    let inputs: u64 = prevouts.iter().map(|txout| txout.value.to_sat()).sum();
    if outputs > inputs {
        return Err(Rejection::NegativeFee { inputs, outputs });
    }
    let fee = inputs - outputs;

    let evicts = mempool.with_descendants(&conflicts);
    if let Some((vin, outpoint)) = tx
        .input
        .iter()
        .enumerate()
        .find(|(_, input)| evicts.contains(&input.previous_output.txid))
        .map(|(vin, input)| (vin, input.previous_output))
    {
        return Err(Rejection::SpendsReplaced {
            vin,
            outpoint,
            parent: outpoint.txid,
        });
    }
    if let Some((vin, outpoint, spender)) = first_conflict {
        let evicted_fee: u64 = evicts
            .iter()
            .filter_map(|txid| mempool.get(txid))
            .map(|entry| entry.fee.to_sat())
            .sum();
        if fee <= evicted_fee {
            return Err(Rejection::InsufficientReplacementFee {
                vin,
                outpoint,
                spender,
                evicted_fee,
                evicted_count: evicts.len(),
                fee,
            });
        }
    }

    check_final(tx, next_height, median_time_past)?;
    check_sequence_locks(chain, tx, &coin_heights, next_height, median_time_past)?;
    check_scripts(tx, &prevouts)?;

    Ok(Checked::New(Accepted {
        txid,
        fee: Amount::from_sat(fee),
        prevouts,
        evicts,
    }))
}

/// Absolute locktime, as Bitcoin Core's `IsFinalTx` for the next block with median time past.
fn check_final(tx: &Transaction, next_height: u32, median_time_past: u32) -> Result<(), Rejection> {
    let locktime = tx.lock_time.to_consensus_u32();
    if locktime == 0 || tx.input.iter().all(|input| input.sequence.0 == u32::MAX) {
        return Ok(());
    }
    if locktime < absolute::LOCK_TIME_THRESHOLD {
        if locktime < next_height {
            return Ok(());
        }
        Err(Rejection::LocktimeHeight {
            locktime,
            next_height,
            blocks_needed: locktime - next_height + 1,
        })
    } else if locktime < median_time_past {
        Ok(())
    } else {
        Err(Rejection::LocktimeTime {
            locktime,
            median_time_past,
        })
    }
}

/// BIP68 relative timelocks, as Bitcoin Core's `CalculateSequenceLocks` for the next block.
fn check_sequence_locks(
    chain: &Chain,
    tx: &Transaction,
    coin_heights: &[u32],
    next_height: u32,
    median_time_past: u32,
) -> Result<(), Rejection> {
    if tx.version.0 < 2 {
        return Ok(());
    }
    for (vin, (input, &coin_height)) in tx.input.iter().zip(coin_heights).enumerate() {
        let sequence = input.sequence.0;
        if sequence & SEQUENCE_LOCKTIME_DISABLE_FLAG != 0 {
            continue;
        }
        let value = sequence & SEQUENCE_LOCKTIME_MASK;
        if sequence & SEQUENCE_LOCKTIME_TYPE_FLAG != 0 {
            let coin_time =
                chain.median_time_past(coin_height.saturating_sub(1).min(chain.tip_height()));
            let seconds = value << SEQUENCE_LOCKTIME_GRANULARITY;
            let min_time = i64::from(coin_time) + i64::from(seconds) - 1;
            if min_time >= i64::from(median_time_past) {
                return Err(Rejection::RelativeTime {
                    vin,
                    seconds,
                    min_time,
                    median_time_past,
                });
            }
        } else {
            let min_height = i64::from(coin_height) + i64::from(value) - 1;
            if min_height >= i64::from(next_height) {
                let blocks_needed = u32::try_from(min_height - i64::from(next_height) + 1)
                    .expect("a 16-bit lock needs few blocks");
                return Err(Rejection::RelativeHeight {
                    vin,
                    blocks: value,
                    coin_height,
                    next_height,
                    blocks_needed,
                });
            }
        }
    }
    Ok(())
}

/// Every input's script, verified by libbitcoinconsensus.
fn check_scripts(tx: &Transaction, prevouts: &[TxOut]) -> Result<(), Rejection> {
    let serialized = encode::serialize(tx);
    for (vin, (input, prevout)) in tx.input.iter().zip(prevouts).enumerate() {
        let outpoint = input.previous_output;
        let script = &prevout.script_pubkey;
        if script.is_p2tr() {
            return Err(Rejection::Taproot { vin, outpoint });
        }
        if let Err(err) = script.verify_with_flags(vin, prevout.value, &serialized, SCRIPT_FLAGS) {
            return Err(Rejection::Script {
                vin,
                outpoint,
                script_type: script_type(script),
                value: prevout.value.to_sat(),
                detail: format!("{err:?}"),
            });
        }
    }
    Ok(())
}

fn script_type(script: &bitcoin::Script) -> &'static str {
    if script.is_p2wpkh() {
        "P2WPKH"
    } else if script.is_p2wsh() {
        "P2WSH"
    } else if script.is_p2pkh() {
        "P2PKH"
    } else if script.is_p2sh() {
        "P2SH"
    } else if script.is_p2pk() {
        "P2PK"
    } else if script.is_op_return() {
        "OP_RETURN"
    } else {
        "non-standard"
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::{ScriptBuf, Sequence, TxIn, Witness, transaction};

    use super::*;

    fn tx(lock_time: u32, sequence: u32) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::from_consensus(lock_time),
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence(sequence),
                witness: Witness::new(),
            }],
            output: Vec::new(),
        }
    }

    #[test]
    fn height_locktime_is_final_below_the_next_height() {
        assert!(check_final(&tx(0, 0), 10, 0).is_ok());
        assert!(check_final(&tx(9, 0), 10, 0).is_ok());
        assert!(matches!(
            check_final(&tx(10, 0), 10, 0),
            Err(Rejection::LocktimeHeight {
                blocks_needed: 1,
                ..
            })
        ));
        // Final sequences disable the locktime.
        assert!(check_final(&tx(10, u32::MAX), 10, 0).is_ok());
    }

    #[test]
    fn time_locktime_compares_with_median_time_past() {
        let lock = 1_700_000_000;
        assert!(check_final(&tx(lock, 0), 1, lock + 1).is_ok());
        assert!(matches!(
            check_final(&tx(lock, 0), 1, lock),
            Err(Rejection::LocktimeTime { .. })
        ));
    }

    #[test]
    fn relative_height_lock_counts_confirmations_at_the_next_block() {
        let chain = Chain::new();
        // A coin confirmed at height 5 with a 3-block lock is spendable in block 8 (3 confs).
        let locked = tx(0, 3);
        assert!(check_sequence_locks(&chain, &locked, &[5], 8, 0).is_ok());
        assert!(matches!(
            check_sequence_locks(&chain, &locked, &[5], 7, 0),
            Err(Rejection::RelativeHeight {
                blocks_needed: 1,
                ..
            })
        ));
        // The disable flag and version 1 switch BIP68 off.
        assert!(
            check_sequence_locks(
                &chain,
                &tx(0, 3 | SEQUENCE_LOCKTIME_DISABLE_FLAG),
                &[5],
                7,
                0
            )
            .is_ok()
        );
        let mut version_one = locked.clone();
        version_one.version = transaction::Version::ONE;
        assert!(check_sequence_locks(&chain, &version_one, &[5], 7, 0).is_ok());
    }
}
