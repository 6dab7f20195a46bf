//! Configuration: `till.toml` in the data dir, then environment, then flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The log file's name inside the data dir.
pub const LOG_FILE: &str = "till.redb";
/// The config file's name inside the data dir.
pub const CONFIG_FILE: &str = "till.toml";

/// Everything a command needs to know about this device's setup.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Where the device keeps its data.
    pub data_dir: PathBuf,
    /// The till-server's base URL, if configured.
    pub server_url: Option<String>,
}

/// The file's fields; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server_url: Option<String>,
}

impl Config {
    /// Resolves the configuration: the data dir from the flag, else
    /// `TILL_DATA_DIR`, else `~/.till`; then `till.toml` in it, overridden by
    /// `TILL_SERVER_URL`.
    pub fn load(data_dir_flag: Option<PathBuf>) -> anyhow::Result<Self> {
        let data_dir = match data_dir_flag {
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
        let path = data_dir.join(CONFIG_FILE);
        let file: FileConfig = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid till config", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let server_url = std::env::var("TILL_SERVER_URL").ok().or(file.server_url);
        Ok(Self {
            data_dir,
            server_url,
        })
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }
}
