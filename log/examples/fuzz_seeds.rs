//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/`:
//! `cargo run -p till-log --example fuzz_seeds`.

use std::path::Path;

use till_log::segment::{Binding, seal_segment};
use till_log::{DeviceId, Event, Hash, Key, Op};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut prev = Hash::GENESIS;
    let events: Vec<Event> = (1..=4u64)
        .map(|seq| {
            let e = Event {
                seq,
                key: Key::new("monitors", "", format!("k{}", seq % 2)),
                version: (seq - 1) / 2,
                op: if seq == 4 {
                    Op::Delete
                } else {
                    Op::Put(vec![seq as u8; 12])
                },
                at_ms: 1_700_000_000_000 + seq,
                device: DeviceId([3; 16]),
                epoch: 1,
                prev_hash: prev,
            };
            prev = e.hash();
            e
        })
        .collect();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for e in &events {
        write("decode_event", &format!("event-{}", e.seq), &e.encode());
    }
    let (key, store, name) = till_log::fuzzing::fuzz_key();
    for compress in [false, true] {
        let sealed = seal_segment(&events, &key, &Binding::new(store, name), compress).unwrap();
        write("open_segment", &format!("segment-{compress}"), &sealed);
    }
    write(
        "segment_payload",
        "events",
        &postcard::to_stdvec(&events).unwrap(),
    );
    println!("seeds written to {}", root.display());
}
