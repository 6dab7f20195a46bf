//! A VSS server's answer as the client decodes it: the call, the HTTP status and the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = till_vss::fuzzing::vss_response(data);
});
