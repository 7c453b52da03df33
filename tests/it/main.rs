//! narlink's integration tests: one binary, one module per area.

mod commitment;
mod common;
mod downlink;
mod failures;
pub mod hostile;
mod import;
mod landing;
mod lifecycle;
mod link;
mod listen;
mod operator;
pub mod operator_loop;
mod orbit;
mod patch;
mod probation;
mod spine;
mod state;
mod trust;
