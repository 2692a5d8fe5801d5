//! Fuzz target `judge_echo`: see `proxy_checker::fuzzing::judge_echo` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::judge_echo(data));
