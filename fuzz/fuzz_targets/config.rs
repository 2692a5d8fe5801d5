//! Fuzz target `config`: see `proxy_checker::fuzzing::config` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::config(data));
