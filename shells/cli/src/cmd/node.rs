//! The node's commands: `invoice`, `pay`, `refund`, `balance`, `payments`, `channels`,
//! `onchain`, `info`. Each runs on the store's master: through this device's `till run`, or
//! through the server's hub when no till runs here. `balance --replica` and `payments --replica`
//! read this device's replica instead, without a master.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use till_engine::{HubCommand, Till, parse_invoice, payment_json};

use super::device::{self, engine_failure, node_command};
use crate::control::{self, Request};
use crate::output::Output;
use crate::{Config, Failure};

/// `till invoice`.
#[derive(Debug, Args)]
pub struct InvoiceArgs {
    /// The amount in satoshis.
    amount_sat: u64,
    /// Shown in the customer's wallet.
    #[arg(long, short, default_value = "")]
    description: String,
    /// Seconds until the invoice expires.
    #[arg(long, default_value_t = 3600)]
    expiry_secs: u32,
}

/// `till pay`.
#[derive(Debug, Args)]
pub struct PayArgs {
    /// The BOLT11 invoice to pay.
    invoice: String,
    /// The amount in millisatoshis, for an invoice without one.
    #[arg(long)]
    amount_msat: Option<u64>,
    /// Return once the payment is sent instead of waiting for its outcome.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the outcome, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// `till refund`.
#[derive(Debug, Args)]
pub struct RefundArgs {
    /// The received payment to refund (its id, 64 hex digits, as `till payments` shows).
    payment_id: String,
    /// The customer's invoice to pay the refund to.
    invoice: String,
    /// The amount in millisatoshis, for an invoice without one.
    #[arg(long)]
    amount_msat: Option<u64>,
}

/// `till balance` and `till payments`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Read this device's replica (as of its last sync) instead of asking the master.
    #[arg(long)]
    replica: bool,
}

/// `till channels`.
#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// The node's channels.
    List,
    /// Opens a channel to a peer.
    Open {
        /// The peer: NODE_ID@HOST:PORT.
        peer: String,
        /// The channel's capacity in satoshis.
        capacity_sat: u64,
        /// Give the peer this much at opening, in millisatoshis.
        #[arg(long)]
        push_msat: Option<u64>,
    },
    /// Closes a channel (cooperatively unless --force).
    Close {
        /// The channel's local id, as `till channels list` shows it.
        user_channel_id: String,
        /// The peer's node id.
        counterparty: String,
        /// Broadcast the latest state now (the funds come back after a time lock).
        #[arg(long)]
        force: bool,
    },
}

/// `till onchain`.
#[derive(Debug, Subcommand)]
pub enum OnchainCommand {
    /// A fresh address to receive on chain.
    Address,
    /// Syncs the wallets with the chain now (the node also does it in the background).
    Sync,
    /// Sends on chain.
    Send {
        /// Where to.
        address: String,
        /// How much, in satoshis.
        amount_sat: u64,
    },
}

fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

pub fn invoice(config: &Config, out: &Output, args: InvoiceArgs) -> Result<(), Failure> {
    if args.amount_sat == 0 {
        return Err(Failure::Usage("the amount must be at least 1 sat".into()));
    }
    let v = node_command(
        config,
        HubCommand::CreateInvoice {
            amount_sat: args.amount_sat,
            description: args.description,
            expiry_secs: args.expiry_secs,
        },
    )?;
    out.emit(&v, || {
        format!(
            "{}\npayment id {}",
            str_field(&v, "bolt11"),
            str_field(&v, "payment_id")
        )
    });
    Ok(())
}

/// Waits for a payment's outcome by asking the master for its payments.
fn wait_outcome(config: &Config, id: &str, timeout: Duration) -> Result<Value, Failure> {
    let started = Instant::now();
    loop {
        let list = node_command(config, HubCommand::Payments)?;
        let found = list
            .as_array()
            .and_then(|l| l.iter().rev().find(|p| str_field(p, "payment_id") == id))
            .cloned();
        if let Some(p) = &found
            && str_field(p, "status") != "pending"
        {
            return Ok(p.clone());
        }
        if started.elapsed() >= timeout {
            return Err(Failure::Failed(anyhow::anyhow!(
                "payment {id} is still pending after {} s; `till payments` shows its outcome later",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn pay(config: &Config, out: &Output, args: PayArgs) -> Result<(), Failure> {
    // A malformed invoice is the caller's mistake: say so before asking anyone.
    parse_invoice(&args.invoice).map_err(engine_failure)?;
    let sent = node_command(
        config,
        HubCommand::Pay {
            bolt11: args.invoice.trim().to_owned(),
            amount_msat: args.amount_msat,
        },
    )?;
    let id = str_field(&sent, "payment_id").to_owned();
    if args.no_wait {
        out.emit(&sent, || format!("sent; payment id {id}"));
        return Ok(());
    }
    let outcome = wait_outcome(config, &id, Duration::from_secs(args.timeout_secs))?;
    let status = str_field(&outcome, "status").to_owned();
    out.emit(&outcome, || {
        format!(
            "payment {id} {status}: {} msat, fee {} msat",
            outcome["amount_msat"], outcome["fee_paid_msat"]
        )
    });
    if status == "failed" {
        return Err(Failure::Failed(anyhow::anyhow!("payment {id} failed")));
    }
    Ok(())
}

pub fn refund(config: &Config, out: &Output, args: RefundArgs) -> Result<(), Failure> {
    parse_invoice(&args.invoice).map_err(engine_failure)?;
    if args.payment_id.len() != 64 || !args.payment_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::Usage(format!(
            "{:?} is not a payment id (64 hex digits, as `till payments` shows)",
            args.payment_id
        )));
    }
    let v = node_command(
        config,
        HubCommand::Refund {
            payment_id: args.payment_id.to_lowercase(),
            bolt11: args.invoice.trim().to_owned(),
            amount_msat: args.amount_msat,
        },
    )?;
    out.emit(&v, || {
        format!(
            "refund sent; its payment id {} (refunds {})",
            str_field(&v, "payment_id"),
            args.payment_id
        )
    });
    Ok(())
}

/// Balances from the replica's channel monitors (a follower's view, without the master).
pub fn replica_balances(till: &Till) -> Result<Value, till_engine::Error> {
    let b = till.replica_balances()?;
    let channels: Vec<Value> = b
        .channels
        .iter()
        .map(|c| {
            json!({
                "channel_id": c.channel_id.to_string(),
                "counterparty": c.counterparty.to_string(),
                "claimable_sat": c.claimable_sats,
            })
        })
        .collect();
    Ok(json!({
        "lightning_sats": b.lightning_sats,
        "channels": channels,
        "as_of_seq": till.log().head().map(|h| h.seq).unwrap_or(0),
        "source": "replica",
    }))
}

/// Payments from the replica's records (a follower's view, without the master).
pub fn replica_payments(till: &Till) -> Result<Value, till_engine::Error> {
    Ok(Value::Array(
        till.payments()?
            .into_iter()
            .map(|p| payment_json(&p))
            .collect(),
    ))
}

/// Opens the till alone (no daemon here), syncs it if the server answers, and reads it.
fn read_replica(
    config: &Config,
    read: impl FnOnce(&Till) -> Result<Value, till_engine::Error>,
) -> Result<Value, Failure> {
    let (till, _) = device::open_till(config)?;
    if let Err(e) = device::sync_showing_progress(&till) {
        config.log(format_args!(
            "replica read without a sync ({e}); showing the last one"
        ));
    }
    read(&till).map_err(engine_failure)
}

pub fn balance(config: &Config, out: &Output, args: ReadArgs) -> Result<(), Failure> {
    if args.replica {
        let v = control::call_or(config, &Request::ReplicaBalances, || {
            read_replica(config, replica_balances)
        })?;
        out.emit(&v, || {
            format!(
                "lightning {} sat in {} channels (this device's replica, as of seq {})",
                v["lightning_sats"],
                v["channels"].as_array().map_or(0, Vec::len),
                v["as_of_seq"]
            )
        });
        return Ok(());
    }
    let v = node_command(config, HubCommand::Balances)?;
    out.emit(&v, || {
        format!(
            "lightning {} sat\non chain {} sat ({} spendable)\npending {} sat",
            v["lightning_sats"], v["onchain_sats"], v["onchain_spendable_sats"], v["pending_sats"]
        )
    });
    Ok(())
}

pub fn payments(config: &Config, out: &Output, args: ReadArgs) -> Result<(), Failure> {
    let list = if args.replica {
        control::call_or(config, &Request::ReplicaPayments, || {
            read_replica(config, replica_payments)
        })?
    } else {
        node_command(config, HubCommand::Payments)?
    };
    let list = list.as_array().cloned().unwrap_or_default();
    if out.json() {
        for p in &list {
            out.emit(p, String::new);
        }
    } else if list.is_empty() {
        crate::output::outln!("no payments yet");
    } else {
        for p in &list {
            crate::output::outln!(
                "{}  {:<8}  {:<9}  {:>12} msat  fee {} msat",
                str_field(p, "payment_id"),
                str_field(p, "direction"),
                str_field(p, "status"),
                p["amount_msat"],
                p["fee_paid_msat"]
            );
        }
    }
    Ok(())
}

pub fn channels(config: &Config, out: &Output, command: ChannelsCommand) -> Result<(), Failure> {
    match command {
        ChannelsCommand::List => {
            let list = node_command(config, HubCommand::Channels)?;
            let list = list.as_array().cloned().unwrap_or_default();
            if out.json() {
                for c in &list {
                    out.emit(c, String::new);
                }
            } else if list.is_empty() {
                crate::output::outln!("no channels");
            } else {
                for c in &list {
                    crate::output::outln!(
                        "{}  peer {}  {} sat  out {} msat  in {} msat  {}",
                        str_field(c, "user_channel_id"),
                        str_field(c, "counterparty"),
                        c["capacity_sat"],
                        c["outbound_msat"],
                        c["inbound_msat"],
                        if c["usable"] == true {
                            "usable"
                        } else if c["ready"] == true {
                            "ready"
                        } else {
                            "pending"
                        }
                    );
                }
            }
        }
        ChannelsCommand::Open {
            peer,
            capacity_sat,
            push_msat,
        } => {
            let (node_id, address) = peer.split_once('@').ok_or_else(|| {
                Failure::Usage(format!("{peer:?} is not a peer (NODE_ID@HOST:PORT)"))
            })?;
            let v = node_command(
                config,
                HubCommand::OpenChannel {
                    node_id: node_id.to_owned(),
                    address: address.to_owned(),
                    capacity_sat,
                    push_msat,
                },
            )?;
            out.emit(&v, || {
                format!(
                    "opening channel {} ({capacity_sat} sat); it is usable once confirmed",
                    str_field(&v, "user_channel_id")
                )
            });
        }
        ChannelsCommand::Close {
            user_channel_id,
            counterparty,
            force,
        } => {
            let v = node_command(
                config,
                HubCommand::CloseChannel {
                    user_channel_id: user_channel_id.clone(),
                    counterparty,
                    force,
                },
            )?;
            out.emit(&v, || format!("closing channel {user_channel_id}"));
        }
    }
    Ok(())
}

pub fn onchain(config: &Config, out: &Output, command: OnchainCommand) -> Result<(), Failure> {
    match command {
        OnchainCommand::Address => {
            let v = node_command(config, HubCommand::NewAddress)?;
            out.emit(&v, || str_field(&v, "address").to_owned());
        }
        OnchainCommand::Sync => {
            let spinner = crate::output::spinner("syncing the wallets with the chain".into());
            let v = node_command(config, HubCommand::SyncWallets);
            spinner.finish_and_clear();
            let v = v?;
            out.emit(&v, || format!("synced at block {}", v["block_height"]));
        }
        OnchainCommand::Send {
            address,
            amount_sat,
        } => {
            let v = node_command(
                config,
                HubCommand::SendOnchain {
                    address,
                    amount_sat,
                },
            )?;
            out.emit(&v, || format!("sent; txid {}", str_field(&v, "txid")));
        }
    }
    Ok(())
}

pub fn info(config: &Config, out: &Output) -> Result<(), Failure> {
    let v = node_command(config, HubCommand::Info)?;
    out.emit(&v, || {
        format!(
            "node {}\nnetwork {}, block {}\n{} channels, {} peers\ndevice {}",
            str_field(&v, "node_id"),
            str_field(&v, "network"),
            v["block_height"],
            v["channels"],
            v["peers"],
            str_field(&v, "device_id")
        )
    });
    Ok(())
}
