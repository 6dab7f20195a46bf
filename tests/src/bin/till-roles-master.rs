//! Child process for the engine roles test: a Till master that is killed (SIGKILL) mid-stream.
//!
//! Configured from the environment: `TILL_ROLES_LOG` (log file; restored from the server when it
//! does not exist yet), `TILL_ROLES_STORAGE`, `TILL_ROLES_LISTEN`, `TILL_ROLES_ESPLORA`,
//! `TILL_ROLES_VSS`, `TILL_ROLES_TOKEN`, `TILL_ROLES_MNEMONIC` (never printed). Acquires the
//! lease, starts the node and prints `ready`. Then reads commands from stdin:
//! `invoice MSAT` prints `invoice BOLT11`. Prints `received PAYMENT_ID` once the till's event
//! loop has recorded a received payment. Errors print `error ...` and exit 1.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

use ldk_node::Event;
use ldk_node::bitcoin::Network;
use till_engine::{BackupConfig, Keys, NodeConfig, ReplicatorConfig, Till, TillConfig};
use till_vss::{ClientConfig, RetryPolicy};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(message: &str) -> ! {
    println!("error {message}");
    std::process::exit(1);
}

fn main() {
    let log = PathBuf::from(var("TILL_ROLES_LOG"));
    let keys = Keys::from_phrase(&var("TILL_ROLES_MNEMONIC"), None)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let listen = var("TILL_ROLES_LISTEN")
        .parse()
        .unwrap_or_else(|_| fail("TILL_ROLES_LISTEN is not an address"));
    let mut node = NodeConfig::new(
        Network::Regtest,
        var("TILL_ROLES_ESPLORA"),
        PathBuf::from(var("TILL_ROLES_STORAGE")),
    );
    node.listen = vec![listen];
    node.background_sync = false;
    let mut backup = BackupConfig::new(var("TILL_ROLES_VSS"), var("TILL_ROLES_TOKEN"));
    backup.client = ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
    };
    let mut config = TillConfig::new(node, backup);
    config.replicator = ReplicatorConfig {
        backoff_max: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    };
    let till = if log.exists() {
        Till::open(&log, keys, config)
    } else {
        Till::restore(&log, keys, config, |_| {})
    }
    .unwrap_or_else(|e| fail(&e.to_string()));
    till.acquire().unwrap_or_else(|e| fail(&e.to_string()));
    let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
    let mut events = node.subscribe();
    std::thread::spawn(move || {
        while let Ok(event) = events.blocking_recv() {
            if let Event::PaymentReceived {
                payment_id: Some(id),
                ..
            } = event
            {
                let hex: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
                println!("received {hex}");
            }
        }
    });
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(&e.to_string()));
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|w| w.parse::<u64>().ok()),
        ) {
            (Some("invoice"), Some(msat)) => {
                let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
                let invoice = node
                    .create_invoice(msat, "sale", 600)
                    .unwrap_or_else(|e| fail(&e.to_string()));
                println!("invoice {}", invoice.invoice);
            }
            _ => fail(&format!("unknown command {line:?}")),
        }
    }
}
