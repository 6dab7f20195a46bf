//! A development-only Bitcoin chain for Till's tests and demo.
//!
//! `till-devnet` is a regtest chain held in memory that speaks the Esplora HTTP subset ldk-node and
//! BDK use, so they can run against it as against a real chain where no Bitcoin Core binary is
//! available. It starts at the real regtest genesis block and mines real blocks (proof of work,
//! merkle root, BIP141 witness commitment, regtest subsidy). Its mempool accepts a transaction only
//! if every input exists and is unspent, every script verifies under Bitcoin Core's consensus
//! library, values add up, coinbases are mature and absolute and relative timelocks are met; a
//! conflicting spend must pay a higher fee. Control endpoints mine blocks, pay from a faucet and
//! reorganise the chain. docs/DEVNET.md lists every endpoint and rule.
//!
//! It is **not** a node: no peers, no persistence, fixed fee estimates. Real deployments point
//! ldk-node at a real Esplora, Electrum or bitcoind.
//!
//! ```no_run
//! # async fn demo() -> Result<(), till_devnet::Error> {
//! let devnet = till_devnet::Devnet::start("127.0.0.1:0").await?;
//! println!("Esplora at {}", devnet.url());
//! devnet.mine(1, None).expect("one block is within limits");
//! # Ok(()) }
//! ```

mod chain;
mod error;
mod http;
mod mempool;
mod state;
mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bitcoin::{Address, Amount, BlockHash, Txid};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::{ControlError, Error};
pub use state::Reorg;

use http::{MAX_BLOCKS_PER_REQUEST, Shared, lock};

/// How to run the devnet's server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen, such as `127.0.0.1:3002` (port 0 picks a free one).
    pub listen: String,
}

impl Config {
    pub fn new(listen: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
        }
    }
}

/// Serves a fresh devnet until `shutdown` completes. Prints the address it listens on to stderr,
/// labelled as a development chain.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (listener, addr) = bind(&config.listen).await?;
    eprintln!(
        "till-devnet: DEVELOPMENT regtest chain (in memory, worthless coins) serving Esplora at http://{addr}"
    );
    serve(
        listener,
        addr,
        Arc::new(Mutex::new(state::State::new())),
        shutdown,
    )
    .await
}

async fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        listen: listen.to_owned(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(listener, http::router(shared))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

/// A devnet running inside this process, for tests. Dropping it stops the server.
pub struct Devnet {
    addr: SocketAddr,
    url: String,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Devnet {
    /// Starts a fresh devnet on `listen` (such as `127.0.0.1:0`) on the current tokio runtime.
    pub async fn start(listen: &str) -> Result<Self, Error> {
        let (listener, addr) = bind(listen).await?;
        let shared: Shared = Arc::new(Mutex::new(state::State::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, addr, Arc::clone(&shared), async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            url: format!("http://{addr}"),
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The Esplora base URL, such as `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The height of the tip.
    pub fn height(&self) -> u32 {
        lock(&self.shared).chain.tip_height()
    }

    /// Mines `blocks` blocks including the mempool, paying to `address` or to the faucet, as
    /// `POST /devnet/mine`. Returns their hashes, oldest first.
    pub fn mine(
        &self,
        blocks: u32,
        address: Option<&Address>,
    ) -> Result<Vec<BlockHash>, ControlError> {
        mine(&self.shared, blocks, address)
    }

    /// Pays `amount` to `address` from the faucet, as `POST /devnet/faucet`. The payment waits in
    /// the mempool until the next mined block.
    pub fn faucet(&self, address: &Address, amount: Amount) -> Result<Txid, ControlError> {
        lock(&self.shared).faucet(address.script_pubkey(), amount)
    }

    /// Replaces the last `depth` blocks with `depth + 1` empty ones, as `POST /devnet/reorg`.
    pub fn reorg(&self, depth: u32) -> Result<Reorg, ControlError> {
        lock(&self.shared).reorg(depth)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            None => Ok(()),
            Some(task) => match task.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                // Cancelled: the runtime is shutting down, and the server with it.
                Err(_) => Ok(()),
            },
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn mine(
    shared: &Shared,
    blocks: u32,
    address: Option<&Address>,
) -> Result<Vec<BlockHash>, ControlError> {
    if blocks > MAX_BLOCKS_PER_REQUEST {
        return Err(ControlError::TooManyBlocks {
            requested: blocks,
            limit: MAX_BLOCKS_PER_REQUEST,
        });
    }
    Ok(lock(shared).mine(blocks, address.map(Address::script_pubkey)))
}
