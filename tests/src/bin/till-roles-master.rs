//! Child process for the engine roles test: a Till master that is killed (SIGKILL) mid-stream,
//! or whose power is cut.
//!
//! Configured from the environment: `TILL_ROLES_LOG` (log file; restored from the server when it
//! does not exist yet), `TILL_ROLES_STORAGE`, `TILL_ROLES_LISTEN`, `TILL_ROLES_ESPLORA`,
//! `TILL_ROLES_VSS`, `TILL_ROLES_TOKEN`, `TILL_ROLES_MNEMONIC` (never printed). Acquires the
//! lease (with `TILL_ROLES_TAKEOVER` set, takes it over from a lost device when another holds
//! it), starts the node, prints `aligned ...` (what the build set back in the channel monitors)
//! and `ready`. With `TILL_ROLES_POWER_CUT` (a path), the log lives on a [`Disk`] in memory
//! whose power is cut when that file appears: what the cut left goes to the log file, and the
//! process prints `power-cut` and waits to be killed. Then reads commands from stdin:
//! - `invoice MSAT` prints `invoice BOLT11`, or `not-invoiced REASON` when the disk is too full
//!   for new sales (`TILL_ROLES_MIN_FREE_DISK`, bytes, sets the floor; 64 MiB by default);
//! - `pay BOLT11` starts paying and prints `paying PAYMENT_ID` (the outcome comes as an event),
//!   or `not-paying REASON` when it cannot start;
//! - `handoff` hands the till off and prints `handed-off`;
//! - `balance` prints `balance SATS` (lightning);
//! - `verify` checks the local chain against the server's head and prints `verified STATUS`;
//! - `role` prints `role ROLE` (master, or why not), which never fails.
//!
//! Events: `received PAYMENT_ID` once the till's event loop recorded a received payment, `sent
//! PAYMENT_ID` and `failed PAYMENT_ID` for its own payments, `closed CHANNEL_ID` for a closed
//! channel. Errors print `error ...` and exit 1.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldk_node::Event;
use ldk_node::bitcoin::Network;
use till_engine::{
    Audit, BackupConfig, Error, Keys, NodeConfig, ReplicatorConfig, TakeoverConfirmed, Till,
    TillConfig,
};
use till_log::{Log, LogOptions};
use till_tests::power_cut::Disk;
use till_vss::{ClientConfig, RetryPolicy};

/// The log's disk for `TILL_ROLES_POWER_CUT`: the file's bytes (if it exists) on a [`Disk`] in
/// memory, full while a file named like the trigger plus `.full` exists, and whose power is cut
/// once the trigger file appears. The cut writes what it left to the
/// file, synced, prints `power-cut` and holds the disk until the test SIGKILLs the process.
fn power_cut_disk(log: &Path, trigger: PathBuf) -> (bool, Disk) {
    let existed = log.exists();
    let bytes = if existed {
        std::fs::read(log).unwrap_or_else(|e| fail(&format!("reading the log: {e}")))
    } else {
        Vec::new()
    };
    let disk = Disk::with_image(bytes, rand::random());
    let path = log.to_owned();
    disk.on_cut(move |image| {
        let mut temp = path.clone().into_os_string();
        temp.push(".cut");
        let mut file = std::fs::File::create(&temp).expect("creating the cut's image");
        file.write_all(image).expect("writing the cut's image");
        file.sync_all().expect("syncing the cut's image");
        std::fs::rename(&temp, &path).expect("putting the cut's image in place");
        println!("power-cut");
        loop {
            std::thread::park();
        }
    });
    let watched = disk.clone();
    let mut full = trigger.clone().into_os_string();
    full.push(".full");
    let full = PathBuf::from(full);
    std::thread::spawn(move || {
        while !trigger.exists() {
            watched.set_full(full.exists());
            std::thread::sleep(Duration::from_millis(1));
        }
        watched.cut_now();
    });
    (existed, disk)
}

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
    if let Ok(floor) = std::env::var("TILL_ROLES_MIN_FREE_DISK") {
        node.min_free_disk = floor
            .parse()
            .unwrap_or_else(|_| fail("TILL_ROLES_MIN_FREE_DISK is not a number of bytes"));
    }
    let mut backup = BackupConfig::new(var("TILL_ROLES_VSS"), var("TILL_ROLES_TOKEN"));
    backup.client = ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
    };
    let remote = till_engine::remote(&keys, &backup).unwrap_or_else(|e| fail(&e.to_string()));
    let mut config = TillConfig::new(node, backup);
    config.replicator = ReplicatorConfig {
        backoff_max: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    };
    let till = match std::env::var_os("TILL_ROLES_POWER_CUT") {
        None if log.exists() => Till::open(&log, keys, config),
        None => Till::restore(&log, keys, config, |_| {}),
        Some(trigger) => {
            let (existed, disk) = power_cut_disk(&log, PathBuf::from(trigger));
            let opened = Log::open_on(disk, LogOptions::default())
                .unwrap_or_else(|e| fail(&format!("the log does not open: {e}")));
            if existed {
                Till::open_log(Arc::new(opened), keys, config)
            } else {
                Till::restore_log(Arc::new(opened), keys, config, |_| {})
            }
        }
    }
    .unwrap_or_else(|e| fail(&e.to_string()));
    let acquired = match till.acquire() {
        Err(Error::LeaseHeld { .. }) if std::env::var_os("TILL_ROLES_TAKEOVER").is_some() => {
            till.takeover(TakeoverConfirmed::confirmed_by_user())
        }
        other => other,
    };
    acquired.unwrap_or_else(|e| fail(&e.to_string()));
    let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
    println!("aligned {:?}", node.alignment());
    let mut events = node.subscribe();
    std::thread::spawn(move || {
        while let Ok(event) = events.blocking_recv() {
            match event {
                Event::PaymentReceived {
                    payment_id: Some(id),
                    ..
                } => println!("received {}", hex(&id.0)),
                Event::PaymentSuccessful {
                    payment_id: Some(id),
                    ..
                } => println!("sent {}", hex(&id.0)),
                Event::PaymentFailed {
                    payment_id: Some(id),
                    ..
                } => println!("failed {}", hex(&id.0)),
                Event::ChannelClosed { channel_id, .. } => println!("closed {channel_id}"),
                _ => {}
            }
        }
    });
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(&e.to_string()));
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("invoice"), Some(msat)) => {
                let msat = msat
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("not an amount: {msat}")));
                let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
                match node.create_invoice(msat, "sale", 600) {
                    Ok(invoice) => println!("invoice {}", invoice.invoice),
                    Err(e @ Error::DiskNearlyFull { .. }) => println!("not-invoiced {e}"),
                    Err(e) => fail(&e.to_string()),
                }
            }
            (Some("pay"), Some(invoice)) => {
                let invoice =
                    till_engine::parse_invoice(invoice).unwrap_or_else(|e| fail(&e.to_string()));
                let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
                match node.pay(&invoice, None) {
                    Ok(id) => println!("paying {}", hex(&id.0)),
                    // Not fatal: the channel may not be usable from this side yet.
                    Err(e) => println!("not-paying {e}"),
                }
            }
            (Some("handoff"), None) => {
                till.handoff().unwrap_or_else(|e| fail(&e.to_string()));
                println!("handed-off");
            }
            (Some("balance"), None) => {
                let node = till.node().unwrap_or_else(|e| fail(&e.to_string()));
                println!("balance {}", node.balances().lightning_sats);
            }
            (Some("verify"), None) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| fail(&e.to_string()));
                let check = runtime
                    .block_on(Audit::new(till.log()).verify_remote(&remote))
                    .unwrap_or_else(|e| fail(&e.to_string()));
                println!("verified {:?}", check.status);
            }
            (Some("role"), None) => println!("role {:?}", till.role()),
            _ => fail(&format!("unknown command {line:?}")),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
