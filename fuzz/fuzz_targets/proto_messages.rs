//! `verity_fuzz::proto_messages` under libFuzzer (`make fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verity_fuzz::proto_messages(data));
