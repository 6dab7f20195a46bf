//! Helpers shared by the devnet's integration tests: a P2WPKH key that signs, and raw HTTP calls
//! that keep the status code and body for format checks.

#![allow(dead_code)] // Each test binary uses a different subset.

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, PrivateKey, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness, absolute, transaction,
};
use serde_json::Value;
use till_devnet::Devnet;

/// A P2WPKH key derived from a label, so every run uses the same addresses.
pub struct Key {
    secp: Secp256k1<All>,
    secret: SecretKey,
    pub pubkey: CompressedPublicKey,
    pub address: Address,
}

impl Key {
    pub fn new(label: &str) -> Self {
        let secp = Secp256k1::new();
        let seed = sha256::Hash::hash(label.as_bytes()).to_byte_array();
        let secret = SecretKey::from_slice(&seed).unwrap();
        let pubkey = CompressedPublicKey::from_private_key(
            &secp,
            &PrivateKey::new(secret, Network::Regtest),
        )
        .unwrap();
        let address = Address::p2wpkh(&pubkey, Network::Regtest);
        Self {
            secp,
            secret,
            pubkey,
            address,
        }
    }

    pub fn script(&self) -> ScriptBuf {
        self.address.script_pubkey()
    }

    /// Signs every input, each spending one of this key's P2WPKH outputs.
    pub fn sign(&self, tx: &mut Transaction, prevouts: &[TxOut]) {
        let mut witnesses = Vec::new();
        let mut cache = SighashCache::new(&*tx);
        for (index, prevout) in prevouts.iter().enumerate() {
            let sighash = cache
                .p2wpkh_signature_hash(
                    index,
                    &prevout.script_pubkey,
                    prevout.value,
                    EcdsaSighashType::All,
                )
                .unwrap();
            let signature = self.secp.sign_ecdsa(&Message::from(sighash), &self.secret);
            let signature = bitcoin::ecdsa::Signature {
                signature,
                sighash_type: EcdsaSighashType::All,
            };
            witnesses.push(Witness::p2wpkh(&signature, &self.pubkey.0));
        }
        for (input, witness) in tx.input.iter_mut().zip(witnesses) {
            input.witness = witness;
        }
    }

    /// A signed transaction spending `coin` (one of this key's outputs) to `to`, paying `fee`.
    pub fn spend(&self, coin: &Coin, to: ScriptBuf, fee: Amount) -> Transaction {
        self.spend_with(coin, to, fee, |_| {})
    }

    /// As [`Key::spend`], with `adjust` applied before signing (locktimes, sequences, version).
    pub fn spend_with(
        &self,
        coin: &Coin,
        to: ScriptBuf,
        fee: Amount,
        adjust: impl FnOnce(&mut Transaction),
    ) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: coin.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: coin.txout.value - fee,
                script_pubkey: to,
            }],
        };
        adjust(&mut tx);
        self.sign(&mut tx, std::slice::from_ref(&coin.txout));
        tx
    }
}

/// An output and what it holds.
#[derive(Clone, Debug)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub txout: TxOut,
}

/// An HTTP answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }
}

pub async fn get(devnet: &Devnet, path: &str) -> Answer {
    let response = reqwest::get(format!("{}{path}", devnet.url()))
        .await
        .unwrap();
    answer(response).await
}

pub async fn post(devnet: &Devnet, path: &str, body: impl Into<reqwest::Body>) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", devnet.url()))
        .body(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.unwrap().to_vec();
    Answer {
        status,
        body,
        content_type,
    }
}

/// Broadcasts `tx` with `POST /tx`.
pub async fn broadcast(devnet: &Devnet, tx: &Transaction) -> Answer {
    post(devnet, "/tx", bitcoin::consensus::encode::serialize_hex(tx)).await
}

/// The confirmed or mempool transaction `txid`, decoded from `/tx/:txid/raw`.
pub async fn raw_tx(devnet: &Devnet, txid: &Txid) -> Transaction {
    let answer = get(devnet, &format!("/tx/{txid}/raw")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    bitcoin::consensus::encode::deserialize(&answer.body).unwrap()
}

/// Pays `amount` from the faucet to `key` and returns the new coin (unconfirmed).
pub async fn fund(devnet: &Devnet, key: &Key, amount: Amount) -> Coin {
    let txid = devnet.faucet(&key.address, amount).unwrap();
    let tx = raw_tx(devnet, &txid).await;
    let vout = tx
        .output
        .iter()
        .position(|txout| txout.script_pubkey == key.script())
        .unwrap();
    Coin {
        outpoint: OutPoint {
            txid,
            vout: vout as u32,
        },
        txout: tx.output[vout].clone(),
    }
}

/// Mines one block paying its coinbase to `key` and returns the coinbase output.
pub async fn mine_coinbase_to(devnet: &Devnet, key: &Key) -> Coin {
    let hash = devnet.mine(1, Some(&key.address)).unwrap()[0];
    let answer = get(devnet, &format!("/block/{hash}/txids")).await;
    let coinbase: Txid = answer.json()[0].as_str().unwrap().parse().unwrap();
    let tx = raw_tx(devnet, &coinbase).await;
    Coin {
        outpoint: OutPoint {
            txid: coinbase,
            vout: 0,
        },
        txout: tx.output[0].clone(),
    }
}
