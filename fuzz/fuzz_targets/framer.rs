#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    mupdated::fuzzing::framer(input.1, input.0 as usize);
});
