#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost::fuzzing::voice_text(data));
