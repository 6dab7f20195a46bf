#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| till_log::fuzzing::decode_event(data));
