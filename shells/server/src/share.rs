//! What several server processes in front of one PostgreSQL database share so that they serve
//! one device hub (DESIGN.md section 5: stateless server processes). docs/HUB.md, "Several server
//! processes".
//!
//! - Notes: small JSON messages every process hears (PostgreSQL `NOTIFY till_hub`), the publisher
//!   included: a store's master changed, an invoice changed, a command waits for a device, a command
//!   was taken, its answer is in, mail waits for a device.
//! - Commands and their answers, and mail for devices that are offline, live in the database, so
//!   whichever process holds a device's connection can take them, and exactly one does.
//!
//! The embedded redb store serves one process, whose hub keeps all of this in memory: it has no
//! [`Share`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::{InvoiceRecord, StoreError, UserId};

/// The most bytes of a note's JSON (PostgreSQL refuses a `NOTIFY` payload of 8000 bytes or more).
pub(crate) const MAX_NOTE_BYTES: usize = 7900;

/// One note, heard by every process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Note {
    /// The process that published it (a random id per process).
    pub(crate) from: String,
    /// The store (user) it is about.
    pub(crate) user: i64,
    #[serde(flatten)]
    pub(crate) what: What,
}

/// What a note says.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum What {
    /// A head write changed the store's lease: read the master again.
    Master,
    /// An invoice was created, paid or expired: its record, or only its id when the record is too
    /// large for a note (then read from the database).
    Invoice {
        id: String,
        record: Option<InvoiceRecord>,
    },
    /// Command `id` waits in the database for `device`'s connection.
    Command { id: String, device: String },
    /// A process took command `id` and sent it to the device.
    Taken { id: String },
    /// Command `id`'s answer is in the database.
    Answer { id: String },
    /// Mail waits in the database for `device`.
    Mail { device: String },
    /// Never published: the process's own listener (re)connected, so notes may have been missed.
    Resync,
}

impl Note {
    pub(crate) fn user(&self) -> UserId {
        UserId(self.user)
    }
}

/// The database side of a shared hub.
#[async_trait]
pub(crate) trait Share: Send + Sync + 'static {
    /// This process's id, the `from` of its notes.
    fn process(&self) -> &str;

    /// Sends a note to every process (this one included).
    async fn publish(&self, user: UserId, what: What) -> Result<(), StoreError>;

    /// The notes this process hears, in order, with a [`What::Resync`] whenever the listener
    /// (re)connects.
    fn subscribe(&self) -> broadcast::Receiver<Note>;

    /// Stores command `id` (the message `text` for `device`) untaken.
    async fn post_command(
        &self,
        id: &str,
        user: UserId,
        device: &str,
        text: &str,
    ) -> Result<(), StoreError>;

    /// Takes command `id` for sending if it is still untaken: its text, or `None` if another
    /// process took it or it was withdrawn.
    async fn take_command(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Puts a taken command back (its connection broke before it was sent).
    async fn untake_command(&self, id: &str) -> Result<(), StoreError>;

    /// Withdraws command `id` if no process took it: whether it was still untaken.
    async fn withdraw_command(&self, id: &str) -> Result<bool, StoreError>;

    /// Records command `id`'s answer: false if the command is gone (its sender gave up).
    async fn answer_command(&self, id: &str, answer: &str) -> Result<bool, StoreError>;

    /// Command `id`'s answer, once, removing the command; `None` while it has none.
    async fn take_answer(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Forgets command `id` (its sender gave up on it).
    async fn forget_command(&self, id: &str) -> Result<(), StoreError>;

    /// Keeps `text` for `device`'s next connection, for `ttl_ms`.
    async fn post_mail(
        &self,
        user: UserId,
        device: &str,
        text: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError>;

    /// The mail waiting for `device`, oldest first, removed; expired mail is dropped.
    async fn take_mail(&self, user: UserId, device: &str) -> Result<Vec<String>, StoreError>;
}

/// A new process id: 16 random bytes, hex.
pub(crate) fn new_process_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    crate::auth::hex(&bytes)
}

/// A note's JSON, with an invoice's record left out when the whole would not fit.
pub(crate) fn encode_note(note: &Note) -> String {
    let text = serde_json::to_string(note).unwrap_or_default();
    if text.len() <= MAX_NOTE_BYTES {
        return text;
    }
    match &note.what {
        What::Invoice { id, .. } => serde_json::to_string(&Note {
            what: What::Invoice {
                id: id.clone(),
                record: None,
            },
            ..note.clone()
        })
        .unwrap_or_default(),
        // Ids, device ids and numbers only: always small.
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InvoiceStatus;

    fn invoice(description: &str) -> InvoiceRecord {
        InvoiceRecord {
            id: "ab".repeat(32),
            bolt11: "lnbcrt1".into(),
            amount_sat: 1,
            description: description.into(),
            status: InvoiceStatus::New,
            created_ms: 1,
            expires_ms: 2,
            paid_ms: None,
            received_msat: None,
        }
    }

    #[test]
    fn a_note_reads_back_and_an_oversized_invoice_goes_by_id() {
        let note = Note {
            from: "p".into(),
            user: 7,
            what: What::Invoice {
                id: "ab".repeat(32),
                record: Some(invoice("tea")),
            },
        };
        let text = encode_note(&note);
        let back: Note = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.what, What::Invoice { record: Some(r), .. } if r == invoice("tea")));
        assert_eq!(back.user, 7);

        let big = Note {
            what: What::Invoice {
                id: "ab".repeat(32),
                record: Some(invoice(&"x".repeat(10_000))),
            },
            ..note
        };
        let text = encode_note(&big);
        assert!(text.len() <= MAX_NOTE_BYTES, "{} bytes", text.len());
        let back: Note = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(back.what, What::Invoice { record: None, ref id } if *id == "ab".repeat(32))
        );
    }
}
