//! The admin socket: how `till-server invite create --data-dir DIR` creates an invitation while a
//! server runs on DIR (issue 7). The running server holds the redb file locked, so a second process
//! cannot open it; instead the server listens on the Unix socket `DIR/admin.sock` and creates the
//! invitation through its own open store. With no server running, `invite create` finds no socket
//! (or a stale one nobody listens on) and opens the file itself, as before.
//!
//! The socket offers one request, creating an invitation, and nothing else. It is reachable by the
//! server's own OS user only: the socket file is mode 0600 (and made so under a temporary name
//! before it takes its real one), and the server checks the peer's credentials on every connection,
//! refusing any other user, root included. Whoever can use it could open the data directory's
//! files anyway.
//!
//! One exchange per connection, one JSON line each way: the request
//! `{"request": "create_invite", "store", "public_url": null | "...", "ttl_ms"}` (a null public URL
//! means the server's own), the answer `{"invitation": {"link", "store", "expires_at_ms"}}` or
//! `{"error": {"message"}}`.

use crate::store::Storage;
use crate::{Error, Invitation};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's name in the data directory.
pub(crate) const SOCKET_NAME: &str = "admin.sock";
/// A request longer than this is refused (a real one is a few hundred bytes).
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long the server waits for a connection's request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `invite create` waits for the running server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    CreateInvite {
        store: String,
        /// `None`: the server's own public URL.
        public_url: Option<String>,
        ttl_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Invitation {
        link: String,
        store: String,
        expires_at_ms: i64,
    },
    Error {
        message: String,
    },
}

/// The server's end: the bound socket, removed from the data directory when dropped.
pub(crate) struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The server's user, who owns the socket file; the only peer served.
    owner_uid: u32,
    /// The socket file's inode, so that dropping removes this socket and never a successor's.
    inode: u64,
}

impl AdminSocket {
    /// Binds `data_dir/admin.sock`, mode 0600, replacing a stale one a killed server left. The
    /// caller holds the data directory's store open, so no other server is using it.
    pub(crate) fn bind(data_dir: &Path) -> io::Result<AdminSocket> {
        let path = data_dir.join(SOCKET_NAME);
        // Bound and restricted under a name of its own, then renamed into place, so the socket is
        // never reachable at its real name with a looser mode.
        let staging = data_dir.join(format!("{SOCKET_NAME}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        let placed = (|| {
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
            let metadata = std::fs::metadata(&staging)?;
            std::fs::rename(&staging, &path)?;
            Ok::<_, io::Error>((metadata.uid(), metadata.ino()))
        })();
        match placed {
            Ok((owner_uid, inode)) => Ok(AdminSocket {
                listener,
                path,
                owner_uid,
                inode,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                Err(e)
            }
        }
    }

    /// The socket's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests, with `store` and the server's `public_url`, until dropped.
    pub(crate) async fn serve(self, store: Arc<dyn Storage>, public_url: String) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(
                        stream,
                        store.clone(),
                        public_url.clone(),
                        self.owner_uid,
                    ));
                }
                Err(e) => {
                    eprintln!(
                        "till-server: accepting on the admin socket {} failed: {e}",
                        self.path.display()
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves one connection: checks the peer, reads its request, answers.
async fn answer(stream: UnixStream, store: Arc<dyn Storage>, public_url: String, owner_uid: u32) {
    let peer = match stream.peer_cred() {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("till-server: the admin socket could not identify a peer: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let answer = if peer.uid() != owner_uid {
        eprintln!(
            "till-server: refused an admin socket connection from uid {} (the server runs as uid {owner_uid})",
            peer.uid()
        );
        Answer::Error {
            message: format!("the admin socket serves only its own user (uid {owner_uid})"),
        }
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(read)).await {
            Err(_) => Answer::Error {
                message: format!("no request within {} s", REQUEST_TIMEOUT.as_secs()),
            },
            Ok(Err(message)) => Answer::Error { message },
            Ok(Ok(request)) => perform(request, store.as_ref(), &public_url).await,
        }
    };
    let mut line = serde_json::to_vec(&answer).unwrap_or_default();
    line.push(b'\n');
    // The peer may be gone; there is nobody else to tell.
    let _ = write.write_all(&line).await;
    let _ = write.shutdown().await;
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request failed: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "a request is one JSON line of at most {MAX_REQUEST_BYTES} bytes"
        ));
    }
    serde_json::from_slice(&line)
        .map_err(|e| format!("not a request this socket serves ({e}); it only creates invitations"))
}

async fn perform(request: Request, store: &dyn Storage, public_url: &str) -> Answer {
    match request {
        Request::CreateInvite {
            store: name,
            public_url: asked,
            ttl_ms,
        } => {
            let url = asked.as_deref().unwrap_or(public_url);
            match crate::invite::create_in(store, &name, url, Duration::from_millis(ttl_ms)).await {
                Ok(invitation) => {
                    // The link carries the code, which never goes to a log.
                    eprintln!(
                        "till-server: created an invitation to store {name:?} for the admin socket"
                    );
                    Answer::Invitation {
                        link: invitation.link,
                        store: invitation.store,
                        expires_at_ms: invitation.expires_at_ms,
                    }
                }
                Err(e) => Answer::Error {
                    message: e.to_string(),
                },
            }
        }
    }
}

/// `invite create`'s end: asks the server running on `data_dir` to create the invitation.
/// `None` when no server listens there (no socket, or a stale one), so the caller opens the store
/// itself.
pub(crate) async fn request_invite(
    data_dir: &Path,
    store: &str,
    public_url: Option<&str>,
    ttl: Duration,
) -> Option<Result<Invitation, Error>> {
    let path = data_dir.join(SOCKET_NAME);
    let failed = |detail: String| {
        Some(Err(Error::Admin {
            path: path.clone(),
            detail,
        }))
    };
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        // No server: no socket, a stale one (connection refused), or a path too long to be one.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::InvalidInput
            ) =>
        {
            return None;
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return failed(format!(
                "{e}; run `invite create` as the user the server runs as"
            ));
        }
        Err(e) => return failed(format!("could not connect: {e}")),
    };
    let request = Request::CreateInvite {
        store: store.to_owned(),
        public_url: public_url.map(str::to_owned),
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    };
    let exchange = async {
        let mut stream = stream;
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| format!("sending the request failed: {e}"))?;
        let mut answer = Vec::new();
        BufReader::new(stream.take(MAX_REQUEST_BYTES))
            .read_until(b'\n', &mut answer)
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        serde_json::from_slice::<Answer>(&answer).map_err(|e| {
            format!("the server's answer is not one this version understands ({e}); is it another version of till-server?")
        })
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Err(_) => failed(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
        Ok(Err(detail)) => failed(detail),
        Ok(Ok(Answer::Error { message })) => failed(message),
        Ok(Ok(Answer::Invitation {
            link,
            store,
            expires_at_ms,
        })) => Some(Ok(Invitation {
            link,
            store,
            expires_at_ms,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStorage;

    #[tokio::test]
    async fn an_invitation_is_created_through_the_socket_and_nothing_else_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let socket = AdminSocket::bind(dir.path()).unwrap();
        let path = socket.path().to_owned();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is its owner's only");
        let store: Arc<dyn Storage> = Arc::new(RedbStorage::open_in_memory().unwrap());
        let served = tokio::spawn(socket.serve(store, "https://till.example.test/".to_owned()));

        let invitation = request_invite(dir.path(), "bakery", None, Duration::from_secs(60))
            .await
            .expect("a server answers")
            .unwrap();
        assert!(
            invitation
                .link
                .starts_with("https://till.example.test/invite/"),
            "the server's own URL: {}",
            invitation.link
        );
        assert_eq!(invitation.store, "bakery");
        let asked = request_invite(
            dir.path(),
            "bakery",
            Some("https://other.test"),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(asked.link.starts_with("https://other.test/invite/"));

        // Anything else is refused with a reason.
        for request in [
            &b"{\"request\":\"add_user\",\"name\":\"x\"}\n"[..],
            b"not json\n",
            b"{\"request\":\"create_invite\"}",
        ] {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            stream.write_all(request).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            let answer: Answer = serde_json::from_str(&answer).unwrap();
            assert!(
                matches!(answer, Answer::Error { .. }),
                "{request:?}: {answer:?}"
            );
        }

        // Stopped, the socket file is gone and invite create falls back to the file.
        served.abort();
        let _ = served.await;
        assert!(
            !path.exists(),
            "the socket is removed when the server stops"
        );
        assert!(
            request_invite(dir.path(), "bakery", None, Duration::from_secs(60))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_stale_socket_means_no_server() {
        let dir = tempfile::tempdir().unwrap();
        // A socket file nobody listens on, as a killed server leaves it.
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET_NAME)).unwrap();
        drop(stale);
        assert!(
            request_invite(dir.path(), "bakery", None, Duration::from_secs(60))
                .await
                .is_none()
        );
        // A new server replaces it.
        let socket = AdminSocket::bind(dir.path()).unwrap();
        assert!(socket.path().exists());
    }
}
