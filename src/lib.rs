//! narlink: ship Nix store updates to devices behind a lossy, intermittent uplink.
//!
//! See `ARCHITECTURE.md` for the code map.

pub mod chunking;
pub mod device;
pub mod ground;
pub mod index;
pub mod inspect;
pub mod inventory;
pub mod nar;
pub mod nixstore;
pub mod normalize;
pub mod onboard;
pub mod payload;
pub mod progress;
pub mod sim;
pub mod state;
