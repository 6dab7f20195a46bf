//! Output for people (text) or scripts (`--json`).

use serde::Serialize;

/// `println!` that does not panic: a reader that went away ends the program quietly with
/// [`BROKEN_PIPE_EXIT`]; any other write error is reported and ends it with status 1.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Where results go: text lines or JSON values on stdout.
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints `value` as one line of JSON (with `--json`) or `text` otherwise.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            outln!(
                "{}",
                serde_json::to_string(value).expect("output serializes")
            );
        } else {
            outln!("{}", text());
        }
    }
}

/// The exit status when stdout's reader went away (`till log tail | head`): what a Unix tool
/// killed by SIGPIPE reports (128 + 13).
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes one line to stdout (see [`outln!`]).
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        stdout_failed(e);
    }
}

/// Ends the program after a failed write to stdout (see [`outln!`]).
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    eprintln!("till: writing to stdout: {e}");
    std::process::exit(1);
}

/// A spinner with `message` on a terminal's stderr, for work that takes seconds; it draws
/// nothing when stderr is redirected. Call `finish_and_clear` when the work is done.
pub fn spinner(message: String) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}

/// A bar for pulling the backup's segments (`verb`: "restoring", "syncing"), on a terminal's
/// stderr: a spinner while the backup's head is read, then the segments once
/// [`show_segments`] is told the plan. Call `finish_and_clear` when the work is done.
pub fn segments_bar(verb: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {verb}: {{msg}} ({{elapsed}})"
        ))
        .expect("a valid template"),
    );
    bar.set_message("reading the backup's head");
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Moves a [`segments_bar`] on a restore's or a sync's progress.
pub fn show_segments(
    bar: &indicatif::ProgressBar,
    verb: &str,
    progress: &till_engine::RestoreProgress,
) {
    match progress {
        till_engine::RestoreProgress::Planned {
            segments, last_seq, ..
        } => {
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{verb} {{bar:30}} {{pos}}/{{len}} segments, seq {{msg}} ({{elapsed}})"
                ))
                .expect("a valid template"),
            );
            bar.set_length(*segments);
            bar.set_message(format!("0 of {last_seq}"));
        }
        till_engine::RestoreProgress::Segment { done, seq, .. } => {
            bar.set_position(*done);
            bar.set_message(seq.to_string());
        }
        _ => {}
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix milliseconds as an RFC 3339 time (UTC, milliseconds).
pub fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
