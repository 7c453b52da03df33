#![no_main]
// The check lives in src/checks.rs, shared with the corpus replay test (tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| narlink_fuzz_checks::solid(data));
