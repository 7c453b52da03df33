//! Erasure coding of one group: `k` data shards plus parity shards `0..P`.
//!
//! Shard indices within a group: `0..k` are the data shards (the group's bytes, cut at `S`,
//! the last one zero-padded), `k..k+P` are parity shards `0..P`. Any `k` distinct shards give
//! the data back.
//!
//! **Parity shard `j` is a fixed function of (group data, `k`, `P`, `j`)**, so the ground can
//! emit new parity in a later pass and the device can combine it with what it already has.
//! That needs `P` fixed per bundle: for [`RsSimd16`] the recovery shards depend on the
//! configured recovery count (measured: with `k = 10`, recovery shard 0 for `P = 4` differs from
//! recovery shard 0 for `P = 200`; the Leopard construction evaluates over a domain sized by
//! `P` rounded up to a power of two). So `P` — the parity *capacity* — is chosen once per
//! bundle and carried in every frame; the ground sends only some of those `P` shards.
//! [`RsErasure8`] parity rows do not depend on `P` (rows of a Vandermonde matrix times the
//! inverse of its top square), but it uses the same convention.
//!
//! The trait is narrow on purpose: the rest of the crate needs nothing else from a codec.

use core::ops::Range;
use std::sync::{Arc, Mutex};

use reed_solomon_erasure::galois_8::ReedSolomon;
use thiserror::Error;

use crate::layout::GroupLayout;
use crate::params::{CodecId, LinkParams};

/// The code of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupShape {
    /// Data shards in this group.
    pub k: u16,
    /// Parity capacity `P` of the bundle.
    pub parity: u16,
    /// Shard size in bytes.
    pub shard_size: u16,
}

impl GroupShape {
    /// `k + P`: the number of shard indices that exist.
    pub fn total(&self) -> u32 {
        u32::from(self.k) + u32::from(self.parity)
    }
}

/// Why an encode or decode failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FecError {
    /// The codec cannot build this code.
    #[error("codec {codec:?} does not support {shape:?}")]
    Unsupported {
        /// Codec.
        codec: CodecId,
        /// Requested shape.
        shape: GroupShape,
    },
    /// Encode was given the wrong number of data shards.
    #[error("expected {expected} data shards, got {got}")]
    WrongDataCount {
        /// `k`.
        expected: u16,
        /// Given.
        got: usize,
    },
    /// A shard is not `S` bytes long.
    #[error("shard {index} is {len} bytes, expected {expected}")]
    WrongShardLen {
        /// Shard index (data shards for encode).
        index: usize,
        /// Its length.
        len: usize,
        /// `S`.
        expected: u16,
    },
    /// A shard index is `>= k + P`, or a parity range is past `P`.
    #[error("shard index {index} out of range for a group of {total} shards")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// `k + P`.
        total: u32,
    },
    /// Fewer than `k` distinct shards.
    #[error("need {k} distinct shards to decode, have {have}")]
    NotEnoughShards {
        /// `k`.
        k: u16,
        /// Distinct shards given.
        have: usize,
    },
    /// The group's byte slice has the wrong length for its layout.
    #[error("group {group} should be {expected} bytes, got {got}")]
    WrongGroupLen {
        /// Group index.
        group: u32,
        /// From the layout.
        expected: u64,
        /// Given.
        got: usize,
    },
    /// The group index is past the layout.
    #[error("group {0} does not exist in this layout")]
    NoSuchGroup(u32),
    /// A decoded last group has non-zero bytes where the padding should be.
    #[error("group {0} decoded with non-zero padding")]
    NonZeroPadding(u32),
    /// The codec library reported an error (a bug on our side if it happens).
    #[error("codec error: {0}")]
    Codec(String),
}

/// A Reed-Solomon erasure code, narrowed to what the link layer needs.
pub trait ErasureCode: Send + Sync {
    /// Wire identifier.
    fn id(&self) -> CodecId;

    /// Parity shards `parity` (a sub-range of `0..P`) of the group whose data shards are
    /// `data` (exactly `k` slices of exactly `S` bytes). The result has one `Vec` per index in
    /// `parity`, in order.
    fn encode(
        &self,
        shape: GroupShape,
        data: &[&[u8]],
        parity: Range<u16>,
    ) -> Result<Vec<Vec<u8>>, FecError>;

    /// The `k` data shards, from shards given as `(index, bytes)` with `index < k + P`.
    /// Duplicated indices are ignored (the first wins); with more than `k` distinct shards,
    /// data shards are preferred, then lower parity indices.
    fn decode(&self, shape: GroupShape, shards: &[(u16, &[u8])]) -> Result<Vec<Vec<u8>>, FecError>;
}

/// The codec for an id, ready to use.
pub fn codec(id: CodecId) -> Box<dyn ErasureCode> {
    match id {
        CodecId::RsSimd16 => Box::new(RsSimd16),
        CodecId::RsErasure8 => Box::new(RsErasure8::default()),
    }
}

fn check_shape(codec: CodecId, shape: GroupShape) -> Result<(), FecError> {
    if codec.supports(shape.k, shape.parity, shape.shard_size) {
        Ok(())
    } else {
        Err(FecError::Unsupported { codec, shape })
    }
}

fn check_encode_args(
    codec: CodecId,
    shape: GroupShape,
    data: &[&[u8]],
    parity: &Range<u16>,
) -> Result<(), FecError> {
    check_shape(codec, shape)?;
    if data.len() != usize::from(shape.k) {
        return Err(FecError::WrongDataCount {
            expected: shape.k,
            got: data.len(),
        });
    }
    if let Some((index, d)) = data
        .iter()
        .enumerate()
        .find(|(_, d)| d.len() != usize::from(shape.shard_size))
    {
        return Err(FecError::WrongShardLen {
            index,
            len: d.len(),
            expected: shape.shard_size,
        });
    }
    if parity.end > shape.parity {
        return Err(FecError::IndexOutOfRange {
            index: u32::from(shape.k) + u32::from(parity.end),
            total: shape.total(),
        });
    }
    Ok(())
}

/// The shards a decoder will use: at most one per index, data first, `k` in all.
/// Returns (data shards present by index, chosen parity shards as (parity index, bytes)).
#[allow(clippy::type_complexity)]
fn pick_shards<'a>(
    shape: GroupShape,
    shards: &[(u16, &'a [u8])],
) -> Result<(Vec<Option<&'a [u8]>>, Vec<(u16, &'a [u8])>), FecError> {
    let k = usize::from(shape.k);
    let mut data: Vec<Option<&[u8]>> = vec![None; k];
    let mut parity: Vec<Option<&[u8]>> = Vec::new();
    for &(index, bytes) in shards {
        if u32::from(index) >= shape.total() {
            return Err(FecError::IndexOutOfRange {
                index: u32::from(index),
                total: shape.total(),
            });
        }
        if bytes.len() != usize::from(shape.shard_size) {
            return Err(FecError::WrongShardLen {
                index: usize::from(index),
                len: bytes.len(),
                expected: shape.shard_size,
            });
        }
        let i = usize::from(index);
        if i < k {
            data[i].get_or_insert(bytes);
        } else {
            let j = i - k;
            if parity.len() <= j {
                parity.resize(j + 1, None);
            }
            parity[j].get_or_insert(bytes);
        }
    }
    let have_data = data.iter().filter(|d| d.is_some()).count();
    let chosen: Vec<(u16, &[u8])> = parity
        .iter()
        .enumerate()
        .filter_map(|(j, p)| p.map(|p| (j as u16, p)))
        .take(k - have_data)
        .collect();
    if have_data + chosen.len() < k {
        return Err(FecError::NotEnoughShards {
            k: shape.k,
            have: have_data + parity.iter().filter(|p| p.is_some()).count(),
        });
    }
    Ok((data, chosen))
}

/// `reed-solomon-simd` 3.x over GF(2^16). Fast (O(n log n), SIMD), groups up to
/// thousands of shards. Shard size must be even.
#[derive(Debug, Clone, Copy, Default)]
pub struct RsSimd16;

impl ErasureCode for RsSimd16 {
    fn id(&self) -> CodecId {
        CodecId::RsSimd16
    }

    fn encode(
        &self,
        shape: GroupShape,
        data: &[&[u8]],
        parity: Range<u16>,
    ) -> Result<Vec<Vec<u8>>, FecError> {
        check_encode_args(self.id(), shape, data, &parity)?;
        if parity.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e: reed_solomon_simd::Error| FecError::Codec(e.to_string());
        let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(
            usize::from(shape.k),
            usize::from(shape.parity),
            usize::from(shape.shard_size),
        )
        .map_err(err)?;
        for d in data {
            enc.add_original_shard(d).map_err(err)?;
        }
        let result = enc.encode().map_err(err)?;
        parity
            .map(|j| {
                result
                    .recovery(usize::from(j))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| FecError::Codec(format!("no recovery shard {j}")))
            })
            .collect()
    }

    fn decode(&self, shape: GroupShape, shards: &[(u16, &[u8])]) -> Result<Vec<Vec<u8>>, FecError> {
        check_shape(self.id(), shape)?;
        let (data, parity) = pick_shards(shape, shards)?;
        if parity.is_empty() {
            return Ok(data.iter().flatten().map(|d| d.to_vec()).collect());
        }
        let err = |e: reed_solomon_simd::Error| FecError::Codec(e.to_string());
        let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(
            usize::from(shape.k),
            usize::from(shape.parity),
            usize::from(shape.shard_size),
        )
        .map_err(err)?;
        for (i, d) in data.iter().enumerate() {
            if let Some(d) = d {
                dec.add_original_shard(i, d).map_err(err)?;
            }
        }
        for (j, p) in &parity {
            dec.add_recovery_shard(usize::from(*j), p).map_err(err)?;
        }
        let result = dec.decode().map_err(err)?;
        data.iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some(d) => Ok(d.to_vec()),
                None => result
                    .restored_original(i)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| FecError::Codec(format!("shard {i} not restored"))),
            })
            .collect()
    }
}

/// `reed-solomon-erasure` 6.x over GF(2^8): `k + P <= 256`, any shard size. Keeps the last
/// few coding matrices, since building one costs O(k^3).
#[derive(Default)]
pub struct RsErasure8 {
    cache: Mutex<Vec<CachedCoder>>,
}

/// A coding matrix for `(k, P)`.
type CachedCoder = ((u16, u16), Arc<ReedSolomon>);

impl core::fmt::Debug for RsErasure8 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RsErasure8").finish_non_exhaustive()
    }
}

const ERASURE8_CACHE: usize = 4;

impl RsErasure8 {
    fn coder(&self, k: u16, parity: u16) -> Result<Arc<ReedSolomon>, FecError> {
        let key = (k, parity);
        // A poisoned lock only means another caller panicked mid-lookup; the cache is still
        // a valid Vec, so carry on with it.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rs)) = cache.iter().find(|(key2, _)| *key2 == key) {
            return Ok(Arc::clone(rs));
        }
        let rs = Arc::new(
            ReedSolomon::new(usize::from(k), usize::from(parity))
                .map_err(|e| FecError::Codec(format!("{e:?}")))?,
        );
        if cache.len() >= ERASURE8_CACHE {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&rs)));
        Ok(rs)
    }
}

impl ErasureCode for RsErasure8 {
    fn id(&self) -> CodecId {
        CodecId::RsErasure8
    }

    fn encode(
        &self,
        shape: GroupShape,
        data: &[&[u8]],
        parity: Range<u16>,
    ) -> Result<Vec<Vec<u8>>, FecError> {
        check_encode_args(self.id(), shape, data, &parity)?;
        if parity.is_empty() {
            return Ok(Vec::new());
        }
        let rs = self.coder(shape.k, shape.parity)?;
        let mut out = vec![vec![0u8; usize::from(shape.shard_size)]; usize::from(shape.parity)];
        rs.encode_sep(data, &mut out)
            .map_err(|e| FecError::Codec(format!("{e:?}")))?;
        out.truncate(usize::from(parity.end));
        out.drain(..usize::from(parity.start));
        Ok(out)
    }

    fn decode(&self, shape: GroupShape, shards: &[(u16, &[u8])]) -> Result<Vec<Vec<u8>>, FecError> {
        check_shape(self.id(), shape)?;
        let (data, parity) = pick_shards(shape, shards)?;
        if parity.is_empty() {
            return Ok(data.iter().flatten().map(|d| d.to_vec()).collect());
        }
        let k = usize::from(shape.k);
        let mut all: Vec<Option<Vec<u8>>> = vec![None; shape.total() as usize];
        for (i, d) in data.iter().enumerate() {
            all[i] = d.map(<[u8]>::to_vec);
        }
        for (j, p) in &parity {
            all[k + usize::from(*j)] = Some(p.to_vec());
        }
        let rs = self.coder(shape.k, shape.parity)?;
        rs.reconstruct_data(&mut all)
            .map_err(|e| FecError::Codec(format!("{e:?}")))?;
        all.truncate(k);
        all.into_iter()
            .enumerate()
            .map(|(i, d)| d.ok_or_else(|| FecError::Codec(format!("shard {i} not restored"))))
            .collect()
    }
}

/// The shape of `group` under `params`.
pub fn group_shape(
    params: &LinkParams,
    layout: &GroupLayout,
    group: u32,
) -> Result<GroupShape, FecError> {
    let k = layout.group_k(group).ok_or(FecError::NoSuchGroup(group))?;
    Ok(GroupShape {
        k,
        parity: params.parity,
        shard_size: params.shard_size,
    })
}

/// Cuts a group's bytes (exactly `layout.byte_range(group)`) into its `k` data shards, the
/// last one zero-padded.
pub fn split_group(
    layout: &GroupLayout,
    group: u32,
    group_bytes: &[u8],
) -> Result<Vec<Vec<u8>>, FecError> {
    let range = layout
        .byte_range(group)
        .ok_or(FecError::NoSuchGroup(group))?;
    let expected = range.end - range.start;
    if group_bytes.len() as u64 != expected {
        return Err(FecError::WrongGroupLen {
            group,
            expected,
            got: group_bytes.len(),
        });
    }
    let s = usize::from(layout.shard_size());
    Ok(group_bytes
        .chunks(s)
        .map(|c| {
            let mut v = c.to_vec();
            v.resize(s, 0);
            v
        })
        .collect())
}

/// Ground helper: the payloads of shards `shards` (indices within the group, data or parity)
/// of `group`, whose bytes are `group_bytes` (exactly `layout.byte_range(group)` of the
/// bundle). Parity is computed once for the span of parity indices asked for.
pub fn encode_group_shards(
    code: &dyn ErasureCode,
    params: &LinkParams,
    layout: &GroupLayout,
    group: u32,
    group_bytes: &[u8],
    shards: &[u16],
) -> Result<Vec<Vec<u8>>, FecError> {
    let shape = group_shape(params, layout, group)?;
    let data = split_group(layout, group, group_bytes)?;
    let k = shape.k;
    if let Some(&bad) = shards.iter().find(|&&i| u32::from(i) >= shape.total()) {
        return Err(FecError::IndexOutOfRange {
            index: u32::from(bad),
            total: shape.total(),
        });
    }
    let parity_span = {
        let mut js = shards.iter().filter(|&&i| i >= k).map(|&i| i - k);
        match js.next() {
            None => 0..0,
            Some(first) => {
                let (lo, hi) = js.fold((first, first), |(lo, hi), j| (lo.min(j), hi.max(j)));
                lo..hi + 1
            }
        }
    };
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let parity = code.encode(shape, &refs, parity_span.clone())?;
    Ok(shards
        .iter()
        .map(|&i| {
            if i < k {
                data[usize::from(i)].clone()
            } else {
                parity[usize::from(i - k - parity_span.start)].clone()
            }
        })
        .collect())
}

/// Device helper: the bytes of `group` (padding removed) from at least `k` distinct shards.
/// Fails with [`FecError::NonZeroPadding`] if the last group's padding is not zero.
pub fn decode_group(
    code: &dyn ErasureCode,
    params: &LinkParams,
    layout: &GroupLayout,
    group: u32,
    shards: &[(u16, &[u8])],
) -> Result<Vec<u8>, FecError> {
    let shape = group_shape(params, layout, group)?;
    let range = layout
        .byte_range(group)
        .ok_or(FecError::NoSuchGroup(group))?;
    let data = code.decode(shape, shards)?;
    let len = (range.end - range.start) as usize;
    let mut out = Vec::with_capacity(data.len() * usize::from(shape.shard_size));
    for d in &data {
        out.extend_from_slice(d);
    }
    if out[len..].iter().any(|&b| b != 0) {
        return Err(FecError::NonZeroPadding(group));
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(k: u16, s: u16, seed: u8) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                (0..s)
                    .map(|j| (i as u8).wrapping_mul(31) ^ (j as u8).wrapping_mul(7) ^ seed)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn parity_is_prefix_stable_across_calls() {
        // For a fixed P, asking for a sub-range gives the same bytes as the full range.
        for code in [codec(CodecId::RsSimd16), codec(CodecId::RsErasure8)] {
            let shape = GroupShape {
                k: 10,
                parity: 20,
                shard_size: 64,
            };
            let d = data(10, 64, 1);
            let refs: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
            let all = code.encode(shape, &refs, 0..20).unwrap();
            let part = code.encode(shape, &refs, 5..9).unwrap();
            assert_eq!(&all[5..9], &part[..]);
        }
    }

    #[test]
    fn simd_parity_depends_on_capacity_erasure8_does_not() {
        // Why P is carried in every frame (see module docs).
        let d = data(10, 64, 2);
        let refs: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
        let shape = |p| GroupShape {
            k: 10,
            parity: p,
            shard_size: 64,
        };
        let simd = RsSimd16;
        assert_ne!(
            simd.encode(shape(4), &refs, 0..1).unwrap(),
            simd.encode(shape(200), &refs, 0..1).unwrap()
        );
        let e8 = RsErasure8::default();
        assert_eq!(
            e8.encode(shape(4), &refs, 0..4).unwrap(),
            e8.encode(shape(200), &refs, 0..4).unwrap()
        );
    }

    #[test]
    fn decode_errors() {
        let code = RsSimd16;
        let shape = GroupShape {
            k: 3,
            parity: 2,
            shard_size: 4,
        };
        let s = [0u8; 4];
        assert!(matches!(
            code.decode(shape, &[(0, &s), (0, &s), (1, &s)]),
            Err(FecError::NotEnoughShards { k: 3, have: 2 })
        ));
        assert!(matches!(
            code.decode(shape, &[(5, &s)]),
            Err(FecError::IndexOutOfRange { index: 5, total: 5 })
        ));
        assert!(matches!(
            code.decode(shape, &[(0, &s[..3])]),
            Err(FecError::WrongShardLen { .. })
        ));
        let odd = GroupShape {
            shard_size: 3,
            ..shape
        };
        assert!(matches!(
            code.decode(odd, &[]),
            Err(FecError::Unsupported { .. })
        ));
    }

    fn any_k_of_n(code: &dyn ErasureCode, k: u16, parity: u16, s: u16, pick: &[usize], seed: u8) {
        let shape = GroupShape {
            k,
            parity,
            shard_size: s,
        };
        let d = data(k, s, seed);
        let refs: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
        let p = code.encode(shape, &refs, 0..parity).unwrap();
        let all: Vec<&[u8]> = refs
            .iter()
            .copied()
            .chain(p.iter().map(Vec::as_slice))
            .collect();
        let chosen: Vec<(u16, &[u8])> = pick.iter().map(|&i| (i as u16, all[i])).collect();
        assert_eq!(code.decode(shape, &chosen).unwrap(), d);
    }

    /// A random choice of `k` distinct indices out of `n`.
    fn k_of_n(max_k: u16, max_p: u16) -> impl Strategy<Value = (u16, u16, Vec<usize>)> {
        (1..=max_k, 1..=max_p).prop_flat_map(|(k, p)| {
            let n = usize::from(k) + usize::from(p);
            (
                Just(k),
                Just(p),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
                .prop_map(|(k, p, v)| (k, p, v[..usize::from(k)].to_vec()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn simd_any_k_recover((k, p, pick) in k_of_n(300, 300), s in prop::sample::select(vec![2u16, 64, 1024]), seed in any::<u8>()) {
            any_k_of_n(&RsSimd16, k, p, s, &pick, seed);
        }

        #[test]
        fn erasure8_any_k_recover((k, p, pick) in k_of_n(128, 128), s in prop::sample::select(vec![1u16, 63, 1024]), seed in any::<u8>()) {
            any_k_of_n(&RsErasure8::default(), k, p, s, &pick, seed);
        }
    }

    #[test]
    fn boundary_shapes_recover() {
        // k = 1, k + P at the GF(2^8) limit, and a large GF(2^16) group; lose the first
        // min(k, P) data shards.
        let cases: [(&dyn ErasureCode, u16, u16); 5] = [
            (&RsSimd16, 1, 1),
            (&RsSimd16, 4000, 400),
            (&RsSimd16, 1000, 1000),
            (&RsErasure8::default(), 1, 255),
            (&RsErasure8::default(), 200, 56),
        ];
        for (code, k, p) in cases {
            let lost = k.min(p) as usize;
            let pick: Vec<usize> = (lost..usize::from(k) + lost).collect();
            any_k_of_n(code, k, p, 64, &pick, 9);
        }
    }

    #[test]
    fn group_helpers_round_trip() {
        let params = LinkParams {
            codec: CodecId::RsSimd16,
            shard_size: 16,
            group_k: 5,
            parity: 5,
            bundle_len: 150,
        };
        let layout = params.validate().unwrap();
        let bundle: Vec<u8> = (0..150u32).map(|i| (i * 13) as u8).collect();
        let code = codec(params.codec);
        for g in 0..layout.group_count() {
            let r = layout.byte_range(g).unwrap();
            let bytes = &bundle[r.start as usize..r.end as usize];
            let k = layout.group_k(g).unwrap();
            // Lose data shard 0 and 2, use parity 1 and 3.
            let want: Vec<u16> = (0..k)
                .filter(|i| *i != 0 && *i != 2)
                .chain([k + 1, k + 3])
                .collect();
            let payloads = encode_group_shards(&*code, &params, &layout, g, bytes, &want).unwrap();
            let shards: Vec<(u16, &[u8])> = want
                .iter()
                .copied()
                .zip(payloads.iter().map(Vec::as_slice))
                .collect();
            assert_eq!(
                decode_group(&*code, &params, &layout, g, &shards).unwrap(),
                bytes
            );
        }
        assert!(matches!(
            split_group(&layout, 0, &bundle[..3]),
            Err(FecError::WrongGroupLen { .. })
        ));
    }
}
