//! Fuzz target `http_response`: see `proxy_checker::fuzzing::http_response` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::http_response(data));
