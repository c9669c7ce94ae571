//! `verity_fuzz::chain_events` under libFuzzer (`make fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verity_fuzz::chain_events(data));
