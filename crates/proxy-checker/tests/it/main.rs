//! The product's integration tests, in one binary (one link, one place to look). Each
//! module is one concern; `common` is the harness that starts the real server on an
//! ephemeral port. Tests that measure the heap with a counting allocator
//! (`json_memory.rs`, `limiter_flood.rs`) are binaries of their own: a global allocator
//! counts everything in its process.

mod common;

mod cli;
mod deploy;
mod engine;
mod faults;
mod freshness;
mod fuzz_corpus;
mod hostile_clients;
mod hostile_proxies;
mod hostile_sources;
mod judge_cli;
mod parse_props;
mod proxy_urls;
mod rounds;
mod samples;
mod security;
mod serve_cli;
mod service;
mod sources;
