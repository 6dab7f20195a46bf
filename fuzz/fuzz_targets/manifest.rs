//! A lease header and a manifest's plaintext, sealed by the harness: the manifest's decoder
//! behind the seal.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    till_vss::fuzzing::manifest(data);
});
