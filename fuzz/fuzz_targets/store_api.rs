//! Store API requests (invoices, pay, refund, invitations) through the server's real router.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = till_server::fuzzing::store_api(data);
});
