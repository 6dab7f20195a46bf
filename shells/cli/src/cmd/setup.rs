//! Setting a device up: `till pair` (an invitation link from the operator), `till init` (a new
//! wallet, its words shown once) and `till restore` (an existing till from its words).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use clap::Args;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use till_engine::{Keys, Till};
use zeroize::Zeroizing;

use super::device::{self, engine_failure};
use crate::config::Secrets;
use crate::output::Output;
use crate::{Config, Failure};

/// `till pair`.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The invitation link the operator gave you (`-` reads it from stdin).
    link: String,
}

/// `till restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The till's words were protected with a BIP39 passphrase: ask for it after them (hidden
    /// on a terminal, else the next line of stdin). Never given as a flag's value.
    #[arg(long)]
    passphrase: bool,
}

/// `till init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Protect the words with a BIP39 passphrase, asked for after the words are confirmed
    /// (twice, hidden, on a terminal; else the next line of stdin). Restoring then needs the
    /// words and the passphrase. Never given as a flag's value.
    #[arg(long)]
    passphrase: bool,
}

fn failed(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Failed(e.into())
}

/// Reads one line from stdin, trimmed; `None` at its end.
fn read_line() -> Result<Option<Zeroizing<String>>, Failure> {
    Ok(read_raw_line()?.map(|line| Zeroizing::new(line.trim().to_owned())))
}

/// Reads one line from stdin without its line ending, spaces kept; `None` at its end.
fn read_raw_line() -> Result<Option<Zeroizing<String>>, Failure> {
    let mut line = Zeroizing::new(String::new());
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| failed(anyhow::anyhow!("reading stdin: {e}")))?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    Ok((n > 0).then(|| Zeroizing::new(line[..end].to_owned())))
}

/// A hidden prompt on the terminal for `what`; Ctrl-C stops with nothing saved.
fn read_hidden(prompt: &str, what: &str) -> Result<Zeroizing<String>, Failure> {
    crate::hidden::read_hidden(prompt).map_err(|e| match e.kind() {
        std::io::ErrorKind::Interrupted => {
            Failure::Refused("interrupted; nothing was saved".into())
        }
        _ => failed(anyhow::anyhow!("reading {what}: {e}")),
    })
}

/// Reads the BIP39 passphrase: a hidden prompt on a terminal (twice when `twice`, for a new
/// wallet), else one line of stdin, taken as it is apart from its line ending.
fn read_passphrase(twice: bool) -> Result<Zeroizing<String>, Failure> {
    let passphrase = if std::io::stdin().is_terminal() {
        let prompt = |text: &str| read_hidden(text, "the passphrase");
        let first = prompt("The passphrase (not shown): ")?;
        if twice && !first.is_empty() && *prompt("The passphrase again (not shown): ")? != *first {
            return Err(Failure::Refused(
                "the two passphrases differ; nothing was saved".into(),
            ));
        }
        first
    } else {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "Type the passphrase and press Enter:");
        let _ = err.flush();
        read_raw_line()?.unwrap_or_default()
    };
    if passphrase.is_empty() {
        return Err(Failure::Usage(
            "no passphrase was given (leave out --passphrase for a wallet without one); nothing \
             was saved"
                .into(),
        ));
    }
    Ok(passphrase)
}

/// Creates the data dir, the log and the device id if they are missing; returns the device id.
fn prepare_device(config: &Config) -> Result<till_log::DeviceId, Failure> {
    Ok(prepare_log(config)?.1)
}

/// Creates the data dir, the log and the device id if they are missing.
fn prepare_log(config: &Config) -> Result<(till_log::Log, till_log::DeviceId), Failure> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        failed(anyhow::anyhow!(
            "creating {}: {e}",
            config.data_dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let log = till_log::Log::open(config.log_path()).map_err(|e| {
        let text = e.to_string();
        if text.contains("already open") {
            Failure::Refused(
                "the till's log is in use by a running `till run`; stop it first".into(),
            )
        } else {
            failed(anyhow::anyhow!(
                "opening {}: {text}",
                config.log_path().display()
            ))
        }
    })?;
    let device = till_engine::device_id(&log).map_err(engine_failure)?;
    Ok((log, device))
}

#[derive(Serialize)]
struct Paired {
    store: String,
    server_url: String,
    device_id: String,
    pos_url: Option<String>,
}

/// Redeems an invitation: the server pairs this device and gives it its token, store and URLs.
pub fn pair(config: &Config, out: &Output, args: PairArgs) -> Result<(), Failure> {
    let link = if args.link == "-" {
        read_line()?.ok_or_else(|| Failure::Usage("no invitation link on stdin".into()))?
    } else {
        Zeroizing::new(args.link.trim().to_owned())
    };
    let (base, _code) = link
        .rsplit_once("/invite/")
        .filter(|(base, code)| base.starts_with("http") && !code.is_empty())
        .ok_or_else(|| {
            Failure::Usage(
                "that is not an invitation link (it looks like https://SERVER/invite/CODE)".into(),
            )
        })?;
    let mut secrets = Secrets::load(config).map_err(Failure::Failed)?;
    if secrets.token.is_some() && config.store.is_some() {
        return Err(Failure::Refused(format!(
            "this device is already paired with store {:?} on {}; use another --data-dir for \
             another store",
            config.store.as_deref().unwrap_or_default(),
            config.server_url.as_deref().unwrap_or("?")
        )));
    }
    let device = prepare_device(config)?;
    let url = format!("{base}/api/v1/invites/redeem");
    let body = json!({ "code": link.as_str(), "device_id": device.to_string() });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let (status, answer): (u16, Value) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(failed)?;
        let response = client.post(&url).json(&body).send().await.map_err(|e| {
            failed(anyhow::anyhow!(
                "cannot reach the till-server at {base}: {}",
                e.without_url()
            ))
        })?;
        let status = response.status().as_u16();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok::<_, Failure>((status, value))
    })?;
    let message = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .to_owned();
    match status {
        200 => {}
        404 | 410 => return Err(Failure::Refused(message)),
        400 => return Err(Failure::Usage(message)),
        other => {
            return Err(failed(anyhow::anyhow!(
                "the server could not pair this device (HTTP {other}): {message}"
            )));
        }
    }
    let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(token), Some(store), Some(server_url)) =
        (field("token"), field("store"), field("server_url"))
    else {
        return Err(failed(anyhow::anyhow!(
            "the server's pairing answer lacks the token, store or server_url"
        )));
    };
    secrets.token = Some(token);
    secrets.save(config).map_err(Failure::Failed)?;
    config
        .update_file(|f| {
            f.server_url = Some(server_url.clone());
            f.store = Some(store.clone());
        })
        .map_err(Failure::Failed)?;
    config.log(format_args!(
        "paired device {device} with store {store:?} on {server_url}"
    ));
    let paired = Paired {
        store,
        server_url,
        device_id: device.to_string(),
        pos_url: field("pos_url"),
    };
    out.emit(&paired, || {
        format!(
            "Paired this device ({}) with store {:?} on {}.\nNext: `till init` for a new till, or \
             `till restore` to bring an existing one here.",
            paired.device_id, paired.store, paired.server_url
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct Initialized {
    device_id: String,
    store: String,
    server_url: String,
    network: &'static str,
}

/// Creates a new wallet: shows its words once, asks for two of them back, then saves it.
pub fn init(config: &Config, out: &Output, args: InitArgs) -> Result<(), Failure> {
    let secrets = Secrets::load(config).map_err(Failure::Failed)?;
    if secrets.mnemonic.is_some() {
        return Err(Failure::Refused(format!(
            "this device already has a wallet in {}; nothing was changed",
            config.data_dir.display()
        )));
    }
    let pairing = device::pairing(config, &secrets)?;
    let (log, device) = prepare_log(config)?;
    if log.head().map(|h| h.seq).unwrap_or(0) > 0 {
        return Err(Failure::Refused(format!(
            "the log in {} already holds a till's events; nothing was changed",
            config.data_dir.display()
        )));
    }
    let keys = Keys::generate();
    let phrase = keys.phrase();
    let words: Vec<&str> = phrase.split_whitespace().collect();
    // The words go to the terminal (stderr), never to stdout or a log: shown this once.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "Your till's recovery words. Write them down, in order, and keep them safe: they are \
         the only way to restore the till and its money. They are shown once.\n"
    );
    for (i, word) in words.iter().enumerate() {
        let _ = writeln!(err, "  {:>2}. {word}", i + 1);
    }
    let _ = writeln!(err);
    let mut rng = rand::thread_rng();
    let first = rng.gen_range(0..words.len() / 2);
    let second = rng.gen_range(words.len() / 2..words.len());
    for position in [first, second] {
        let _ = writeln!(
            err,
            "To confirm, type word {} and press Enter:",
            position + 1
        );
        let _ = err.flush();
        let answer = read_line()?;
        if answer.as_deref().map(|a| a.to_lowercase()) != Some(words[position].to_owned()) {
            if std::io::stderr().is_terminal() {
                // Clear the screen so the words do not stay on it.
                let _ = write!(err, "\x1b[2J\x1b[H");
            }
            return Err(Failure::Refused(format!(
                "that is not word {}; nothing was saved. Run `till init` again: it shows new words",
                position + 1
            )));
        }
    }
    drop(err);
    let passphrase = args.passphrase.then(|| read_passphrase(true)).transpose()?;
    let network = device::network_name(config.network);
    // The network is part of the till: a restore learns it from here.
    log.put(device::network_key(), network.as_bytes().to_vec())
        .map_err(|e| failed(anyhow::anyhow!("writing the log: {e}")))?;
    drop(log);
    let secrets = Secrets {
        token: secrets.token.clone(),
        mnemonic: Some(phrase.to_string()),
        passphrase: passphrase.as_deref().map(|p| p.to_string()),
    };
    secrets.save(config).map_err(Failure::Failed)?;
    config
        .update_file(|f| {
            f.network = Some(network.to_owned());
            f.esplora_url = Some(config.esplora_url.clone());
        })
        .map_err(Failure::Failed)?;
    config.log(format_args!("initialized a new wallet on device {device}"));
    let done = Initialized {
        device_id: device.to_string(),
        store: pairing.store,
        server_url: pairing.server_url,
        network,
    };
    out.emit(&done, || {
        format!(
            "Saved. This device ({}) holds the new till of store {:?} on {} ({}).\nStart it with \
             `till run`.",
            done.device_id, done.store, done.server_url, done.network
        )
    });
    Ok(())
}

/// Reads the mnemonic: a hidden prompt on a terminal, else one line of stdin. Never a flag.
fn read_mnemonic() -> Result<Zeroizing<String>, Failure> {
    if std::io::stdin().is_terminal() {
        read_hidden(
            "The till's recovery words (12 to 24, separated by spaces; not shown): ",
            "the words",
        )
    } else {
        read_line()?.ok_or_else(|| {
            Failure::Usage("no recovery words on stdin (give them as one line)".into())
        })
    }
}

#[derive(Serialize)]
struct Restored {
    device_id: String,
    last_seq: u64,
    seconds: f64,
    continued: bool,
}

/// Restores an existing till from its words and the server's backup; the device becomes a
/// follower at the backup's head.
pub fn restore(config: &Config, out: &Output, args: RestoreArgs) -> Result<(), Failure> {
    let secrets = Secrets::load(config).map_err(Failure::Failed)?;
    if secrets.mnemonic.is_some() {
        return Err(Failure::Refused(format!(
            "this device already has a wallet in {}; restoring would replace it. Use a new \
             --data-dir",
            config.data_dir.display()
        )));
    }
    let pairing = device::pairing(config, &secrets)?;
    let phrase = read_mnemonic()?;
    let passphrase = args
        .passphrase
        .then(|| read_passphrase(false))
        .transpose()?;
    let keys = Keys::from_phrase(&phrase, passphrase.as_deref().map(|p| p.as_str()))
        .map_err(engine_failure)?;
    drop(phrase);
    let saved_keys = keys.clone();
    let device = prepare_device(config)?;
    let till_config = device::till_config(config, &pairing)?;
    let started = Instant::now();
    let existing = till_log::Log::open(config.log_path())
        .map(|log| log.head().map(|h| h.seq).unwrap_or(0))
        .unwrap_or(0);
    let bar = crate::output::segments_bar("restoring");
    let (till, continued) = if existing > 0 {
        // An earlier restore was interrupted: pull the rest like a follower does.
        bar.set_message(format!("continuing from seq {existing}"));
        let till = Till::open(config.log_path(), keys, till_config).map_err(engine_failure)?;
        till.sync_with_progress(|p| crate::output::show_segments(&bar, "restoring", &p))
            .map_err(|e| {
                bar.abandon();
                engine_failure(e)
            })?;
        (till, true)
    } else {
        let till = Till::restore(config.log_path(), keys, till_config, |p| {
            crate::output::show_segments(&bar, "restoring", &p)
        })
        .map_err(|e| {
            bar.abandon();
            engine_failure(e)
        })?;
        (till, false)
    };
    bar.finish_and_clear();
    let last_seq = till.log().head().map(|h| h.seq).unwrap_or(0);
    let network = device::resolve_network(config, till.log())?;
    drop(till);
    let secrets = Secrets {
        token: secrets.token.clone(),
        // Saved only once the words opened the backup.
        mnemonic: Some(saved_keys.phrase().to_string()),
        passphrase: passphrase.as_deref().map(|p| p.to_string()),
    };
    secrets.save(config).map_err(Failure::Failed)?;
    config
        .update_file(|f| {
            f.network = Some(device::network_name(network).to_owned());
            if config.network_explicit || network == config.network {
                f.esplora_url = Some(config.esplora_url.clone());
            }
        })
        .map_err(Failure::Failed)?;
    let done = Restored {
        device_id: device.to_string(),
        last_seq,
        seconds: started.elapsed().as_secs_f64(),
        continued,
    };
    config.log(format_args!(
        "restored device {device} to seq {last_seq} in {:.2} s",
        done.seconds
    ));
    out.emit(&done, || {
        format!(
            "Restored to seq {} in {:.2} s. This device ({}) is a follower: `till run` keeps it \
             in sync and makes it master when the other device hands off; `till takeover` if \
             that device is lost.",
            done.last_seq, done.seconds, done.device_id
        )
    });
    Ok(())
}
