//! Fuzz target `http_head`: see `proxy_checker::fuzzing::http_head` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::http_head(data));
