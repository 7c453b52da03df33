//! The parameters every frame of a bundle carries, and the caps a device applies to them.
//!
//! [`LinkParams`] is the part of a frame header that is the same for every frame of one
//! bundle: codec, shard size `S`, target group size `K`, parity capacity `P` and the bundle
//! length `L`. From it both sides derive the same [`GroupLayout`] and the same code for each
//! group, so a device that has never heard of a bundle can start collecting its frames.
//!
//! Parameters come off the link, so they are untrusted until the manifest's signature is
//! checked: [`LinkParams::validate`] checks them against the codec's limits and against
//! [`Limits`] before anything is sized from them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::layout::{GroupLayout, LayoutError};

/// Largest bundle length the format accepts (2^48 bytes); keeps shard arithmetic in `u64`.
pub const MAX_BUNDLE_LEN: u64 = 1 << 48;

/// Default codec: GF(2^16), the only one fast enough for large groups (see SPEC.md,
/// "FEC groups").
pub const DEFAULT_CODEC: CodecId = CodecId::RsSimd16;
/// Default shard (frame payload) size: 1 KiB, 1068 bytes a frame on air.
pub const DEFAULT_SHARD_SIZE: u16 = 1024;
/// Default target group size: 1000 shards (1 MiB groups).
pub const DEFAULT_GROUP_K: u16 = 1000;
/// Default parity capacity: as many parity shards as data shards (rate 1/2 code), so
/// resends carry new parity until half of everything sent was lost.
pub const DEFAULT_PARITY: u16 = 1000;
/// Default first-pass redundancy: 15% parity per group.
pub const DEFAULT_REDUNDANCY_PERCENT: u16 = 15;

/// Which erasure code protects the groups of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodecId {
    /// `reed-solomon-simd` 3.x: Leopard-style Reed-Solomon over GF(2^16), O(n log n).
    /// `k + P` up to 65536 (exactly: `min(k', P') + max(k, P) <= 65536` where `x'` is `x`
    /// rounded up to a power of two); shard size must be even.
    /// Recovery shard `j` depends on `P`, so `P` is fixed per bundle.
    RsSimd16 = 1,
    /// `reed-solomon-erasure` 6.x: systematic Vandermonde Reed-Solomon over GF(2^8).
    /// `k + P <= 256`. Parity shard `j` does not depend on `P`.
    RsErasure8 = 2,
}

impl CodecId {
    /// The codec for a wire byte, if known.
    pub fn from_u8(b: u8) -> Option<CodecId> {
        match b {
            1 => Some(CodecId::RsSimd16),
            2 => Some(CodecId::RsErasure8),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Whether this codec can protect groups of up to `k` data shards with `parity` parity
    /// shards of `shard_size` bytes each.
    pub fn supports(self, k: u16, parity: u16, shard_size: u16) -> bool {
        if k == 0 || parity == 0 || shard_size == 0 {
            return false;
        }
        match self {
            CodecId::RsSimd16 => {
                shard_size.is_multiple_of(2)
                    && reed_solomon_simd::ReedSolomonEncoder::supports(
                        usize::from(k),
                        usize::from(parity),
                    )
            }
            CodecId::RsErasure8 => u32::from(k) + u32::from(parity) <= 256,
        }
    }
}

/// Everything a receiver needs to place and decode a frame of one bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkParams {
    /// Erasure code.
    pub codec: CodecId,
    /// Shard (frame payload) size `S` in bytes. Every payload is exactly this long.
    pub shard_size: u16,
    /// Target group size `K`: no group has more data shards than this.
    pub group_k: u16,
    /// Parity capacity `P`: parity shards `0..P` exist for every group.
    pub parity: u16,
    /// Bundle length `L` in bytes.
    pub bundle_len: u64,
}

/// Why a set of parameters is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    /// The codec cannot build this code.
    #[error("codec {codec:?} cannot protect groups of k={k} with P={parity} parity shards of {shard_size} bytes")]
    Unsupported {
        /// Codec.
        codec: CodecId,
        /// Target group size.
        k: u16,
        /// Parity capacity.
        parity: u16,
        /// Shard size.
        shard_size: u16,
    },
    /// The layout cannot be built (too long, too many groups).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Over a receiver cap.
    #[error("{what} is {value}, over this receiver's cap of {cap}")]
    OverCap {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The cap.
        cap: u64,
    },
}

/// Caps a receiver puts on parameters that arrive from the link, before it sizes any
/// memory from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bundle length accepted.
    pub max_bundle_len: u64,
    /// Largest shard size accepted.
    pub max_shard_size: u16,
    /// Largest group (`k * S`) a decoder will have to hold in memory.
    pub max_group_bytes: u64,
    /// Largest decoder working space: `(k + P)` rounded up to a power of two, times `S`
    /// rounded up to 64 bytes (how the GF(2^16) decoder lays out its work).
    pub max_code_bytes: u64,
    /// Largest number of shard slots (`groups * (K + P)`) to track; one bit each.
    pub max_tracked_shards: u64,
}

impl Default for Limits {
    /// 64 GiB bundles, 16 KiB shards, 64 MiB groups, 2^30 tracked shards (128 MiB of bits).
    fn default() -> Self {
        Limits {
            max_bundle_len: 64 << 30,
            max_shard_size: 16 << 10,
            max_group_bytes: 64 << 20,
            max_code_bytes: 128 << 20,
            max_tracked_shards: 1 << 30,
        }
    }
}

impl LinkParams {
    /// The default code (see the `DEFAULT_*` constants) for a bundle of `bundle_len` bytes.
    pub fn with_defaults(bundle_len: u64) -> LinkParams {
        LinkParams {
            codec: DEFAULT_CODEC,
            shard_size: DEFAULT_SHARD_SIZE,
            group_k: DEFAULT_GROUP_K,
            parity: DEFAULT_PARITY,
            bundle_len,
        }
    }

    /// Checks the codec can build this code and derives the layout.
    pub fn validate(&self) -> Result<GroupLayout, ParamsError> {
        if !self
            .codec
            .supports(self.group_k, self.parity, self.shard_size)
        {
            return Err(ParamsError::Unsupported {
                codec: self.codec,
                k: self.group_k,
                parity: self.parity,
                shard_size: self.shard_size,
            });
        }
        Ok(GroupLayout::new(
            self.bundle_len,
            self.shard_size,
            self.group_k,
        )?)
    }

    /// [`validate`](Self::validate), then checks the result against a receiver's caps.
    pub fn validate_within(&self, limits: &Limits) -> Result<GroupLayout, ParamsError> {
        fn cap(what: &'static str, value: u64, cap: u64) -> Result<(), ParamsError> {
            if value > cap {
                Err(ParamsError::OverCap { what, value, cap })
            } else {
                Ok(())
            }
        }
        cap("bundle length", self.bundle_len, limits.max_bundle_len)?;
        cap(
            "shard size",
            u64::from(self.shard_size),
            u64::from(limits.max_shard_size),
        )?;
        let layout = self.validate()?;
        cap(
            "group size in bytes",
            u64::from(layout.max_group_k()) * u64::from(self.shard_size),
            limits.max_group_bytes,
        )?;
        cap(
            "code size in bytes",
            (u64::from(layout.max_group_k()) + u64::from(self.parity)).next_power_of_two()
                * u64::from(self.shard_size).next_multiple_of(64),
            limits.max_code_bytes,
        )?;
        cap(
            "tracked shard slots",
            self.tracked_slots(&layout),
            limits.max_tracked_shards,
        )?;
        Ok(layout)
    }

    /// Shard slots a tracker needs: one per (group, shard index) that can exist.
    pub fn tracked_slots(&self, layout: &GroupLayout) -> u64 {
        u64::from(layout.group_count()) * (u64::from(layout.max_group_k()) + u64::from(self.parity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(codec: CodecId, k: u16, parity: u16, s: u16, len: u64) -> LinkParams {
        LinkParams {
            codec,
            shard_size: s,
            group_k: k,
            parity,
            bundle_len: len,
        }
    }

    #[test]
    fn codec_limits() {
        assert!(CodecId::RsErasure8.supports(200, 56, 1024));
        assert!(!CodecId::RsErasure8.supports(200, 57, 1024));
        assert!(CodecId::RsErasure8.supports(1, 1, 1));
        assert!(!CodecId::RsErasure8.supports(0, 1, 1));
        assert!(CodecId::RsSimd16.supports(1000, 1000, 1024));
        assert!(CodecId::RsSimd16.supports(32768, 32768, 2));
        assert!(!CodecId::RsSimd16.supports(1000, 1000, 1023));
        assert!(!CodecId::RsSimd16.supports(40000, 30000, 1024));
        assert!(!CodecId::RsSimd16.supports(10, 0, 1024));
    }

    #[test]
    fn caps_refuse_before_sizing() {
        let l = Limits::default();
        let p = params(CodecId::RsSimd16, 1000, 1000, 1024, 4 << 30);
        let layout = p.validate_within(&l).unwrap();
        assert_eq!(layout.group_count(), 4195);
        let big = params(CodecId::RsSimd16, 1000, 1000, 1024, 1 << 40);
        assert!(matches!(
            big.validate_within(&l),
            Err(ParamsError::OverCap { .. })
        ));
        let tiny_shards = params(CodecId::RsSimd16, 1, 1, 2, 4 << 30);
        assert!(matches!(
            tiny_shards.validate_within(&l),
            Err(ParamsError::OverCap { .. })
        ));
        assert_eq!(CodecId::from_u8(3), None);
        assert!(LinkParams::with_defaults(4 << 30)
            .validate_within(&l)
            .is_ok());
    }
}

/// How bundles are cut into frames. Defaults: see `protocol/SPEC.md` ("FEC groups").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOptions {
    /// Frame payload (shard) size in bytes.
    pub frame_size: u16,
    /// Data shards per group.
    pub group_k: u16,
    /// Parity shards that exist per group (fresh parity for resends).
    pub parity: u16,
    /// Parity sent in the first pass, in percent of each group's data shards.
    pub redundancy_percent: u16,
    pub codec: u8,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            frame_size: DEFAULT_SHARD_SIZE,
            group_k: DEFAULT_GROUP_K,
            parity: DEFAULT_PARITY,
            redundancy_percent: DEFAULT_REDUNDANCY_PERCENT,
            codec: DEFAULT_CODEC.to_u8(),
        }
    }
}

impl LinkOptions {
    /// The piece size ([`crate::pieces`]) a bundle cut with these options is hashed in: a
    /// piece spans at most two FEC groups.
    pub fn piece_log2(&self) -> u8 {
        crate::pieces::piece_log2_for(u64::from(self.frame_size) * u64::from(self.group_k))
    }

    pub fn params(&self, bundle_len: u64) -> LinkParams {
        LinkParams {
            codec: CodecId::from_u8(self.codec).unwrap_or(DEFAULT_CODEC),
            shard_size: self.frame_size,
            group_k: self.group_k,
            parity: self.parity,
            bundle_len,
        }
    }
}
