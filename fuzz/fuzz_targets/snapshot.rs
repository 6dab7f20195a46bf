//! Snapshot chunks opened as a restore opens them, then installed into a fresh log.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    till_vss::fuzzing::snapshot(data);
});
