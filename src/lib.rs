//! narlink: ship Nix store updates to devices behind a lossy, intermittent uplink.
//!
//! See `ARCHITECTURE.md` for the code map.

pub mod nar;
