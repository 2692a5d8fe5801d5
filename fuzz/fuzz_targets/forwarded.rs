//! Fuzz target `forwarded`: see `proxy_checker::fuzzing::forwarded` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::forwarded(data));
