//! The ground side: plan and pack bundles against the mirror, fold device reports into it.

pub mod ack;
pub mod bsdiff;
pub mod bundles;
pub mod code;
pub mod confirm;
pub mod delta;
pub mod downlink;
pub mod fleet;
pub mod init;
pub mod link;
pub mod pack;
pub mod resend;
pub mod resync;
pub mod show;
