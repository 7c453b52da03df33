//! narlink's integration tests: one binary, one module per area.

mod common;
mod link;
mod orbit;
mod listen;
mod spine;
mod trust;
