//! Fuzz target `socks_reply`: see `proxy_checker::fuzzing::socks_reply` (the same function the corpus replay test calls).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_checker::fuzzing::socks_reply(data));
