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

/// Found by the `snapshot` fuzz target: a log started from a snapshot at seq `u64::MAX` overflowed
/// computing the next seq (`Log::verify`'s `base.seq + 1`), and an entry at version `u64::MAX`
/// the next put's version. `install_snapshot` now refuses seqs and versions above `MAX_SEQ`.
#[test]
fn a_snapshot_at_the_last_seq_installs_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = till_log::Log::open(dir.path().join("till.redb")).unwrap();
    let state = till_log::State::from_snapshot(
        std::collections::BTreeMap::new(),
        u64::MAX,
        till_log::Hash([1; 32]),
        0,
    );
    assert!(matches!(
        log.install_snapshot(&state),
        Err(till_log::ApplyError::SeqOutOfRange { seq: u64::MAX })
    ));
    let mut entries = std::collections::BTreeMap::new();
    entries.insert(
        till_log::Key::new("n", "", "k"),
        till_log::Entry {
            version: u64::MAX,
            seq: 5,
            value: Some(vec![1]),
        },
    );
    let state = till_log::State::from_snapshot(entries, 5, till_log::Hash([1; 32]), 0);
    assert!(matches!(
        log.install_snapshot(&state),
        Err(till_log::ApplyError::SeqOutOfRange { .. })
    ));
    // At the limit it installs, verifies and takes one more event.
    let state = till_log::State::from_snapshot(
        std::collections::BTreeMap::new(),
        till_log::MAX_SEQ,
        till_log::Hash([1; 32]),
        0,
    );
    log.install_snapshot(&state).unwrap();
    log.verify().unwrap();
    log.put(till_log::Key::new("n", "", "k"), vec![2]).unwrap();
    log.verify().unwrap();
}
