//! A head object's value as a server returns it: the lease header and the sealed manifest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    till_vss::fuzzing::open_head(data);
});
