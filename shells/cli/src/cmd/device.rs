//! What the device commands share: the wallet's keys, the backup and node settings, opening the
//! till, reaching the master, and mapping engine errors to exit codes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use till_engine::bitcoin::Network;
use till_engine::{
    BackupConfig, Error, HubClient, HubCommand, HubConfig, HubError, Keys, NodeConfig, Till,
    TillConfig,
};
use till_log::DeviceId;

use crate::config::Secrets;
use crate::control::{self, Request};
use crate::{Config, Failure};

/// How long a command waits to reach the server's hub.
const HUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Maps an engine error to the exit code it means: refusals (3) for what cannot be done now,
/// usage errors (2) for bad input, failures (1) for the rest.
pub fn engine_failure(e: Error) -> Failure {
    match e {
        Error::WrongKey
        | Error::NoBackup
        | Error::LeaseHeld { .. }
        | Error::Fenced { .. }
        | Error::NotMaster
        | Error::AlreadyRunning
        | Error::NotRefundable { .. }
        | Error::PaymentNotFound(_)
        | Error::DiskNearlyFull { .. } => Failure::Refused(e.to_string()),
        Error::InvalidMnemonic(_) | Error::InvalidInput(_) => Failure::Usage(e.to_string()),
        Error::Log(text) if text.contains("already open") || text.contains("in use") => {
            Failure::Refused(
                "the till's log is in use by a running `till run`; stop it first, or ask it \
                 (this command talks to it when it can)"
                    .to_owned(),
            )
        }
        other => Failure::Failed(anyhow::Error::new(other)),
    }
}

/// The wallet's keys from `secret.toml`.
pub fn keys(secrets: &Secrets) -> Result<Keys, Failure> {
    let phrase = secrets.mnemonic.as_deref().ok_or_else(|| {
        Failure::Refused(
            "there is no wallet on this device; run `till init` (a new till) or `till restore` \
             (an existing one) first"
                .to_owned(),
        )
    })?;
    Keys::from_phrase(phrase, secrets.passphrase.as_deref()).map_err(|_| {
        Failure::Failed(anyhow::anyhow!(
            "the wallet in secret.toml is damaged (not a valid mnemonic)"
        ))
    })
}

/// The server, store and token this device was paired with.
pub struct Pairing {
    pub server_url: String,
    pub store: String,
    pub token: String,
}

/// The pairing from the config and secrets, or a refusal saying how to pair.
pub fn pairing(config: &Config, secrets: &Secrets) -> Result<Pairing, Failure> {
    let not_paired = || {
        Failure::Refused(
            "this device is not paired with a till-server; run `till pair <invitation link>` \
             first (or set server_url and store in till.toml and TILL_TOKEN)"
                .to_owned(),
        )
    };
    Ok(Pairing {
        server_url: config.server_url.clone().ok_or_else(not_paired)?,
        store: config.store.clone().ok_or_else(not_paired)?,
        token: secrets.token.clone().ok_or_else(not_paired)?,
    })
}

/// The node and backup settings of this device.
pub fn till_config(config: &Config, pairing: &Pairing) -> Result<TillConfig, Failure> {
    let mut node = NodeConfig::new(
        config.network,
        config.esplora_url.clone(),
        config.data_dir.join("ldk"),
    );
    if let Some(listen) = &config.listen {
        let address = listen.parse().map_err(|_| {
            Failure::Usage(format!(
                "listen = {listen:?} in till.toml is not an address (host:port)"
            ))
        })?;
        node.listen = vec![address];
    }
    node.alias = config.alias.clone();
    node.min_free_disk = config.min_free_disk;
    let backup = BackupConfig::new(format!("{}/vss", pairing.server_url), pairing.token.clone());
    Ok(TillConfig::new(node, backup))
}

/// The till's network, recorded in its log by `till init` (so a restore learns it).
pub fn network_key() -> till_log::Key {
    till_log::Key::new("till", "config", "network")
}

/// The network to run on: the log's record, which the configuration may repeat but not
/// contradict.
pub fn resolve_network(config: &Config, log: &till_log::Log) -> Result<Network, Failure> {
    let recorded = log
        .get(&network_key())
        .map_err(|e| Failure::Failed(e.into()))?
        .map(|s| String::from_utf8_lossy(&s.value).into_owned());
    match recorded {
        None => Ok(config.network),
        Some(name) => {
            let recorded = crate::config::parse_network(&name).map_err(Failure::Failed)?;
            if config.network_explicit && recorded != config.network {
                return Err(Failure::Refused(format!(
                    "this till runs on {name} (its log says so), but the configuration says {};                      fix network in till.toml, TILL_NETWORK or --network",
                    network_name(config.network)
                )));
            }
            Ok(recorded)
        }
    }
}

/// Opens this device's till (a follower until it acquires).
pub fn open_till(config: &Config) -> Result<(Till, Pairing), Failure> {
    let secrets = Secrets::load(config).map_err(Failure::Failed)?;
    let keys = keys(&secrets)?;
    let pairing = pairing(config, &secrets)?;
    let network = resolve_network(config, &super::open_log(config)?)?;
    let mut config = config.clone();
    config.network = network;
    let config = &config;
    let till_config = till_config(config, &pairing)?;
    let till = Till::open(config.log_path(), keys, till_config).map_err(engine_failure)?;
    Ok((till, pairing))
}

/// Pulls what the backup has beyond this device's log ([`Till::sync`]), with a bar of the
/// segments on a terminal.
pub fn sync_showing_progress(till: &Till) -> Result<till_engine::SyncReport, Error> {
    let bar = crate::output::segments_bar("syncing");
    let synced = till.sync_with_progress(|p| crate::output::show_segments(&bar, "syncing", &p));
    bar.finish_and_clear();
    synced
}

/// This device's id, from its log (the log must exist and not be held by a daemon).
pub fn device_id(config: &Config) -> Result<DeviceId, Failure> {
    let log = super::open_log(config)?;
    till_engine::device_id(&log).map_err(engine_failure)
}

/// Runs a node command on the store's master: through this device's daemon when it runs
/// (which runs it itself when it is master), else through the server's hub.
pub fn node_command(config: &Config, command: HubCommand) -> Result<Value, Failure> {
    let request = Request::Command {
        command: command.clone(),
    };
    control::call_or(config, &request, || {
        let secrets = Secrets::load(config).map_err(Failure::Failed)?;
        let pairing = pairing(config, &secrets)?;
        let device = device_id(config)?;
        config.log(format_args!(
            "command {} through the hub of {} (no till running here)",
            kind(&command),
            pairing.server_url
        ));
        hub_command(&pairing, device, command)
    })
}

/// The command's kind, for log lines (never its fields: an invoice is not a secret, but a
/// log needs no more).
pub fn kind(command: &HubCommand) -> String {
    serde_json::to_value(command)
        .ok()
        .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Sends one command through the hub as `device` and waits for the master's answer.
pub fn hub_command(
    pairing: &Pairing,
    device: DeviceId,
    command: HubCommand,
) -> Result<Value, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(e.into()))?;
    runtime.block_on(async {
        let hub = HubClient::start(HubConfig::new(
            pairing.server_url.clone(),
            pairing.token.clone(),
            pairing.store.clone(),
            device,
            None,
        ));
        let status = hub
            .wait_for(HUB_CONNECT_TIMEOUT, |s| s.connected || s.refused.is_some())
            .await;
        let status = match status {
            Ok(s) => s,
            Err(s) => {
                hub.stop().await;
                return Err(Failure::Failed(anyhow::anyhow!(
                    "cannot reach the till-server at {} within {} s: {}",
                    pairing.server_url,
                    HUB_CONNECT_TIMEOUT.as_secs(),
                    s.last_error.as_deref().unwrap_or("no answer")
                )));
            }
        };
        if let Some(refused) = status.refused {
            hub.stop().await;
            return Err(Failure::Refused(format!(
                "the server refused this device: {refused}"
            )));
        }
        if status.master.as_ref().map(|m| m.device.as_str()) == Some(&device.to_string()) {
            hub.stop().await;
            return Err(Failure::Refused(
                "this device is the store's master, but its till is not running; start it with \
                 `till run`"
                    .to_owned(),
            ));
        }
        let answer = hub.command(command).await;
        hub.stop().await;
        answer.map_err(|e| match e {
            HubError::Refused(text) => Failure::Refused(text),
            other => Failure::Failed(anyhow::Error::new(other)),
        })
    })
}

/// The network's name as till.toml spells it.
pub fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bitcoin",
        Network::Testnet => "testnet",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
        _ => "unknown",
    }
}

/// An executor that runs hub commands on whatever node the till runs now.
pub struct TillExecutor(pub Arc<Till>);

impl till_engine::CommandExecutor for TillExecutor {
    fn execute(&self, command: &HubCommand) -> Result<Value, String> {
        let node = self.0.node().map_err(|e| e.to_string())?;
        node.execute(command)
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<till_engine::Event>> {
        self.0.node().ok().map(|n| n.subscribe())
    }

    fn recent_receipts(&self) -> Vec<([u8; 32], Option<u64>)> {
        self.0
            .node()
            .map(|n| n.recent_receipts())
            .unwrap_or_default()
    }
}
