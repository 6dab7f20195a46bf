//! Device messages through the server's hub decoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = till_server::fuzzing::hub_messages(data);
});
