//! narlink: ship Nix store updates to devices behind a lossy, intermittent uplink.
//!
//! See `ARCHITECTURE.md` for the code map.

pub mod chunking;
pub mod device;
pub mod ground;
pub mod head;
pub mod index;
pub mod inspect;
pub mod inventory;
pub mod nar;
pub mod nixstore;
pub mod normalize;
pub mod onboard;
pub mod panic;
pub mod payload;
pub mod peek;
pub mod progress;
pub mod sim;
pub mod solid;
pub mod state;
pub mod status_view;

/// Helpers for unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::{self, Read};

    /// A reader that hands out at most `.1` bytes per read: decoders and chunkers must not
    /// care where reads end.
    pub struct Dribble<'a>(pub &'a [u8], pub usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = b.len().min(self.1).min(self.0.len());
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// `n` bytes of xorshift noise from `seed`: incompressible, and never found by chance in
    /// other noise.
    pub fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}
