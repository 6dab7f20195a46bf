//! Restore (R7): plan, fetch in parallel, open, verify the chain against the
//! head, apply. To the latest state into a fresh log (a device that will run
//! the node), or read-only to a seq or a time (for inspection; never a node).

use till_log::{ApplyError, Event, FoldError, Hash, Log, ReadError, State};

use super::device::NEXT_SEGMENT;
use super::head::Manifest;
use super::plan::{Plan, PlanError, Target, plan};
use super::remote::{Remote, RemoteError};

/// How many segments are fetched at once.
const FETCH_WINDOW: usize = 8;

/// Progress of a restore, reported through the caller's callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The plan is made: this many segments to fetch, starting from a
    /// snapshot at this seq (if any); the backup ends at `last_seq`.
    Planned {
        /// Segments to fetch.
        segments: u64,
        /// The snapshot's seq, if the restore starts from one.
        snapshot: Option<u64>,
        /// The backup's last seq.
        last_seq: u64,
    },
    /// The snapshot is loaded.
    SnapshotLoaded {
        /// Its seq.
        seq: u64,
    },
    /// One more segment is applied; the state is now at `seq`.
    Segment {
        /// Segments applied so far.
        done: u64,
        /// Segments in the plan.
        total: u64,
        /// The state's seq.
        seq: u64,
    },
    /// The result was checked against the head.
    Verified {
        /// The final seq.
        seq: u64,
    },
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored state's seq.
    pub seq: u64,
    /// Hash of the event at `seq`.
    pub hash: Hash,
    /// Events applied from segments.
    pub events: u64,
    /// Segments fetched.
    pub segments: u64,
    /// The snapshot it started from, if any.
    pub snapshot: Option<u64>,
}

/// Why a restore failed. Nothing is started on a failed restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Talking to the store, or opening an object, failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The store holds no backup.
    #[error("no backup found in store {0}")]
    NoBackup(String),
    /// The objects on the server do not add up.
    #[error("the backup cannot be restored: {0}")]
    Plan(#[from] PlanError),
    /// A segment's events do not continue the chain.
    #[error("segment {ordinal} does not continue the backup's history: {error}")]
    Broken {
        /// The segment.
        ordinal: u64,
        /// How it breaks the chain.
        error: FoldError,
    },
    /// The restored state does not end where the head says.
    #[error(
        "the backup's segments end at seq {seq} ({hash}) but its head says seq {head_seq} ({head_hash})"
    )]
    HeadMismatch {
        /// Where the segments end.
        seq: u64,
        /// Hash there.
        hash: Hash,
        /// Where the head says.
        head_seq: u64,
        /// Hash the head gives.
        head_hash: Hash,
    },
    /// The destination log is not empty.
    #[error("the destination log is not empty (it ends at seq {0}); restore into a new file")]
    NotEmpty(u64),
    /// Writing the restored events failed.
    #[error("writing the restored log failed: {0}")]
    Apply(#[from] ApplyError),
    /// Reading the destination log failed.
    #[error("reading the destination log failed: {0}")]
    Local(#[from] ReadError),
    /// Writing a local record failed.
    #[error("writing the restored log failed: {0}")]
    LocalWrite(#[from] till_log::StorageError),
}

/// Reads the head and the listing as one consistent view and plans. A master
/// may write while a device restores: the head and the listing are read
/// head, listing, head, and read again if the head moved in between, so a
/// live master is never mistaken for a rolled-back head.
async fn head_and_plan(remote: &Remote, target: Target) -> Result<(Manifest, Plan), RestoreError> {
    const ATTEMPTS: usize = 10;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (manifest, version) = remote
            .head()
            .await?
            .ok_or_else(|| RestoreError::NoBackup(remote.store_id().to_string()))?;
        let listing = remote.listing().await?;
        let (again, version_again) = remote
            .head()
            .await?
            .ok_or_else(|| RestoreError::NoBackup(remote.store_id().to_string()))?;
        if (again.writes, version_again) != (manifest.writes, version) && attempt < ATTEMPTS {
            // The master wrote meanwhile; the listing may be newer than the head.
            tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
            continue;
        }
        let plan = plan(&manifest, &listing, |n| remote.name(n), target)?;
        return Ok((manifest, plan));
    }
}

/// Fetches the plan's segments in parallel windows and hands them to `apply`
/// in order, stopping when `apply` says it has enough.
pub(crate) async fn fetch_in_order<E: From<RemoteError>>(
    remote: &Remote,
    ordinals: &[u64],
    mut apply: impl FnMut(u64, Vec<Event>) -> Result<bool, E>,
) -> Result<(), E> {
    for window in ordinals.chunks(FETCH_WINDOW) {
        let fetches: Vec<_> = window
            .iter()
            .map(|&o| {
                let remote = remote.clone();
                tokio::spawn(async move { remote.segment(o).await })
            })
            .collect();
        let mut fetches = fetches.into_iter();
        for &ordinal in window {
            let events = fetches
                .next()
                .expect("one fetch per ordinal")
                .await
                .expect("segment fetch task panicked")?;
            if !apply(ordinal, events)? {
                for rest in fetches {
                    rest.abort();
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Restores the latest state of the backup into `log`, which must be empty,
/// keeping every seq. The log is then ready for [`super::Replica::acquire`].
pub async fn restore(
    remote: &Remote,
    log: &Log,
    mut progress: impl FnMut(Progress),
) -> Result<RestoreReport, RestoreError> {
    let head = log.head()?;
    if head.seq != 0 {
        return Err(RestoreError::NotEmpty(head.seq));
    }
    let (manifest, plan) = head_and_plan(remote, Target::Latest).await?;
    progress(Progress::Planned {
        segments: plan.segments.len() as u64,
        snapshot: plan.snapshot.as_ref().map(|s| s.seq),
        last_seq: manifest.last_seq,
    });
    if let Some(snapshot) = &plan.snapshot {
        let state = remote.snapshot(snapshot).await?;
        log.install_snapshot(&state)?;
        progress(Progress::SnapshotLoaded { seq: snapshot.seq });
    }
    let mut state_seq = log.head()?.seq;
    let (mut events, mut done) = (0u64, 0u64);
    let total = plan.segments.len() as u64;
    fetch_in_order(remote, &plan.segments, |ordinal, batch| {
        let fresh: Vec<Event> = batch.into_iter().filter(|e| e.seq > state_seq).collect();
        match log.apply(&fresh) {
            Ok(h) => state_seq = h.seq,
            Err(ApplyError::DoesNotContinue(error)) => {
                return Err(RestoreError::Broken { ordinal, error });
            }
            Err(e) => return Err(e.into()),
        }
        events += fresh.len() as u64;
        done += 1;
        progress(Progress::Segment {
            done,
            total,
            seq: state_seq,
        });
        Ok(true)
    })
    .await?;
    let head = log.head()?;
    if head.seq != manifest.last_seq || head.hash != manifest.last_hash {
        return Err(RestoreError::HeadMismatch {
            seq: head.seq,
            hash: head.hash,
            head_seq: manifest.last_seq,
            head_hash: manifest.last_hash,
        });
    }
    log.local_put(NEXT_SEGMENT, &manifest.segments.to_le_bytes())?;
    progress(Progress::Verified { seq: head.seq });
    Ok(RestoreReport {
        seq: head.seq,
        hash: head.hash,
        events,
        segments: done,
        snapshot: plan.snapshot.map(|s| s.seq),
    })
}

/// Rebuilds, read-only and in memory, the state of the backup at `target`
/// (the latest, a seq, or a time). Nothing is written and no node can be
/// started from it. For [`Target::Latest`] the result is checked against the
/// head.
pub async fn restore_state(
    remote: &Remote,
    target: Target,
    mut progress: impl FnMut(Progress),
) -> Result<State, RestoreError> {
    let (manifest, plan) = head_and_plan(remote, target).await?;
    progress(Progress::Planned {
        segments: plan.segments.len() as u64,
        snapshot: plan.snapshot.as_ref().map(|s| s.seq),
        last_seq: manifest.last_seq,
    });
    let mut state = match &plan.snapshot {
        Some(s) => {
            let state = remote.snapshot(s).await?;
            progress(Progress::SnapshotLoaded { seq: s.seq });
            state
        }
        None => State::new(),
    };
    let stop_after = |e: &Event| match target {
        Target::Latest => false,
        Target::Seq(seq) => e.seq > seq,
        Target::Time(t) => e.at_ms > t,
    };
    let already_done = match target {
        Target::Latest => false,
        Target::Seq(seq) => state.seq() >= seq,
        Target::Time(_) => false,
    };
    let (mut done, total) = (0u64, plan.segments.len() as u64);
    if !already_done {
        fetch_in_order::<RestoreError>(remote, &plan.segments, |ordinal, batch| {
            let from = state.seq();
            for e in batch.iter().filter(|e| e.seq > from) {
                if stop_after(e) {
                    return Ok(false);
                }
                state
                    .apply(e)
                    .map_err(|error| RestoreError::Broken { ordinal, error })?;
            }
            done += 1;
            progress(Progress::Segment {
                done,
                total,
                seq: state.seq(),
            });
            Ok(match target {
                Target::Seq(seq) => state.seq() < seq,
                _ => true,
            })
        })
        .await?;
    }
    if target == Target::Latest
        && (state.seq() != manifest.last_seq || state.hash() != manifest.last_hash)
    {
        return Err(RestoreError::HeadMismatch {
            seq: state.seq(),
            hash: state.hash(),
            head_seq: manifest.last_seq,
            head_hash: manifest.last_hash,
        });
    }
    progress(Progress::Verified { seq: state.seq() });
    Ok(state)
}
