//! Accepted, unconfirmed transactions, in the order they were accepted.
//!
//! That order is topological: a transaction is only accepted once its unconfirmed parents are here,
//! and evicting a transaction evicts its descendants with it.

use std::collections::{BTreeSet, HashMap};

use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};

use crate::chain::Spender;

pub(crate) struct Entry {
    pub(crate) tx: Transaction,
    pub(crate) fee: Amount,
    /// The outputs this transaction spends, by input, for the `prevout` fields of `Tx` JSON.
    pub(crate) prevouts: Vec<TxOut>,
}

#[derive(Default)]
pub(crate) struct Mempool {
    order: Vec<Txid>,
    entries: HashMap<Txid, Entry>,
    spends: HashMap<OutPoint, Spender>,
}

impl Mempool {
    pub(crate) fn get(&self, txid: &Txid) -> Option<&Entry> {
        self.entries.get(txid)
    }

    pub(crate) fn spender(&self, outpoint: &OutPoint) -> Option<Spender> {
        self.spends.get(outpoint).copied()
    }

    /// Entries in acceptance (topological) order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&Txid, &Entry)> {
        self.order.iter().map(|txid| (txid, &self.entries[txid]))
    }

    pub(crate) fn insert(&mut self, txid: Txid, entry: Entry) {
        for (vin, input) in entry.tx.input.iter().enumerate() {
            let vin = u32::try_from(vin).expect("input index fits in u32");
            self.spends
                .insert(input.previous_output, Spender { txid, vin });
        }
        self.order.push(txid);
        self.entries.insert(txid, entry);
    }

    /// `roots` and every mempool transaction that spends, directly or not, from one of them.
    pub(crate) fn with_descendants(&self, roots: &BTreeSet<Txid>) -> BTreeSet<Txid> {
        let mut all = roots.clone();
        // Acceptance order is topological, so one pass in order finds every descendant.
        for txid in &self.order {
            let entry = &self.entries[txid];
            if entry
                .tx
                .input
                .iter()
                .any(|input| all.contains(&input.previous_output.txid))
            {
                all.insert(*txid);
            }
        }
        all
    }

    /// Removes the given transactions (the caller includes descendants when evicting).
    pub(crate) fn remove(&mut self, txids: &BTreeSet<Txid>) {
        for txid in txids {
            if let Some(entry) = self.entries.remove(txid) {
                for input in &entry.tx.input {
                    if self.spends.get(&input.previous_output).map(|s| s.txid) == Some(*txid) {
                        self.spends.remove(&input.previous_output);
                    }
                }
            }
        }
        self.order.retain(|txid| !txids.contains(txid));
    }

    /// Empties the mempool, returning its transactions in acceptance order.
    pub(crate) fn drain(&mut self) -> Vec<Transaction> {
        let order = std::mem::take(&mut self.order);
        self.spends.clear();
        let mut entries = std::mem::take(&mut self.entries);
        order
            .iter()
            .filter_map(|txid| entries.remove(txid))
            .map(|entry| entry.tx)
            .collect()
    }
}
