#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mupdated::fuzzing::command_round_trip(data);
});
