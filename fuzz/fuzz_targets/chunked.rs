//! Fuzz target `chunked`: see `proxy_checker::fuzzing::chunked` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::chunked(data));
