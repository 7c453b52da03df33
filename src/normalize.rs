//! Store-path-hash normalization.
//!
//! A rebuild of a dependency changes the 32-character hash of every dependent path, and those
//! hashes are embedded in the dependents' bytes (RPATHs, scripts, symlinks). Before chunking,
//! every occurrence of the hash part of a path's own name and of its references is replaced
//! by [`PLACEHOLDER`] (same length, so the NAR's framing is unchanged), and the positions are
//! recorded as [`Rewrite`]s. Two NARs that differ only in such hashes then normalize to the
//! same bytes and the same chunks. The device restores the hashes from the rewrites and the
//! path's references, then checks the real narHash.
//!
//! The hash list of a path is: its own hash part first, then the hash parts of its
//! references in the order given (self-references skipped). A rewrite's `index` points into it.

use std::io::{self, Read};

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};

use narlink_protocol::manifest::Rewrites;

use crate::nixstore::hash_part;

/// What stands in for a store hash in normalized bytes: 32 `e`s. `e` is not in Nix's base32
/// alphabet, so the placeholder is never a real hash.
pub const PLACEHOLDER: [u8; 32] = [b'e'; 32];
const LEN: usize = 32;

/// One occurrence of a store hash: at NAR offset `offset`, hash number `index` of the path's
/// hash list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    pub offset: u64,
    pub index: u16,
}

/// The hash list of `path` with `references` (see the module docs).
pub fn hash_list(path: &str, references: &[String]) -> Vec<[u8; 32]> {
    let mut v: Vec<[u8; 32]> = Vec::with_capacity(references.len() + 1);
    let mut push = |p: &str| {
        if let Some(h) = hash_part(p).and_then(|h| <[u8; 32]>::try_from(h.as_bytes()).ok()) {
            if !v.contains(&h) {
                v.push(h);
            }
        }
    };
    push(path);
    for r in references {
        push(r);
    }
    v
}

/// Wraps a reader of NAR bytes and yields them normalized, recording every rewrite.
pub struct Normalizer<R> {
    inner: R,
    matcher: Option<AhoCorasick>,
    /// The bytes that occur in some hash: a match lies within a run of them (see [`runs`]).
    alphabet: [bool; 256],
    buf: Vec<u8>,
    /// `buf[start..ready]` is normalized and may be handed out; `buf[ready..filled]` is held
    /// back (a match may straddle the next read).
    start: usize,
    ready: usize,
    filled: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    pub rewrites: Vec<Rewrite>,
}

impl<R: Read> Normalizer<R> {
    pub fn new(inner: R, hashes: &[[u8; 32]]) -> Normalizer<R> {
        let matcher = (!hashes.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(hashes)
                    .ok()
            })
            .flatten();
        let mut alphabet = [false; 256];
        for &b in hashes.iter().flatten() {
            alphabet[usize::from(b)] = true;
        }
        Normalizer {
            inner,
            matcher,
            alphabet,
            buf: vec![0; 1 << 20],
            start: 0,
            ready: 0,
            filled: 0,
            base: 0,
            eof: false,
            rewrites: Vec::new(),
        }
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read more, then normalize what can no longer be the start of an incomplete match.
    fn refill(&mut self) -> io::Result<()> {
        // Keep the held-back tail; drop what was handed out.
        self.buf.copy_within(self.ready..self.filled, 0);
        self.base += self.ready as u64;
        self.filled -= self.ready;
        let searched = self.filled; // bytes already searched (the held tail)
        self.start = 0;
        self.ready = 0;
        while !self.eof && self.filled < self.buf.len() {
            match self.inner.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.filled += n;
                    if self.filled - searched >= LEN {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let boundary = if self.eof {
            self.filled
        } else {
            self.filled.saturating_sub(LEN - 1)
        };
        if let Some(m) = &self.matcher {
            // A match cannot straddle a byte outside every hash, so searching each long
            // enough run of hash bytes finds what searching the whole buffer finds; most
            // bytes are then never looked at (the automaton's own prefilter looks at all).
            let mut found: Vec<(usize, u16)> = Vec::new();
            let data = &self.buf[..self.filled];
            runs(data, &self.alphabet, |from, to| {
                found.extend(
                    m.find_iter(&data[from..to])
                        .filter(|x| from + x.start() < boundary)
                        .map(|x| (from + x.start(), x.pattern().as_usize() as u16)),
                );
            });
            for (at, index) in found {
                self.buf[at..at + LEN].copy_from_slice(&PLACEHOLDER);
                self.rewrites.push(Rewrite {
                    offset: self.base + at as u64,
                    index,
                });
            }
        }
        self.ready = boundary;
        Ok(())
    }
}

/// Finds placeholders in normalized bytes fed in order, as a device does for
/// [`Rewrites::Scan`](narlink_protocol::manifest::Rewrites::Scan): 32 `e`s, and in a longer run
/// of `e`s one every 32 bytes from its start. Stops recording past `limit` occurrences.
pub struct PlaceholderScan {
    /// `e`s at the end of what was fed, since the last occurrence (fewer than 32).
    run: usize,
    fed: u64,
    limit: usize,
    /// Offsets of the occurrences, at most `limit + 1` of them.
    pub found: Vec<u64>,
}

impl PlaceholderScan {
    pub fn new(limit: usize) -> PlaceholderScan {
        PlaceholderScan {
            run: 0,
            fed: 0,
            limit,
            found: Vec::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if b != PLACEHOLDER[0] {
                self.run = 0;
                continue;
            }
            self.run += 1;
            if self.run == LEN {
                self.run = 0;
                if self.found.len() <= self.limit {
                    self.found.push(self.fed + (i + 1 - LEN) as u64);
                }
            }
        }
        self.fed += bytes.len() as u64;
    }

    /// Whether the scan found exactly the occurrences at `rewrites`' offsets (and no more
    /// than its limit).
    pub fn finds(&self, rewrites: &[Rewrite]) -> bool {
        self.found.len() == rewrites.len()
            && self.found.len() <= self.limit
            && self.found.iter().zip(rewrites).all(|(&f, r)| f == r.offset)
    }
}

/// Call `each(from, to)` for every maximal run `data[from..to]` of at least [`LEN`] bytes that
/// are all in `alphabet`, in order.
///
/// Looks at about one byte in [`LEN`] where `data` has none of the alphabet nearby: a run of
/// `LEN` covering any of the `LEN` positions before a byte outside the alphabet would include it.
fn runs(data: &[u8], alphabet: &[bool; 256], mut each: impl FnMut(usize, usize)) {
    let is = |b: u8| alphabet[usize::from(b)];
    // No run starts before `i`, and `i == 0` or `data[i - 1]` is outside the alphabet.
    let mut i = 0;
    while i + LEN <= data.len() {
        let probe = i + LEN - 1;
        if !is(data[probe]) {
            i = probe + 1;
            continue;
        }
        let mut from = probe;
        while from > i && is(data[from - 1]) {
            from -= 1;
        }
        let mut to = probe + 1;
        while to < data.len() && is(data[to]) {
            to += 1;
        }
        if to - from >= LEN {
            each(from, to);
        }
        i = to + 1;
    }
}

impl<R: Read> Read for Normalizer<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.start == self.ready {
            if self.eof && self.ready == self.filled {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.ready - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Overwrite, in `bytes` (which sit at NAR offset `offset`), every rewrite's 32 bytes with
/// `value(index)`: the placeholder to normalize raw bytes, the real hash to restore them.
/// `rewrites` must be sorted by offset.
pub fn apply(
    bytes: &mut [u8],
    offset: u64,
    rewrites: &[Rewrite],
    value: impl Fn(u16) -> Option<[u8; 32]>,
) {
    let end = offset + bytes.len() as u64;
    // First rewrite that may overlap: offset > range start - 32.
    let first = rewrites.partition_point(|r| r.offset + LEN as u64 <= offset);
    for r in &rewrites[first..] {
        if r.offset >= end {
            break;
        }
        let Some(v) = value(r.index) else { continue };
        let from = r.offset.max(offset);
        let to = (r.offset + LEN as u64).min(end);
        let src = (from - r.offset) as usize..(to - r.offset) as usize;
        bytes[(from - offset) as usize..(to - offset) as usize].copy_from_slice(&v[src]);
    }
}

/// Delta-encoded form of a rewrite list for the manifest: offsets as gaps.
pub fn encode(rewrites: &[Rewrite]) -> Vec<(u64, u16)> {
    let mut last = 0;
    rewrites
        .iter()
        .map(|r| {
            let gap = r.offset - last;
            last = r.offset;
            (gap, r.index)
        })
        .collect()
}

/// Inverse of [`encode`] for [`Rewrites::At`]; `None` if the offsets overlap, overflow, or an
/// index is out of range of a `hashes`-long list, and for [`Rewrites::Scan`] (the device finds
/// those places first: `ChunkSource::find_rewrites`).
pub fn decode(rewrites: &Rewrites, hashes: usize, nar_size: u64) -> Option<Vec<Rewrite>> {
    let Rewrites::At(gaps) = rewrites else {
        return None;
    };
    let mut out = Vec::with_capacity(gaps.len());
    let mut at: u64 = 0;
    for (i, &(gap, index)) in gaps.iter().enumerate() {
        if i > 0 && gap < LEN as u64 {
            return None;
        }
        at = at.checked_add(gap)?;
        if usize::from(index) >= hashes || at.checked_add(LEN as u64)? > nar_size {
            return None;
        }
        out.push(Rewrite { offset: at, index });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Dribble;

    const A: &[u8; 32] = b"81xl50rg2nv1bisviqjjx3qsy2kvcrzi";
    const B: &[u8; 32] = b"jlw84i3j2gz04kgknz0mxmj1cgvbxws0";

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..5000u32 {
            v.extend_from_slice(format!("line {i} /nix/store/").as_bytes());
            v.extend_from_slice(if i % 3 == 0 { A } else { B });
            v.extend_from_slice(b"-dep/lib\n");
        }
        v
    }

    #[test]
    fn normalizes_across_any_read_size_and_restores() {
        let data = sample();
        let mut expected: Option<(Vec<u8>, Vec<Rewrite>)> = None;
        for step in [1, 7, 31, 32, 33, 4096, 1 << 20] {
            let mut n = Normalizer::new(Dribble(&data, step), &[*A, *B]);
            let mut out = Vec::new();
            n.read_to_end(&mut out).unwrap();
            assert_eq!(out.len(), data.len());
            assert!(
                !out.windows(32).any(|w| w == A || w == B),
                "step {step}: a hash survived"
            );
            assert_eq!(n.rewrites.len(), 5000);
            match &expected {
                None => expected = Some((out.clone(), n.rewrites.clone())),
                Some((o, r)) => {
                    assert_eq!(&out, o, "step {step}");
                    assert_eq!(&n.rewrites, r, "step {step}");
                }
            }
            // Restoring in arbitrary slices gives the original back.
            let hashes = [*A, *B];
            let mut restored = out.clone();
            for (i, piece) in restored.chunks_mut(1000).enumerate() {
                apply(piece, (i * 1000) as u64, &n.rewrites, |ix| {
                    hashes.get(usize::from(ix)).copied()
                });
            }
            assert_eq!(restored, data);
            // Normalizing raw slices gives the normalized bytes.
            let mut again = data.clone();
            for (i, piece) in again.chunks_mut(777).enumerate() {
                apply(piece, (i * 777) as u64, &n.rewrites, |_| Some(PLACEHOLDER));
            }
            assert_eq!(again, out);
        }
        let (_, r) = expected.unwrap();
        let at = |gaps: Vec<(u64, u16)>| Rewrites::At(gaps);
        assert_eq!(decode(&at(encode(&r)), 2, data.len() as u64), Some(r));
        assert_eq!(decode(&at(vec![(0, 2)]), 2, 100), None);
        assert_eq!(decode(&at(vec![(0, 0), (10, 0)]), 2, 100), None);
        // Scanned places are not known until the device has found them.
        assert_eq!(decode(&Rewrites::Scan(vec![0]), 2, 100), None);
    }

    /// The run prefilter finds exactly what the automaton finds over the whole input, in
    /// inputs made mostly of hash characters (long runs, hashes overlapping each other and
    /// runs cut by the read boundaries).
    #[test]
    fn run_prefilter_finds_what_the_whole_buffer_search_finds() {
        let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            let mut data = Vec::new();
            while data.len() < 200_000 {
                match next() % 10 {
                    0 => data.extend_from_slice(A),
                    1 => data.extend_from_slice(B),
                    2 => data.extend_from_slice(&A[..(next() % 32) as usize]),
                    3 => data.push(b"/-.\n\0"[(next() % 5) as usize]),
                    _ => {
                        for _ in 0..next() % 80 {
                            data.push(alphabet[(next() % 32) as usize]);
                        }
                    }
                }
            }
            let whole: Vec<Rewrite> = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build([A, B])
                .unwrap()
                .find_iter(&data)
                .map(|m| Rewrite {
                    offset: m.start() as u64,
                    index: m.pattern().as_usize() as u16,
                })
                .collect();
            assert!(
                whole.len() > 100,
                "round {round}: only {} hashes",
                whole.len()
            );
            for step in [33, 4096, 100_000] {
                let mut n = Normalizer::new(Dribble(&data, step), &[*A, *B]);
                let mut out = Vec::new();
                n.read_to_end(&mut out).unwrap();
                assert_eq!(n.rewrites, whole, "round {round}, step {step}");
            }
        }
    }

    #[test]
    fn hash_list_puts_self_first_and_skips_duplicates() {
        let p = "/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1";
        let q = "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-app-1";
        assert_eq!(hash_list(q, &[p.into(), q.into()]), vec![*B, *A]);
    }

    /// Normalize `data` with the hashes `A` and `B`; whether the device's scan finds the
    /// rewrites, feeding the normalized bytes `step` at a time.
    fn scan_finds(data: &[u8], step: usize) -> (bool, usize) {
        let mut n = Normalizer::new(data, &[*A, *B]);
        let mut out = Vec::new();
        n.read_to_end(&mut out).unwrap();
        let mut scan = PlaceholderScan::new(n.rewrites.len());
        for piece in out.chunks(step) {
            scan.feed(piece);
        }
        (scan.finds(&n.rewrites), n.rewrites.len())
    }

    #[test]
    fn the_scan_finds_placeholders_across_any_feed_size() {
        let data = sample();
        for step in [1, 7, 31, 32, 33, 4096, 1 << 20] {
            assert_eq!(scan_finds(&data, step), (true, 5000), "step {step}");
        }
        // Hashes back to back, and `e`s that are not next to one.
        let mut v = Vec::new();
        for _ in 0..3 {
            v.extend_from_slice(A);
            v.extend_from_slice(B);
            v.extend_from_slice(b"/eee/e/");
        }
        assert_eq!(scan_finds(&v, 5), (true, 6));
    }

    #[test]
    fn the_scan_is_not_fooled_by_es_next_to_a_hash() {
        // An `e` right before a hash makes a run of 33: the scan would put the hash one byte
        // early, so the ground must not send these rewrites as `Scan`.
        for (before, after) in [(&b"x e"[..], &b""[..]), (b"", b"e"), (b"e", b"e")] {
            let mut v = b"a /nix/store/".to_vec();
            v.extend_from_slice(before);
            v.extend_from_slice(A);
            v.extend_from_slice(after);
            v.extend_from_slice(b"-lib\n");
            let (finds, n) = scan_finds(&v, 3);
            assert_eq!(n, 1);
            // After a hash the run is 33 too, but from the hash's start: still found.
            assert_eq!(finds, before.last() != Some(&b'e'), "{before:?} {after:?}");
        }
        // 32 `e`s in the raw bytes are not a hash: found as one, so not `Scan` either.
        let mut v = vec![b'e'; 32];
        v.extend_from_slice(A);
        assert_eq!(scan_finds(&v, 64), (false, 1));
        // Past the limit, the scan stops recording.
        let mut scan = PlaceholderScan::new(2);
        scan.feed(&[b'e'; 32 * 100]);
        assert_eq!(scan.found.len(), 3);
    }
}
