//! The checks behind narlink's fuzz targets, one `pub fn(&[u8])` per target.
//!
//! The code is in `checks.rs` so that the stable corpus replay test (`tests/fuzz_corpus.rs` in
//! the root package) can include the very same file with `#[path]`: a regression the fuzzer
//! found stays caught by `cargo test`.

mod checks;

pub use checks::*;
