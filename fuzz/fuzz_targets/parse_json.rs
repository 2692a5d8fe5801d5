//! Fuzz target `parse_json`: see `proxy_checker::fuzzing::parse_json` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::parse_json(data));
