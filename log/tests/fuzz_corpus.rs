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
