//! The checks the fuzz targets run, shared with the test that replays their
//! corpora, so a corpus file is checked the same way in both places. Not part
//! of the stable API.

use crate::event::Event;
use crate::segment::{Binding, SealKey, decode_segment_payload, open_segment};

/// The key and binding the `open_segment` target opens with; seeds are sealed
/// under them.
pub fn fuzz_key() -> (SealKey, &'static str, &'static str) {
    (SealKey::from_bytes([0x5a; 32]), "fuzz-store", "fuzz-object")
}

/// Decodes `data` as an event record; whatever decodes must re-encode to a
/// record that decodes to the same event.
pub fn decode_event(data: &[u8]) {
    if let Ok(event) = Event::decode(data) {
        let again = Event::decode(&event.encode()).expect("a re-encoded event decodes");
        assert_eq!(again, event);
    }
}

/// Opens `data` as a segment under the fuzz key; must return an error, never
/// panic, on anything but a genuine segment.
pub fn open_segment_bytes(data: &[u8]) {
    let (key, store, name) = fuzz_key();
    if let Ok(events) = open_segment(data, &key, &Binding::new(store, name)) {
        for e in &events {
            assert_eq!(Event::decode(&e.encode()).as_ref(), Ok(e));
        }
    }
}

/// Decodes `data` as a segment's plaintext (what an authenticated but buggy
/// writer could produce).
pub fn segment_payload(data: &[u8]) {
    let _ = decode_segment_payload(data);
}
