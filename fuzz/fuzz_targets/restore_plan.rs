//! The restore planner on an arbitrary head, listing and target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    till_vss::fuzzing::restore_plan(data);
});
