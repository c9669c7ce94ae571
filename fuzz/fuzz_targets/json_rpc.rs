//! `verity_fuzz::json_rpc` under libFuzzer (`make fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verity_fuzz::json_rpc(data));
