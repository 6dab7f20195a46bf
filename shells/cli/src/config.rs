//! Configuration: `till.toml` in the data dir, then environment, then flags.
//!
//! Secrets (the wallet's mnemonic, the server token) are not configuration: they live in
//! `secret.toml` beside it, readable by the owner only, and are never printed.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use till_engine::bitcoin::Network;
use till_engine::disk::DEFAULT_MIN_FREE_DISK;
use zeroize::Zeroizing;

/// The log file's name inside the data dir.
pub const LOG_FILE: &str = "till.redb";
/// The config file's name inside the data dir.
pub const CONFIG_FILE: &str = "till.toml";
/// The secrets file's name inside the data dir (mode 0600).
pub const SECRET_FILE: &str = "secret.toml";
/// The folder of `till`'s own log files inside the data dir.
pub const LOG_DIR: &str = "logs";

/// The chain source a till uses unless told otherwise, per network.
fn default_esplora(network: Network) -> &'static str {
    match network {
        Network::Testnet => "https://blockstream.info/testnet/api",
        Network::Signet => "https://mempool.space/signet/api",
        Network::Regtest => "http://127.0.0.1:3002",
        _ => "https://blockstream.info/api",
    }
}

/// Everything a command needs to know about this device's setup.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the device keeps its data.
    pub data_dir: PathBuf,
    /// The till-server's base URL, if configured.
    pub server_url: Option<String>,
    /// The merchant's store on the server (from pairing).
    pub store: Option<String>,
    /// The Bitcoin network.
    pub network: Network,
    /// Whether the network was set (file, environment or flag) rather than defaulted.
    pub network_explicit: bool,
    /// The Esplora server the node syncs from.
    pub esplora_url: String,
    /// Where the node accepts Lightning peers, if anywhere (`host:port`).
    pub listen: Option<String>,
    /// The node's public alias.
    pub alias: Option<String>,
    /// Free space (bytes) the node keeps on its disk for the payments in flight: new sales are
    /// refused below it; 0 turns the check off.
    pub min_free_disk: u64,
    /// Mirror the log file's lines on stderr.
    pub verbose: bool,
}

/// The file's fields; all optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esplora_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// In MB (10^6 bytes); see [`Config::min_free_disk`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_disk_mb: Option<u64>,
}

/// Flags that override the file and the environment.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub server_url: Option<String>,
    pub network: Option<String>,
    pub esplora_url: Option<String>,
    pub verbose: bool,
}

pub fn parse_network(text: &str) -> anyhow::Result<Network> {
    match text.trim().to_ascii_lowercase().as_str() {
        "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
        "testnet" => Ok(Network::Testnet),
        "signet" => Ok(Network::Signet),
        "regtest" => Ok(Network::Regtest),
        other => {
            anyhow::bail!("unknown network {other:?}; use bitcoin, testnet, signet or regtest")
        }
    }
}

impl Config {
    /// Resolves the configuration: the data dir from the flag, else `TILL_DATA_DIR`, else
    /// `~/.till`; then `till.toml` in it, overridden by `TILL_SERVER_URL`, `TILL_NETWORK`,
    /// `TILL_ESPLORA_URL` and `TILL_MIN_FREE_DISK_MB`, overridden by the flags.
    ///
    /// A network value that is not one is a usage error (exit 2); anything else a failure.
    pub fn load(flags: Overrides) -> Result<Self, crate::Failure> {
        let data_dir = match flags.data_dir {
            Some(d) => d,
            None => match std::env::var_os("TILL_DATA_DIR") {
                Some(d) => PathBuf::from(d),
                None => {
                    let home = std::env::var_os("HOME")
                        .context("neither --data-dir, TILL_DATA_DIR nor HOME is set")?;
                    Path::new(&home).join(".till")
                }
            },
        };
        let file = read_file_config(&data_dir)?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let server_url = flags
            .server_url
            .or_else(|| env("TILL_SERVER_URL"))
            .or(file.server_url)
            .map(|u| u.trim_end_matches('/').to_owned());
        let network_text = flags
            .network
            .or_else(|| env("TILL_NETWORK"))
            .or(file.network);
        let network_explicit = network_text.is_some();
        let network = match network_text {
            Some(n) => parse_network(&n).map_err(|e| crate::Failure::Usage(e.to_string()))?,
            None => Network::Bitcoin,
        };
        let esplora_url = flags
            .esplora_url
            .or_else(|| env("TILL_ESPLORA_URL"))
            .or(file.esplora_url)
            .unwrap_or_else(|| default_esplora(network).to_owned());
        let min_free_disk = match env("TILL_MIN_FREE_DISK_MB") {
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                crate::Failure::Usage(format!(
                    "TILL_MIN_FREE_DISK_MB={text:?} is not a whole number of megabytes"
                ))
            })?),
            None => file.min_free_disk_mb,
        }
        .map_or(DEFAULT_MIN_FREE_DISK, |mb| mb.saturating_mul(1_000_000));
        Ok(Self {
            data_dir,
            server_url,
            store: file.store,
            network,
            network_explicit,
            esplora_url,
            listen: file.listen,
            alias: file.alias,
            min_free_disk,
            verbose: flags.verbose,
        })
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The secrets file.
    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join(SECRET_FILE)
    }

    /// `till`'s own log file (the daemon's and every command's lines).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_DIR).join("till.log")
    }

    /// Appends a line to the log file, and to stderr with `--verbose`. Never given a secret.
    pub fn log(&self, line: impl fmt::Display) {
        let line = format!(
            "{} {line}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        );
        if self.verbose {
            eprintln!("{line}");
        }
        let path = self.log_file();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Updates `till.toml` with `change`, keeping the fields it does not touch.
    pub fn update_file(&self, change: impl FnOnce(&mut FileConfig)) -> anyhow::Result<()> {
        let mut file = read_file_config(&self.data_dir)?;
        change(&mut file);
        let path = self.data_dir.join(CONFIG_FILE);
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let text = toml::to_string(&file).context("writing the config")?;
        write_atomically(&path, text.as_bytes(), 0o644)
    }
}

fn read_file_config(data_dir: &Path) -> anyhow::Result<FileConfig> {
    let path = data_dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a valid till config", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `text` to `path` readable by this user only (mode 0600), replacing it whole.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomically(path, text.as_bytes(), 0o600)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and syncs
/// the directory, so that a power cut leaves the old file or the new one, and a new file (the
/// wallet's words after `till init`) is still there after it.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// The device's secrets. `Debug` shows none of them.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The server's bearer token for this merchant's devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The wallet's BIP39 words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mnemonic: Option<String>,
    /// The wallet's BIP39 passphrase, when it has one (`--passphrase` on init or restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("mnemonic", &self.mnemonic.as_ref().map(|_| "<set>"))
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(t) = &mut self.token {
            t.zeroize();
        }
        if let Some(m) = &mut self.mnemonic {
            m.zeroize();
        }
        if let Some(p) = &mut self.passphrase {
            p.zeroize();
        }
    }
}

impl Secrets {
    /// Reads `secret.toml`, or nothing when there is none. `TILL_TOKEN` overrides the token.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let path = config.secret_path();
        let mut secrets: Secrets = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                // The parser's error could quote the file; say only where it is.
                toml::from_str(&text).map_err(|_| {
                    anyhow::anyhow!("{} is damaged (not valid TOML)", path.display())
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(token) = std::env::var("TILL_TOKEN").ok().filter(|t| !t.is_empty()) {
            secrets.token = Some(token);
        }
        Ok(secrets)
    }

    /// Writes `secret.toml` (mode 0600, atomically).
    pub fn save(&self, config: &Config) -> anyhow::Result<()> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let text = Zeroizing::new(toml::to_string(self).context("writing the secrets")?);
        write_atomically(&config.secret_path(), text.as_bytes(), 0o600)
    }
}
