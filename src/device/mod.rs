//! The device side: stage bundles, rebuild and verify NARs, import them into Nix.

pub mod activate;
pub mod gc;
pub mod import;
pub mod init;
pub mod intake;
pub mod link;
pub mod listen;
pub mod probation;
pub mod reassemble;
pub mod receive;
pub mod status;
pub mod supervise;
