//! A device's view of the backup: pulling (followers, R5), acquiring,
//! resuming and taking over the lease (R4).

use std::sync::Arc;

use till_log::{ApplyError, DeviceId, Event, Hash, Log, ReadError, Writer};

use super::head::{LeaseHeader, LeaseState, Manifest};
use super::remote::{Remote, RemoteError};
use super::restore::{Progress, fetch_in_order};
use crate::Error as VssError;

/// Local record holding the next segment ordinal this device has not applied
/// or shipped (u64 LE).
pub(crate) const NEXT_SEGMENT: &str = "till-vss.next_segment";

/// Why a replica operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// Talking to the backup store failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Another device holds the lease.
    #[error(
        "another device is master: device {device} holds the lease (epoch {epoch}); hand off from it, or take over if it is lost"
    )]
    LeaseHeld {
        /// The holder.
        device: DeviceId,
        /// Its epoch.
        epoch: u64,
    },
    /// This device has local events that never reached the server, and the
    /// server moved on without them.
    #[error(
        "this device has {unshipped} events that never reached the server, and the backup has moved on to seq {remote_seq} without them; restore this device from the backup"
    )]
    LocalFork {
        /// Events only this device has.
        unshipped: u64,
        /// The backup's last seq.
        remote_seq: u64,
    },
    /// The local log and the backup disagree at a seq both have.
    #[error("the local log and the backup differ at seq {seq}: local {local}, backup {remote}")]
    Diverged {
        /// The seq.
        seq: u64,
        /// Local hash there.
        local: Hash,
        /// The backup's hash there.
        remote: Hash,
    },
    /// The backup has fewer events than this device already shipped to it.
    #[error(
        "the backup ends at seq {remote_seq} but this device had shipped up to seq {shipped}: the server lost or rolled back data"
    )]
    RemoteBehind {
        /// What this device shipped.
        shipped: u64,
        /// What the backup has.
        remote_seq: u64,
    },
    /// The head's VSS version does not match its own count of writes.
    #[error(
        "the backup's head was rolled back or rewritten (it records {recorded} writes, the server has version {listed})"
    )]
    HeadRolledBack {
        /// Writes the head records.
        recorded: u64,
        /// Its version on the server.
        listed: i64,
    },
    /// Applying pulled events to the local log failed.
    #[error("the pulled events do not apply to the local log: {0}")]
    Apply(#[from] ApplyError),
    /// Reading the local log failed.
    #[error("reading the local log failed: {0}")]
    Local(#[from] ReadError),
    /// Writing a local record failed.
    #[error("writing the local log failed: {0}")]
    LocalWrite(#[from] till_log::StorageError),
    /// Others kept changing the head while this device tried to write it.
    #[error("the lease is contended: the head changed under {0} attempts in a row")]
    Contended(u32),
}

/// Proof that a person confirmed taking over the lease from another device
/// (which will be fenced on its next write).
#[derive(Clone, Copy, Debug)]
pub struct TakeoverConfirmed(());

impl TakeoverConfirmed {
    /// The user confirmed that the other device is lost or must stop.
    pub fn confirmed_by_user() -> Self {
        Self(())
    }
}

/// A lease this device holds: what the replicator starts from.
#[derive(Clone, Debug)]
pub struct Lease {
    pub(crate) manifest: Manifest,
    pub(crate) version: i64,
}

impl Lease {
    /// The lease epoch.
    pub fn epoch(&self) -> u64 {
        self.manifest.epoch
    }

    /// The holder (this device).
    pub fn device(&self) -> DeviceId {
        self.manifest.device
    }

    /// The manifest as last written.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// What a pull did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Events applied.
    pub events: u64,
    /// Segments fetched.
    pub segments: u64,
    /// Whether the pull started from a snapshot.
    pub from_snapshot: bool,
    /// The local head after the pull.
    pub seq: u64,
}

/// One device's replica of the backup: its local log and the remote store.
#[derive(Clone, Debug)]
pub struct Replica {
    log: Arc<Log>,
    remote: Remote,
    device: DeviceId,
}

impl Replica {
    /// A replica of `remote` in `log`, for this `device`.
    pub fn new(log: Arc<Log>, remote: Remote, device: DeviceId) -> Self {
        Self {
            log,
            remote,
            device,
        }
    }

    /// The local log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The remote store.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Who holds the lease now, from the head (`None` for a new store).
    pub async fn lease(&self) -> Result<Option<LeaseHeader>, ReplicaError> {
        Ok(self.remote.head().await?.map(|(m, _)| m.lease()))
    }

    /// Pulls and applies every remote event the local log lacks (R5). A
    /// follower calls this to stay current; acquire calls it first.
    pub async fn sync(&self) -> Result<SyncReport, ReplicaError> {
        self.sync_with_progress(&mut |_| {}).await
    }

    /// [`Replica::sync`], telling `progress` its plan (the segments to pull), the snapshot it
    /// starts from if any, and each segment applied, as a restore does.
    pub async fn sync_with_progress(
        &self,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<SyncReport, ReplicaError> {
        match self.remote.head().await? {
            None => Ok(SyncReport {
                seq: self.log.head()?.seq,
                ..SyncReport::default()
            }),
            Some((m, version)) => self.sync_to(&m, version, progress).await,
        }
    }

    /// Brings the local log to the manifest's head.
    async fn sync_to(
        &self,
        m: &Manifest,
        version: i64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<SyncReport, ReplicaError> {
        if m.writes as i64 != version {
            return Err(ReplicaError::HeadRolledBack {
                recorded: m.writes,
                listed: version,
            });
        }
        let local = self.log.head()?;
        let shipped = self.log.shipped()?;
        if shipped > m.last_seq {
            return Err(ReplicaError::RemoteBehind {
                shipped,
                remote_seq: m.last_seq,
            });
        }
        let mut report = SyncReport {
            seq: local.seq,
            ..SyncReport::default()
        };
        if local.seq >= m.last_seq {
            return match self.check_same_at(m.last_seq, m.last_hash) {
                Ok(()) => Ok(report),
                // The backup moved on past what this device shipped, over
                // events only this device has: its log forked, the backup is fine.
                Err(ReplicaError::Diverged { seq, .. }) if seq > shipped => {
                    Err(ReplicaError::LocalFork {
                        unshipped: local.seq - shipped,
                        remote_seq: m.last_seq,
                    })
                }
                Err(e) => Err(e),
            };
        }
        // Events after the watermark may be on the server already: a crash or a power cut keeps
        // what the log synced and rolls back the unsynced commit that moved the watermark
        // (`Log::mark_shipped_unsynced`). They are the server's own exactly when the server's
        // event at the local head is the same event (the hash chain covers all before it);
        // otherwise they forked. Checked on the segments pulled below, before any is applied.
        let mut unconfirmed = (local.seq > shipped).then_some(local);
        let (unshipped, remote_seq) = (local.seq - shipped, m.last_seq);
        let fork = move || ReplicaError::LocalFork {
            unshipped,
            remote_seq,
        };
        let mut next = self.next_segment()?.max(m.first_segment);
        if local.seq == 0
            && let Some(snapshot) = m.snapshots.last()
            && (m.first_segment > 0 || snapshot.seq > 0)
        {
            progress(Progress::Planned {
                segments: m.segments.saturating_sub(snapshot.next_segment),
                snapshot: Some(snapshot.seq),
                last_seq: m.last_seq,
            });
            let state = self.remote.snapshot(snapshot).await?;
            self.log.install_snapshot(&state)?;
            progress(Progress::SnapshotLoaded { seq: snapshot.seq });
            next = snapshot.next_segment;
            report.from_snapshot = true;
        } else {
            progress(Progress::Planned {
                segments: m.segments.saturating_sub(next),
                snapshot: None,
                last_seq: m.last_seq,
            });
        }
        let mut seq = self.log.head()?.seq;
        let ordinals: Vec<u64> = (next..m.segments).collect();
        let total = ordinals.len() as u64;
        fetch_in_order(&self.remote, &ordinals, |o, events| {
            if let Some(head) = unconfirmed {
                match events.iter().find(|e| e.seq >= head.seq) {
                    Some(e) if e.seq == head.seq && e.hash() == head.hash => {
                        self.log
                            .mark_shipped(head.seq)
                            .map_err(|e| ReadError::Corrupt {
                                seq: head.seq,
                                reason: e.to_string(),
                            })?;
                        unconfirmed = None;
                    }
                    Some(_) => return Err(fork()),
                    // The segment ends before the local head: still this device's past.
                    None => {}
                }
            }
            let fresh: Vec<Event> = events.into_iter().filter(|e| e.seq > seq).collect();
            if let Some(last) = fresh.last() {
                seq = last.seq;
                report.events += fresh.len() as u64;
                self.log.apply(&fresh)?;
            }
            report.segments += 1;
            self.set_next_segment(o + 1)?;
            progress(Progress::Segment {
                done: report.segments,
                total,
                seq,
            });
            Ok::<_, ReplicaError>(true)
        })
        .await?;
        if unconfirmed.is_some() {
            return Err(fork());
        }
        self.check_same_at(m.last_seq, m.last_hash)?;
        report.seq = self.log.head()?.seq;
        Ok(report)
    }

    /// Checks that the local event at `seq` hashes to `hash`.
    fn check_same_at(&self, seq: u64, hash: Hash) -> Result<(), ReplicaError> {
        let local = if seq == 0 {
            Hash::GENESIS
        } else {
            match self.log.event(seq)? {
                Some(e) => e.hash(),
                None => {
                    let base = self.log.base()?;
                    if base.seq == seq {
                        base.hash
                    } else {
                        return Err(ReplicaError::Diverged {
                            seq,
                            local: Hash::GENESIS,
                            remote: hash,
                        });
                    }
                }
            }
        };
        if local != hash {
            return Err(ReplicaError::Diverged {
                seq,
                local,
                remote: hash,
            });
        }
        Ok(())
    }

    pub(crate) fn next_segment(&self) -> Result<u64, ReplicaError> {
        Ok(self
            .log
            .local_get(NEXT_SEGMENT)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0))
    }

    pub(crate) fn set_next_segment(&self, ordinal: u64) -> Result<(), ReplicaError> {
        self.log
            .local_put(NEXT_SEGMENT, &ordinal.to_le_bytes())
            .map_err(Into::into)
    }

    /// Acquires the lease (R4): only when the store is new, released, or
    /// already held by this device (a restart resumes it). Pulls everything
    /// first (R5). Sets the log's writer to this device and the new epoch.
    pub async fn acquire(&self) -> Result<Lease, ReplicaError> {
        self.take(false).await
    }

    /// Takes the lease over from another device that holds it (R4), bumping
    /// the epoch; that device is fenced on its next write. Needs the user's
    /// confirmation.
    pub async fn takeover(&self, _confirmed: TakeoverConfirmed) -> Result<Lease, ReplicaError> {
        self.take(true).await
    }

    async fn take(&self, takeover: bool) -> Result<Lease, ReplicaError> {
        const ATTEMPTS: u32 = 5;
        for _ in 0..ATTEMPTS {
            let (next, expected_version) = match self.remote.head().await? {
                None => {
                    let shipped = self.log.shipped()?;
                    if shipped > 0 {
                        return Err(ReplicaError::RemoteBehind {
                            shipped,
                            remote_seq: 0,
                        });
                    }
                    let mut m = Manifest::new(self.device);
                    m.epoch = 1;
                    m.state = LeaseState::Held;
                    m.writes = 1;
                    (m, 0)
                }
                Some((m, version)) => {
                    if m.state == LeaseState::Held && m.device == self.device {
                        // Our own lease, from before a restart: resume it,
                        // pulling first if this device's log is behind it.
                        if m.last_seq > self.log.head()?.seq {
                            self.sync_to(&m, version, &mut |_| {}).await?;
                        }
                        let lease = Lease {
                            manifest: m,
                            version,
                        };
                        self.resume(&lease)?;
                        return Ok(lease);
                    }
                    if m.state == LeaseState::Held && !takeover {
                        return Err(ReplicaError::LeaseHeld {
                            device: m.device,
                            epoch: m.epoch,
                        });
                    }
                    self.sync_to(&m, version, &mut |_| {}).await?;
                    let mut n = m.clone();
                    n.device = self.device;
                    n.epoch = m.epoch + 1;
                    n.state = LeaseState::Held;
                    n.writes = m.writes + 1;
                    (n, version)
                }
            };
            let item = self.remote.head_item(&next, expected_version);
            match self.remote.put(vec![item], vec![]).await {
                Ok(()) => {
                    let lease = Lease {
                        version: expected_version + 1,
                        manifest: next,
                    };
                    self.resume(&lease)?;
                    return Ok(lease);
                }
                Err(VssError::Conflict { .. }) => continue,
                Err(e) => return Err(RemoteError::from(e).into()),
            }
        }
        Err(ReplicaError::Contended(ATTEMPTS))
    }

    /// Makes the local log agree with a lease this device holds: events the
    /// server has but the outbox still lists (an upload whose answer was lost
    /// before a restart) are marked shipped; the writer is set.
    fn resume(&self, lease: &Lease) -> Result<(), ReplicaError> {
        let m = &lease.manifest;
        let local = self.log.head()?;
        let shipped = self.log.shipped()?;
        if m.last_seq > local.seq {
            return Err(ReplicaError::LocalFork {
                unshipped: local.seq - shipped,
                remote_seq: m.last_seq,
            });
        }
        self.check_same_at(m.last_seq, m.last_hash)?;
        if m.last_seq > shipped {
            self.log.mark_shipped(m.last_seq).map_err(|e| {
                ReplicaError::Local(ReadError::Corrupt {
                    seq: m.last_seq,
                    reason: e.to_string(),
                })
            })?;
        }
        if self.next_segment()? < m.segments {
            self.set_next_segment(m.segments)?;
        }
        self.log.set_writer(Writer {
            device: self.device,
            epoch: m.epoch,
        });
        Ok(())
    }
}
