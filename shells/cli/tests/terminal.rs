//! The interactive prompts on a real terminal: `till` runs on a pseudo-terminal (its
//! controlling terminal, as in a merchant's shell), and the test types the answers.
//! Covers what a pipe cannot reach: `init` shows the words and clears the screen after a wrong
//! confirmation, asks for a new passphrase twice and refuses two that differ; `restore` reads
//! the words and the passphrase without echoing them (echo is off before the prompt shows, so
//! an answer typed the instant it appears is not echoed either), and Ctrl-C at a hidden prompt
//! stops with nothing saved; `takeover` asks before it does anything.

#![cfg(unix)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// `till` running on a pseudo-terminal (util-linux `script`, which gives it one as its
/// controlling terminal); everything it writes to the terminal is collected.
struct Terminal {
    child: Child,
    input: ChildStdin,
    screen: Arc<Mutex<String>>,
}

fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

impl Terminal {
    /// Starts `till ARGS` for a device paired (by its config files) with a server that is
    /// never reached before the prompts.
    fn start(dir: &Path, args: &[&str]) -> Terminal {
        let mut line = format!(
            "exec {} --data-dir {}",
            quoted(env!("CARGO_BIN_EXE_till")),
            quoted(dir.to_str().unwrap())
        );
        for arg in args {
            line.push(' ');
            line.push_str(&quoted(arg));
        }
        // The terminal echoes what is typed (as a shell's does), so a prompt that hides its
        // input must turn that off.
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--flush", "--echo", "always"])
            .args(["--command", &line, "/dev/null"])
            .env_remove("TILL_DATA_DIR")
            .env_remove("TILL_SERVER_URL")
            .env("TILL_TOKEN", "terminal-test-token")
            .env("TERM", "dumb")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run till on a terminal (util-linux script)");
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = output.read(&mut buf) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            input,
            screen,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits until the terminal shows `text` (counting from `from` bytes of output); returns
    /// where it ends.
    fn expect(&mut self, text: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(from..).and_then(|s| s.find(text)) {
                return from + at + text.len();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader drain what is left before giving up.
                std::thread::sleep(Duration::from_millis(200));
                let screen = self.screen();
                if let Some(at) = screen.get(from..).and_then(|s| s.find(text)) {
                    return from + at + text.len();
                }
                panic!("till exited ({status}) without showing {text:?}; it showed:\n{screen}");
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {text:?}; it showed:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types a line, as a person does: the line ends with Enter (a carriage return).
    fn type_line(&mut self, line: &str) {
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.write_all(b"\r").unwrap();
        self.input.flush().unwrap();
    }

    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "till did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        (status, self.screen())
    }
}

/// A data dir whose config pairs it with a store on a server (not running: these prompts come
/// before any request).
fn paired_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("till.toml"),
        "server_url = \"http://127.0.0.1:9\"\nstore = \"terminal\"\nnetwork = \"regtest\"\n",
    )
    .unwrap();
    dir
}

fn secret_file(dir: &Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(dir.join("secret.toml")).ok()?;
    Some(toml::from_str(&text).unwrap())
}

/// Reads the words `init` shows and answers its two confirmations, rightly or (then it stops
/// after the first) wrongly. Returns where the output read so far ends.
fn confirm_words(term: &mut Terminal, right: bool) -> usize {
    let mut words = Vec::new();
    let mut at = 0;
    for _ in 0..if right { 2 } else { 1 } {
        let asked = term.expect("To confirm, type word ", at);
        at = term.expect(" and press Enter:", asked);
        let screen = term.screen();
        if words.is_empty() {
            words = screen[..asked]
                .lines()
                .filter_map(|line| {
                    let (n, word) = line.trim().split_once(". ")?;
                    n.parse::<usize>().ok().map(|_| word.trim().to_owned())
                })
                .collect();
            assert_eq!(words.len(), 12, "the words are shown, numbered:\n{screen}");
        }
        let n: usize = screen[asked..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let answer = if right {
            words[n - 1].as_str()
        } else {
            "wrong"
        };
        term.type_line(answer);
    }
    at
}

#[test]
fn init_on_a_terminal_clears_the_words_after_a_wrong_confirmation() {
    let dir = paired_dir();
    let mut term = Terminal::start(dir.path(), &["init"]);
    confirm_words(&mut term, false);
    let (status, screen) = term.wait();
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(screen.contains("nothing was saved"), "{screen}");
    let cleared = screen.find("\x1b[2J").expect("the screen is cleared");
    assert!(
        cleared < screen.find("that is not word").unwrap(),
        "cleared before the refusal is shown:\n{screen}"
    );
    assert!(secret_file(dir.path()).is_none_or(|s| !s.contains_key("mnemonic")));
}

#[test]
fn init_on_a_terminal_asks_for_the_passphrase_twice_without_echo() {
    let dir = paired_dir();
    let passphrase = "correct horse 42";

    // Two different passphrases: refused, nothing saved.
    let mut term = Terminal::start(dir.path(), &["init", "--passphrase"]);
    let at = confirm_words(&mut term, true);
    let at = term.expect("The passphrase (not shown): ", at);
    term.type_line(passphrase);
    term.expect("The passphrase again (not shown): ", at);
    term.type_line("another one");
    let (status, screen) = term.wait();
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(screen.contains("the two passphrases differ"), "{screen}");
    assert!(!screen.contains(passphrase), "the passphrase is not echoed");
    assert!(secret_file(dir.path()).is_none_or(|s| !s.contains_key("mnemonic")));

    // The same one twice: saved with the words.
    let mut term = Terminal::start(dir.path(), &["init", "--passphrase"]);
    let at = confirm_words(&mut term, true);
    let at = term.expect("The passphrase (not shown): ", at);
    term.type_line(passphrase);
    term.expect("The passphrase again (not shown): ", at);
    term.type_line(passphrase);
    let (status, screen) = term.wait();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("Saved."), "{screen}");
    assert!(!screen.contains(passphrase), "the passphrase is not echoed");
    let secrets = secret_file(dir.path()).expect("secret.toml is written");
    assert_eq!(secrets["passphrase"].as_str(), Some(passphrase));
    assert_eq!(secrets["mnemonic"].as_str().unwrap().split(' ').count(), 12);
}

#[test]
fn restore_on_a_terminal_reads_words_and_passphrase_without_echo() {
    let dir = paired_dir();
    let words = "legal winner thank year wave sausage worth useful legal winner thank yellow";
    let passphrase = "a passphrase nobody sees";
    let mut term = Terminal::start(dir.path(), &["restore", "--passphrase"]);
    let at = term.expect("(12 to 24, separated by spaces; not shown): ", 0);
    term.type_line(words);
    term.expect("The passphrase (not shown): ", at);
    term.type_line(passphrase);
    let (status, screen) = term.wait();
    // Nothing listens on the configured server: the restore fails there, after both prompts.
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(screen.contains("cannot reach the till-server"), "{screen}");
    assert!(
        !screen.contains("legal winner"),
        "the words are not echoed:\n{screen}"
    );
    assert!(!screen.contains(passphrase), "the passphrase is not echoed");
    assert!(secret_file(dir.path()).is_none_or(|s| !s.contains_key("mnemonic")));
}

#[test]
fn ctrl_c_at_a_hidden_prompt_stops_with_nothing_saved_and_edits_are_not_shown() {
    let dir = paired_dir();
    let mut term = Terminal::start(dir.path(), &["restore", "--passphrase"]);
    term.expect("(12 to 24, separated by spaces; not shown): ", 0);
    // Line editing (a word typed, erased with Ctrl-W, a character with backspace) and an arrow
    // key, then Ctrl-C: nothing of it shows, and the command stops at once, before any request.
    term.input
        .write_all(b"legal winner\x17\x17abandon\x7f\x1b[D")
        .unwrap();
    term.input.write_all(b"\x03").unwrap();
    term.input.flush().unwrap();
    let (status, screen) = term.wait();
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(
        screen.contains("interrupted; nothing was saved"),
        "{screen}"
    );
    assert!(!screen.contains("cannot reach"), "{screen}");
    assert!(
        !screen.contains("legal") && !screen.contains("abandon"),
        "nothing typed is shown:\n{screen}"
    );
    assert!(secret_file(dir.path()).is_none_or(|s| !s.contains_key("mnemonic")));
}

#[test]
fn takeover_on_a_terminal_does_nothing_unless_the_answer_is_yes() {
    let dir = paired_dir();
    let mut term = Terminal::start(dir.path(), &["takeover"]);
    term.expect("Type \"yes\": ", 0);
    term.type_line("no");
    let (status, screen) = term.wait();
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(
        screen.contains("not confirmed; nothing was changed"),
        "{screen}"
    );
    // This terminal echoes an ordinary answer, so the other tests' "not echoed" checks mean
    // the hidden prompts turned echo off.
    assert!(screen.contains("Type \"yes\": no"), "{screen}");

    // "yes" goes past the question to the takeover itself, which this device (no wallet yet)
    // cannot do.
    let mut term = Terminal::start(dir.path(), &["takeover"]);
    term.expect("Type \"yes\": ", 0);
    term.type_line("yes");
    let (status, screen) = term.wait();
    assert!(!screen.contains("not confirmed"), "{screen}");
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(
        screen.contains("there is no wallet on this device"),
        "{screen}"
    );
}
