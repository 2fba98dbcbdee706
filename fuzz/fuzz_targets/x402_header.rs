#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost::fuzzing::x402_header(data));
