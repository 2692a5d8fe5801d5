//! Fuzz target `parse_list`: see `proxy_checker::fuzzing::parse_list` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::parse_list(data));
