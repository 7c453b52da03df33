//! How a bundle of `L` bytes is cut into shards of `S` bytes and groups of at most `K` shards.
//!
//! ```text
//! bundle bytes  |<------------------------------ L ------------------------------->|
//! shards        | s0 | s1 | s2 | ...                                       | sN-1 |pad|
//! groups        |<-- group 0: k0 shards -->|<-- group 1: k1 -->| ... |<-- group G-1 -->|
//! ```
//!
//! * `N = ceil(L / S)` data shards; only the very last shard is short, and is zero-padded to
//!   `S` bytes (`padding() = N*S - L`).
//! * `G = ceil(N / K)` groups, **balanced**: every group has `floor(N/G)` or `ceil(N/G)` data
//!   shards, the larger ones first. So no group exceeds `K`, the last group is never larger
//!   than the others, and there is no tiny tail group (a group of 1 shard would need a whole
//!   parity shard to survive one loss).
//! * `L = 0` gives `N = 0`, `G = 0`.
//!
//! Pure integer arithmetic, no floating point: the ground and every device compute the same
//! layout from the same `(L, S, K)`.

use core::ops::Range;

use thiserror::Error;

use crate::params::MAX_BUNDLE_LEN;

/// Why a layout cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// `S` was zero.
    #[error("shard size must be at least 1 byte")]
    ZeroShardSize,
    /// `K` was zero.
    #[error("group size must be at least 1 shard")]
    ZeroGroupSize,
    /// `L` over [`MAX_BUNDLE_LEN`].
    #[error("bundle length {0} is over the format's maximum of 2^48 bytes")]
    BundleTooLong(u64),
    /// More groups than a `u32` group index can name.
    #[error("{0} groups do not fit a 32-bit group index: use larger shards or groups")]
    TooManyGroups(u64),
}

/// The deterministic cut of a bundle into groups and shards. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupLayout {
    bundle_len: u64,
    shard_size: u16,
    target_k: u16,
    shard_count: u64,
    group_count: u32,
    /// Every group has `base_k` or `base_k + 1` data shards.
    base_k: u32,
    /// The first `big_groups` groups have `base_k + 1`.
    big_groups: u32,
}

impl GroupLayout {
    /// Layout of a bundle of `bundle_len` bytes, shards of `shard_size` bytes, groups of at
    /// most `target_k` shards.
    pub fn new(bundle_len: u64, shard_size: u16, target_k: u16) -> Result<Self, LayoutError> {
        if shard_size == 0 {
            return Err(LayoutError::ZeroShardSize);
        }
        if target_k == 0 {
            return Err(LayoutError::ZeroGroupSize);
        }
        if bundle_len > MAX_BUNDLE_LEN {
            return Err(LayoutError::BundleTooLong(bundle_len));
        }
        let shard_count = bundle_len.div_ceil(u64::from(shard_size));
        let groups = shard_count.div_ceil(u64::from(target_k));
        let group_count = u32::try_from(groups).map_err(|_| LayoutError::TooManyGroups(groups))?;
        let (base_k, big_groups) = if group_count == 0 {
            (0, 0)
        } else {
            let g = u64::from(group_count);
            // shard_count / g <= target_k, so both fit u32.
            ((shard_count / g) as u32, (shard_count % g) as u32)
        };
        Ok(GroupLayout {
            bundle_len,
            shard_size,
            target_k,
            shard_count,
            group_count,
            base_k,
            big_groups,
        })
    }

    /// `L`.
    pub fn bundle_len(&self) -> u64 {
        self.bundle_len
    }

    /// `S`.
    pub fn shard_size(&self) -> u16 {
        self.shard_size
    }

    /// `K`, the target (maximum) group size.
    pub fn target_k(&self) -> u16 {
        self.target_k
    }

    /// `N`, the number of data shards.
    pub fn shard_count(&self) -> u64 {
        self.shard_count
    }

    /// `G`, the number of groups.
    pub fn group_count(&self) -> u32 {
        self.group_count
    }

    /// The largest `k` of any group (0 for an empty bundle).
    pub fn max_group_k(&self) -> u16 {
        // <= target_k by construction.
        (self.base_k + u32::from(self.big_groups > 0)) as u16
    }

    /// Zero bytes appended to the last shard.
    pub fn padding(&self) -> u64 {
        self.shard_count * u64::from(self.shard_size) - self.bundle_len
    }

    /// Data shards in group `group`, or `None` past the end.
    pub fn group_k(&self, group: u32) -> Option<u16> {
        if group >= self.group_count {
            return None;
        }
        Some((self.base_k + u32::from(group < self.big_groups)) as u16)
    }

    /// Index (in the whole bundle) of the first data shard of `group`.
    pub fn first_shard(&self, group: u32) -> Option<u64> {
        if group >= self.group_count {
            return None;
        }
        Some(u64::from(group) * u64::from(self.base_k) + u64::from(group.min(self.big_groups)))
    }

    /// Bundle byte range of `group` (the last group's range excludes the padding).
    pub fn byte_range(&self, group: u32) -> Option<Range<u64>> {
        let first = self.first_shard(group)?;
        let k = u64::from(self.group_k(group)?);
        let s = u64::from(self.shard_size);
        let start = first * s;
        let end = ((first + k) * s).min(self.bundle_len);
        Some(start..end)
    }

    /// Padding bytes at the end of `group`'s last data shard (non-zero only for the last group).
    pub fn group_padding(&self, group: u32) -> Option<u64> {
        let range = self.byte_range(group)?;
        let k = u64::from(self.group_k(group)?);
        Some(k * u64::from(self.shard_size) - (range.end - range.start))
    }

    /// The group holding bundle data shard `shard`, and its index within that group.
    pub fn locate_shard(&self, shard: u64) -> Option<(u32, u16)> {
        if shard >= self.shard_count {
            return None;
        }
        let big = u64::from(self.big_groups) * (u64::from(self.base_k) + 1);
        let (group, within) = if shard < big {
            let per = u64::from(self.base_k) + 1;
            (shard / per, shard % per)
        } else {
            let per = u64::from(self.base_k);
            let rest = shard - big;
            (u64::from(self.big_groups) + rest / per, rest % per)
        };
        Some((group as u32, within as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_cases() {
        let l = GroupLayout::new(0, 1024, 100).unwrap();
        assert_eq!(
            (l.shard_count(), l.group_count(), l.max_group_k()),
            (0, 0, 0)
        );
        assert_eq!(l.group_k(0), None);

        let l = GroupLayout::new(1, 1024, 100).unwrap();
        assert_eq!(
            (l.shard_count(), l.group_count(), l.padding()),
            (1, 1, 1023)
        );
        assert_eq!(l.byte_range(0), Some(0..1));

        // 1001 shards, K = 1000: two groups of 501 and 500, not 1000 and 1.
        let l = GroupLayout::new(1001 * 1024, 1024, 1000).unwrap();
        assert_eq!(l.group_count(), 2);
        assert_eq!((l.group_k(0), l.group_k(1)), (Some(501), Some(500)));
        assert_eq!(l.byte_range(1), Some(501 * 1024..1001 * 1024));

        // Exactly K shards: one full group, no padding.
        let l = GroupLayout::new(1000 * 1024, 1024, 1000).unwrap();
        assert_eq!(
            (l.group_count(), l.group_k(0), l.padding()),
            (1, Some(1000), 0)
        );
        // K shards and one byte.
        let l = GroupLayout::new(1000 * 1024 + 1, 1024, 1000).unwrap();
        assert_eq!(
            (l.group_count(), l.group_k(0), l.group_k(1)),
            (2, Some(501), Some(500))
        );
        assert_eq!(l.group_padding(1), Some(1023));
        assert_eq!(l.group_padding(0), Some(0));
    }

    #[test]
    fn four_gib_and_beyond() {
        let l = GroupLayout::new(4 << 30, 1024, 1000).unwrap();
        assert_eq!(l.shard_count(), 4 << 20);
        assert_eq!(l.group_count(), 4195);
        let last = l.group_count() - 1;
        assert_eq!(l.byte_range(last).unwrap().end, 4 << 30);
        assert!(GroupLayout::new(MAX_BUNDLE_LEN, 1024, 1000).is_ok());
        assert_eq!(
            GroupLayout::new(MAX_BUNDLE_LEN + 1, 1024, 1000),
            Err(LayoutError::BundleTooLong(MAX_BUNDLE_LEN + 1))
        );
        assert!(matches!(
            GroupLayout::new(MAX_BUNDLE_LEN, 2, 1),
            Err(LayoutError::TooManyGroups(_))
        ));
        assert_eq!(GroupLayout::new(1, 0, 1), Err(LayoutError::ZeroShardSize));
        assert_eq!(GroupLayout::new(1, 1, 0), Err(LayoutError::ZeroGroupSize));
    }

    proptest! {
        #[test]
        fn groups_tile_the_bundle(len in 0u64..5_000_000, s in 1u16..=4096, k in 1u16..=2000) {
            let l = GroupLayout::new(len, s, k).unwrap();
            let mut next_byte = 0u64;
            let mut next_shard = 0u64;
            let mut prev_k = u16::MAX;
            for g in 0..l.group_count() {
                let gk = l.group_k(g).unwrap();
                prop_assert!(gk >= 1 && gk <= k);
                prop_assert!(gk <= prev_k, "groups shrink, never grow");
                prop_assert!(prev_k == u16::MAX || prev_k - gk <= 1, "balanced");
                prev_k = gk;
                prop_assert_eq!(l.first_shard(g), Some(next_shard));
                let r = l.byte_range(g).unwrap();
                prop_assert_eq!(r.start, next_byte);
                prop_assert!(r.end > r.start);
                for i in [0u64, u64::from(gk) - 1] {
                    prop_assert_eq!(l.locate_shard(next_shard + i), Some((g, i as u16)));
                }
                next_byte = r.end;
                next_shard += u64::from(gk);
                let pad = l.group_padding(g).unwrap();
                prop_assert!(pad < u64::from(s));
                if g + 1 < l.group_count() { prop_assert_eq!(pad, 0); }
            }
            prop_assert_eq!(next_byte, len);
            prop_assert_eq!(next_shard, l.shard_count());
            prop_assert_eq!(l.locate_shard(l.shard_count()), None);
            prop_assert_eq!(l.padding(), l.shard_count() * u64::from(s) - len);
        }
    }
}
