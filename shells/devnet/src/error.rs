//! The devnet's errors: starting the server, and the control operations tests and the demo call.

use std::io;
use std::net::SocketAddr;

/// Starting or running the devnet's HTTP server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound (in use, not local, or not an address).
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the devnet's HTTP server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A control request (`/devnet/mine`, `/devnet/faucet`, `/devnet/reorg`) was refused. Each is the
/// caller's to fix, except [`ControlError::Internal`], which is a devnet bug.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The address does not parse, or is not a regtest (`bcrt1...`) address.
    #[error("{address:?} is not a regtest address: {reason}")]
    BadAddress { address: String, reason: String },
    /// More blocks than one request may mine.
    #[error("cannot mine {requested} blocks in one request; the limit is {limit}")]
    TooManyBlocks { requested: u32, limit: u32 },
    /// The faucet does not pay dust.
    #[error("{amount_sat} sat is below the dust limit ({dust_sat} sat) for that address")]
    AmountBelowDust { amount_sat: u64, dust_sat: u64 },
    /// The faucet could not gather enough mature coins, even after mining to itself.
    #[error(
        "the faucet cannot pay {amount_sat} sat even after mining {blocks} blocks to itself; ask for less"
    )]
    FaucetExhausted { amount_sat: u64, blocks: u32 },
    /// A reorganisation must remove at least one block and cannot remove genesis.
    #[error(
        "cannot reorg {depth} blocks at height {height}; depth must be between 1 and the height"
    )]
    BadReorgDepth { depth: u32, height: u32 },
    /// The devnet refused a transaction it built itself.
    #[error("devnet bug: the devnet refused its own transaction: {0}")]
    Internal(String),
}
