//! VSS requests through the server's real router and handlers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = till_server::fuzzing::vss_requests(data);
});
