//! Moving the master role: `till handoff` (this master ships everything and releases the lease,
//! so another device's `till run` takes it), `till takeover` (confirmed recovery from a lost
//! master) and `till stop` (stops this device's daemon, keeping the lease).

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use serde_json::{Value, json};
use till_engine::{Role, TakeoverConfirmed};

use super::device::{self, engine_failure};
use crate::control::{self, Request};
use crate::output::Output;
use crate::{Config, Failure};

/// `till takeover`.
#[derive(Debug, Args)]
pub struct TakeoverArgs {
    /// Do not ask: the other device is lost (for scripts).
    #[arg(long)]
    yes: bool,
}

fn show(out: &Output, v: &Value, text: &str) {
    out.emit(v, || text.to_owned());
}

/// Hands the master role off. With a running daemon, it hands off and stays a follower; without
/// one, this device resumes its lease, ships what it has and releases it.
pub fn handoff(config: &Config, out: &Output) -> Result<(), Failure> {
    if let Some(answer) = control::call(config, &Request::Handoff)? {
        let v = answer.into_result()?;
        show(
            out,
            &v,
            "Handed off: everything is on the server and the lease is released. Another device's \
             `till run` becomes master now; this one follows.",
        );
        return Ok(());
    }
    let (till, _) = device::open_till(config)?;
    let mine = till.device_id();
    match till.lease().map_err(engine_failure)? {
        Some(l) if l.device == mine && l.held => {}
        Some(l) => {
            return Err(Failure::Refused(format!(
                "this device is not master (the lease is {} by device {} at epoch {}); only the \
                 master hands off",
                if l.held { "held" } else { "released" },
                l.device,
                l.epoch
            )));
        }
        None => {
            return Err(Failure::Refused(
                "there is no backup yet; nothing to hand off".into(),
            ));
        }
    }
    till.acquire().map_err(engine_failure)?;
    till.handoff().map_err(engine_failure)?;
    config.log("handed off (no daemon was running): shipped and released");
    show(
        out,
        &json!({"released": true}),
        "Handed off: everything is on the server and the lease is released.",
    );
    Ok(())
}

/// Takes the lease over from a lost master, after the user's confirmation.
pub fn takeover(config: &Config, out: &Output, args: TakeoverArgs) -> Result<(), Failure> {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Refused(
                "takeover needs a confirmation and stdin is not a terminal; nothing was changed. \
                 Pass --yes if the other device is really lost"
                    .into(),
            ));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "Take the till over from the current master? That device is stopped at its next \
             write and must not be used again until it restores. Type \"yes\": "
        );
        let _ = err.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim() != "yes" {
            return Err(Failure::Refused(
                "not confirmed; nothing was changed".into(),
            ));
        }
    }
    if let Some(answer) = control::call(config, &Request::Takeover)? {
        let v = answer.into_result()?;
        show(out, &v, "This device is master now; the old one is fenced.");
        return Ok(());
    }
    let (till, _) = device::open_till(config)?;
    device::sync_showing_progress(&till).map_err(engine_failure)?;
    till.takeover(TakeoverConfirmed::confirmed_by_user())
        .map_err(engine_failure)?;
    let epoch = match till.role() {
        Role::Master { epoch } => epoch,
        _ => 0,
    };
    // Keep the lease; the daemon resumes it.
    till.stop().map_err(engine_failure)?;
    config.log(format_args!("took over the lease at epoch {epoch}"));
    show(
        out,
        &json!({"master": true, "epoch": epoch}),
        &format!(
            "This device holds the lease now (epoch {epoch}); the old one is fenced. Start the \
             node with `till run`."
        ),
    );
    Ok(())
}

/// Stops this device's daemon; a master keeps its lease.
pub fn stop(config: &Config, out: &Output) -> Result<(), Failure> {
    match control::call(config, &Request::Shutdown)? {
        Some(answer) => {
            let v = answer.into_result()?;
            show(out, &v, "stopping the running till");
            Ok(())
        }
        None => Err(Failure::Refused("no till is running on this device".into())),
    }
}
