#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coffer_fuzz::crypto::chunk_open(data));
