//! The restore planner: a pure function from the head and the server's
//! listing to the objects to fetch, refusing anything that does not add up.

use std::collections::HashMap;

use super::head::{Manifest, SnapshotRef};
use super::keys::names;

/// What to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything on the remote, up to its head.
    Latest,
    /// The state right after this seq (read-only).
    Seq(u64),
    /// The state at this time, unix ms: after the last event at or before it (read-only).
    Time(u64),
}

/// The objects a restore fetches, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot to start from, if any.
    pub snapshot: Option<SnapshotRef>,
    /// The segment ordinals to fetch and apply, in order.
    pub segments: Vec<u64>,
}

/// Why a restore cannot be planned. Each names what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The head is missing from the listing.
    #[error("the head is not in the server's listing")]
    NoHead,
    /// The head's VSS version is not the number of writes it records: it was
    /// put back to an older copy or rewritten outside the protocol.
    #[error(
        "the head was rolled back or rewritten: it records {recorded} writes but the server has it at version {listed}"
    )]
    HeadRolledBack {
        /// Writes the manifest records.
        recorded: u64,
        /// The head's version on the server.
        listed: i64,
    },
    /// A segment beyond the head's count exists: the head is older than the data.
    #[error(
        "segment {ordinal} exists beyond the head's {segments} segments: the head was rolled back"
    )]
    SegmentBeyondHead {
        /// The extra segment.
        ordinal: u64,
        /// The head's count.
        segments: u64,
    },
    /// A segment the head counts is missing (deleted or never landed).
    #[error("segment {ordinal} is missing from the server")]
    MissingSegment {
        /// The missing ordinal.
        ordinal: u64,
    },
    /// A write-once object has another version than 1: it was overwritten.
    #[error("{what} was overwritten on the server (version {version}, write-once objects have 1)")]
    Overwritten {
        /// Which object.
        what: String,
        /// Its version.
        version: i64,
    },
    /// A snapshot chunk the head points to is missing.
    #[error("chunk {chunk} of the snapshot at seq {seq} is missing from the server")]
    MissingSnapshotChunk {
        /// The snapshot's seq.
        seq: u64,
        /// The missing chunk.
        chunk: u32,
    },
    /// The point asked for is past the remote's last event.
    #[error("seq {requested} is beyond the backup's last event (seq {last})")]
    BeyondHead {
        /// What was asked.
        requested: u64,
        /// The remote's last seq.
        last: u64,
    },
    /// The point asked for was removed by the retention policy.
    #[error(
        "history before segment {first_segment} was deleted by the retention policy; the earliest restorable point is seq {earliest}"
    )]
    BeforeRetention {
        /// The oldest kept segment.
        first_segment: u64,
        /// The earliest seq that can still be restored.
        earliest: u64,
    },
}

/// Plans a restore of `target` from `manifest`, given the server's listing of
/// the store (opaque name -> version) and the function naming objects.
pub fn plan(
    manifest: &Manifest,
    listing: &HashMap<String, i64>,
    name: impl Fn(&str) -> String,
    target: Target,
) -> Result<Plan, PlanError> {
    let listed = *listing.get(&name(names::HEAD)).ok_or(PlanError::NoHead)?;
    if listed != manifest.writes as i64 {
        return Err(PlanError::HeadRolledBack {
            recorded: manifest.writes,
            listed,
        });
    }
    // Segments are written in order; a retried upload carries a few at most. (Saturating: the
    // manifest's count is whatever its writer put there, up to u64::MAX.)
    for ordinal in manifest.segments..manifest.segments.saturating_add(16) {
        if listing.contains_key(&name(&names::segment(ordinal))) {
            return Err(PlanError::SegmentBeyondHead {
                ordinal,
                segments: manifest.segments,
            });
        }
    }
    if let Target::Seq(seq) = target
        && seq > manifest.last_seq
    {
        return Err(PlanError::BeyondHead {
            requested: seq,
            last: manifest.last_seq,
        });
    }
    let usable = |s: &&SnapshotRef| match target {
        Target::Latest => true,
        Target::Seq(seq) => s.seq <= seq,
        Target::Time(t) => s.at_ms <= t,
    };
    let snapshot = manifest
        .snapshots
        .iter()
        .rev()
        .find(usable)
        .filter(|s| s.next_segment >= manifest.first_segment)
        .cloned();
    let start = match &snapshot {
        Some(s) => s.next_segment,
        None if manifest.first_segment == 0 => 0,
        None => {
            let earliest = manifest
                .snapshots
                .iter()
                .find(|s| s.next_segment >= manifest.first_segment)
                .map_or(manifest.last_seq, |s| s.seq);
            return Err(PlanError::BeforeRetention {
                first_segment: manifest.first_segment,
                earliest,
            });
        }
    };
    if let Some(s) = &snapshot {
        for chunk in 0..s.chunks {
            match listing.get(&name(&names::snapshot(s.seq, chunk))) {
                None => {
                    return Err(PlanError::MissingSnapshotChunk { seq: s.seq, chunk });
                }
                Some(&v) if v != 1 => {
                    return Err(PlanError::Overwritten {
                        what: format!("chunk {chunk} of the snapshot at seq {}", s.seq),
                        version: v,
                    });
                }
                Some(_) => {}
            }
        }
    }
    let mut segments = Vec::new();
    for ordinal in start..manifest.segments {
        match listing.get(&name(&names::segment(ordinal))) {
            None => return Err(PlanError::MissingSegment { ordinal }),
            Some(&v) if v != 1 => {
                return Err(PlanError::Overwritten {
                    what: format!("segment {ordinal}"),
                    version: v,
                });
            }
            Some(_) => segments.push(ordinal),
        }
    }
    Ok(Plan { snapshot, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::head::LeaseState;
    use till_log::{DeviceId, Hash};

    fn name(s: &str) -> String {
        format!("<{s}>")
    }

    fn manifest(segments: u64) -> Manifest {
        Manifest {
            state: LeaseState::Held,
            epoch: 1,
            last_seq: segments * 10,
            segments,
            writes: segments + 1,
            ..Manifest::new(DeviceId([1; 16]))
        }
    }

    fn listing(m: &Manifest) -> HashMap<String, i64> {
        let mut l: HashMap<String, i64> = (0..m.segments)
            .map(|o| (name(&names::segment(o)), 1))
            .collect();
        l.insert(name(names::HEAD), m.writes as i64);
        for s in &m.snapshots {
            for c in 0..s.chunks {
                l.insert(name(&names::snapshot(s.seq, c)), 1);
            }
        }
        l
    }

    #[test]
    fn plans_all_segments_in_order() {
        let m = manifest(5);
        let p = plan(&m, &listing(&m), name, Target::Latest).unwrap();
        assert_eq!(p.segments, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.snapshot, None);
    }

    #[test]
    fn refuses_gaps_rollbacks_and_overwrites() {
        let m = manifest(5);
        let mut l = listing(&m);
        l.remove(&name(&names::segment(2)));
        assert_eq!(
            plan(&m, &l, name, Target::Latest).unwrap_err(),
            PlanError::MissingSegment { ordinal: 2 }
        );
        let mut l = listing(&m);
        l.insert(name(&names::segment(5)), 1);
        assert!(matches!(
            plan(&m, &l, name, Target::Latest).unwrap_err(),
            PlanError::SegmentBeyondHead { ordinal: 5, .. }
        ));
        let mut l = listing(&m);
        l.insert(name(names::HEAD), 1);
        assert!(matches!(
            plan(&m, &l, name, Target::Latest).unwrap_err(),
            PlanError::HeadRolledBack { .. }
        ));
        let mut l = listing(&m);
        l.insert(name(&names::segment(1)), 2);
        assert!(matches!(
            plan(&m, &l, name, Target::Latest).unwrap_err(),
            PlanError::Overwritten { .. }
        ));
        assert!(matches!(
            plan(&m, &listing(&m), name, Target::Seq(51)).unwrap_err(),
            PlanError::BeyondHead {
                requested: 51,
                last: 50
            }
        ));
    }

    #[test]
    fn a_segment_count_at_the_limit_plans_without_overflow() {
        // Found by the restore_plan fuzz target: `segments + 16` overflowed.
        let mut m = manifest(0);
        m.segments = u64::MAX - 3;
        m.first_segment = u64::MAX - 4;
        m.snapshots = vec![SnapshotRef {
            seq: 5,
            hash: Hash::GENESIS,
            at_ms: 0,
            chunks: 0,
            next_segment: u64::MAX - 4,
        }];
        let mut l = HashMap::from([
            (name(names::HEAD), m.writes as i64),
            (name(&names::segment(u64::MAX - 4)), 1),
        ]);
        let p = plan(&m, &l, name, Target::Latest).unwrap();
        assert_eq!(p.segments, vec![u64::MAX - 4]);
        l.insert(name(&names::segment(u64::MAX - 1)), 1);
        assert!(matches!(
            plan(&m, &l, name, Target::Latest).unwrap_err(),
            PlanError::SegmentBeyondHead { ordinal, .. } if ordinal == u64::MAX - 1
        ));
    }

    #[test]
    fn starts_from_the_latest_usable_snapshot() {
        let mut m = manifest(6);
        let snap = |seq, at_ms, next_segment| SnapshotRef {
            seq,
            hash: Hash::GENESIS,
            at_ms,
            chunks: 2,
            next_segment,
        };
        m.snapshots = vec![snap(20, 200, 2), snap(40, 400, 4)];
        let l = listing(&m);
        let p = plan(&m, &l, name, Target::Latest).unwrap();
        assert_eq!((p.snapshot.unwrap().seq, p.segments), (40, vec![4, 5]));
        let p = plan(&m, &l, name, Target::Seq(39)).unwrap();
        assert_eq!(
            (p.snapshot.unwrap().seq, p.segments),
            (20, vec![2, 3, 4, 5])
        );
        let p = plan(&m, &l, name, Target::Time(150)).unwrap();
        assert_eq!((p.snapshot, p.segments.len()), (None, 6));
        let mut l2 = l.clone();
        l2.remove(&name(&names::snapshot(40, 1)));
        assert_eq!(
            plan(&m, &l2, name, Target::Latest).unwrap_err(),
            PlanError::MissingSnapshotChunk { seq: 40, chunk: 1 }
        );
        // Retention dropped segments 0 and 1: seq 10 is gone, seq 25 is not.
        m.first_segment = 2;
        let mut l3 = l.clone();
        l3.remove(&name(&names::segment(0)));
        l3.remove(&name(&names::segment(1)));
        assert!(matches!(
            plan(&m, &l3, name, Target::Seq(10)).unwrap_err(),
            PlanError::BeforeRetention { earliest: 20, .. }
        ));
        assert!(plan(&m, &l3, name, Target::Seq(25)).is_ok());
    }
}
