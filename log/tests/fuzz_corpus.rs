//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run, as an ordinary test.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus of {target} is empty");
    n
}

#[test]
fn decode_event_corpus() {
    replay("decode_event", till_log::fuzzing::decode_event);
}

#[test]
fn open_segment_corpus() {
    replay("open_segment", till_log::fuzzing::open_segment_bytes);
}

#[test]
fn segment_payload_corpus() {
    replay("segment_payload", till_log::fuzzing::segment_payload);
}

#[test]
fn seeds_are_genuine() {
    // The segment seeds open and hold events that continue one another.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/open_segment");
    let (key, store, name) = till_log::fuzzing::fuzz_key();
    let seed = std::fs::read(dir.join("segment-true")).unwrap();
    let events =
        till_log::segment::open_segment(&seed, &key, &till_log::segment::Binding::new(store, name))
            .unwrap();
    let mut state = till_log::State::new();
    for e in &events {
        state.apply(e).unwrap();
    }
    assert_eq!(state.seq(), 4);
}

/// Found by the `snapshot` fuzz target and not fixed yet: a log started from a snapshot at seq
/// `u64::MAX` overflows computing the next seq (`Log::verify`'s `base.seq + 1`, and likewise
/// `replay` and the fold's seq check; an entry at version `u64::MAX` overflows the next put's
/// version). Only a holder of the backup key can write such a snapshot. The `snapshot` target
/// skips seq `u64::MAX` until this passes; then drop the `ignore` and that skip.
#[test]
#[ignore = "known overflow at seq u64::MAX in till-log, see the comment"]
fn a_snapshot_at_the_last_seq_installs_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = till_log::Log::open(dir.path().join("till.redb")).unwrap();
    let state = till_log::State::from_snapshot(
        std::collections::BTreeMap::new(),
        u64::MAX,
        till_log::Hash([1; 32]),
        0,
    );
    // Either refused here or installed and verified; never a panic.
    if log.install_snapshot(&state).is_ok() {
        log.verify().unwrap();
    }
}
