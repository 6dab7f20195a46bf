//! Hidden prompts for secrets (the recovery words, the passphrase) on the controlling terminal.
//!
//! Echo is turned off *before* the prompt is shown, so nothing typed once the prompt is on the
//! screen is echoed, however quickly it follows. (rpassword, used before, shows the prompt first
//! and turns echo off after; an answer typed in between was echoed. The terminal tests caught
//! it in CI.) Ctrl-C restores the terminal and returns [`io::ErrorKind::Interrupted`] instead of
//! killing the process with echo still off.

use std::io;

use zeroize::Zeroizing;

/// Shows `prompt` on the terminal and reads one line without echoing it. Backspace, Ctrl-U and
/// Ctrl-W edit the line; escape sequences (arrow keys) are ignored.
#[cfg(unix)]
pub fn read_hidden(prompt: &str) -> io::Result<Zeroizing<String>> {
    use std::io::{Read, Write};

    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let raw = Raw::enter(&tty)?;
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;

    let mut line = Zeroizing::new(Vec::new());
    let next = || -> io::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        Ok(((&tty).read(&mut byte)? == 1).then_some(byte[0]))
    };
    loop {
        let Some(b) = next()? else {
            if line.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            break;
        };
        match b {
            b'\r' | b'\n' => break,
            // Backspace or DEL: the last character, all its UTF-8 bytes.
            0x08 | 0x7f => {
                while let Some(b) = line.pop() {
                    if b & 0xc0 != 0x80 {
                        break;
                    }
                }
            }
            // Ctrl-U: the whole line.
            0x15 => line.clear(),
            // Ctrl-W: the last word and the spaces after it.
            0x17 => {
                while line.last() == Some(&b' ') {
                    line.pop();
                }
                while line.last().is_some_and(|&b| b != b' ') {
                    line.pop();
                }
            }
            0x03 => {
                drop(raw);
                let _ = (&tty).write_all(b"\n");
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            // Ctrl-D: the end of input, when nothing was typed.
            0x04 if line.is_empty() => return Err(io::ErrorKind::UnexpectedEof.into()),
            // An escape sequence (ESC [ ... or ESC O ...): skipped to its final byte.
            0x1b => {
                if let Some(b'[' | b'O') = next()? {
                    while let Some(b) = next()? {
                        if (0x40..=0x7e).contains(&b) {
                            break;
                        }
                    }
                }
            }
            b if b < 0x20 => {}
            b => line.push(b),
        }
    }
    drop(raw);
    // Enter was not echoed either: end the prompt's line.
    (&tty).write_all(b"\n")?;
    let text = std::str::from_utf8(&line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "what was typed is not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(not(unix))]
pub fn read_hidden(prompt: &str) -> io::Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt).map(Zeroizing::new)
}

/// The terminal without echo, line editing or signal keys, restored when dropped (on an error
/// or a panic too).
#[cfg(unix)]
struct Raw<'a> {
    tty: &'a std::fs::File,
    saved: rustix::termios::Termios,
}

#[cfg(unix)]
impl<'a> Raw<'a> {
    fn enter(tty: &'a std::fs::File) -> io::Result<Raw<'a>> {
        use rustix::termios::{
            LocalModes, OptionalActions, SpecialCodeIndex, tcgetattr, tcsetattr,
        };
        let saved = tcgetattr(tty)?;
        let mut raw = saved.clone();
        raw.local_modes
            .remove(LocalModes::ECHO | LocalModes::ECHONL | LocalModes::ICANON | LocalModes::ISIG);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(tty, OptionalActions::Now, &raw)?;
        Ok(Raw { tty, saved })
    }
}

#[cfg(unix)]
impl Drop for Raw<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.tty,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
