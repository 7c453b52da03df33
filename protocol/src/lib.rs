//! narlink wire formats, sans-IO: no sockets, no files, no clocks.
//!
//! See `SPEC.md` beside this crate for byte layouts.
pub mod announce;
pub mod bundle;
pub mod confirm;
pub mod digest;
pub mod fec;
pub mod frame;
pub mod layout;
pub mod manifest;
pub mod params;
pub mod patch;
pub mod pieces;
pub mod receiver;
pub mod schedule;
pub mod seal;
pub mod signature;
pub mod sim;
pub mod status;
pub mod storepath;
pub mod wire;
pub mod zero_runs;
