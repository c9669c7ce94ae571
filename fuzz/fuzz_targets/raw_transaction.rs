//! `verity_fuzz::raw_transaction` under libFuzzer (`make fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verity_fuzz::raw_transaction(data));
