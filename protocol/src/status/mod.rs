//! The status report: what a device still needs, sent device → ground over a thin downlink.
//!
//! # Layout (format version 2)
//!
//! ```text
//!  offset size field
//!  0      2    magic          "nS" (0x6e 0x53)
//!  2      1    version        2 (version 1 is read too: it has no device section)
//!  3      1    phase          0 idle, 1 receiving, 2 all groups decoded, 3 imported,
//!                             4 failed or refused, 5 superseded; other values decode as
//!                             Phase::Unknown(n)
//!  4      1    flags          bit 0: truncated (unfinished groups after the last listed one
//!                             were left out); bit 1: lists cut (bundles or removed paths left
//!                             out: the device's full report has them); bit 2: removals lost
//!                             (the device forgot some removed paths); bit 3: probation
//!                             (the device section ends with a probation block); bits 4-7
//!                             zero
//!  5      16   bundle id
//!  21     16   state digest   opaque here
//!  37     ..   device section see [`device`]; absent in version 1
//!  ..     ..   runs           see below, until the checksum
//!  end-4  4    CRC-32C        over every byte before it
//! ```
//!
//! Fixed part: 41 bytes and the device section (6 bytes when it says nothing, 12 to 14 with
//! a live generation and a sequence). Each run is a maximal stretch of consecutive unfinished groups that
//! need the same number of shards, relative to the previous run:
//!
//! ```text
//!  varint  (gap << 1) | multi   gap = first group - end of previous run (0 at the start)
//!  varint  len - 2              only if multi (the run has 2 or more groups)
//!  varint  zigzag(needed - previous run's needed)   (previous = 0 at the start)
//! ```
//!
//! Varints are LEB128, shortest form. Encoding is canonical: runs are maximal (two adjacent
//! runs never have the same count), counts are 1..=65535, so decode-then-encode gives the same
//! bytes; anything else is rejected.
//!
//! # Size
//!
//! A lone group whose gap is < 64 and whose count differs from the previous one by < 64 costs
//! 2 bytes; a run of `r >= 2` such groups costs 3 bytes while `r < 130`. So the usual report
//! — unfinished groups close together, similar counts — is at most `41 + 2n` bytes for `n`
//! unfinished groups. Exact positions and counts cannot always fit 2 bytes a group (sparse
//! groups with counts in the thousands carry more information than that), so
//! [`StatusReport::truncate_to`] keeps the longest prefix of runs that fits a byte budget and
//! sets the truncated flag; [`StatusReport::budget`] is the `64 + 2n` budget. The ground resends
//! for the listed groups; the rest are reported next time.

pub mod device;

use thiserror::Error;

pub use device::DeviceSection;

use crate::frame::crc32c;
use crate::wire::{put_varint, varint_len, Reader, WireError};

/// First two bytes of a status report.
pub const MAGIC: [u8; 2] = *b"nS";
/// The status format version this build writes (it reads version 1 too).
pub const VERSION: u8 = 2;
/// Bytes of a report with no runs and a device section that says nothing.
pub const FIXED_LEN: usize = HEAD_LEN + 6;
/// Bytes of the header and the checksum.
const HEAD_LEN: usize = 41;
/// Longest report [`StatusReport::decode`] looks at.
pub const MAX_LEN: usize = 1 << 20;

const FLAG_TRUNCATED: u8 = 1;
const FLAG_LISTS_CUT: u8 = 2;
const FLAG_REMOVALS_LOST: u8 = 4;
const FLAG_PROBATION: u8 = 8;
const FLAGS: u8 = FLAG_TRUNCATED | FLAG_LISTS_CUT | FLAG_REMOVALS_LOST | FLAG_PROBATION;

/// Where the device is with a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No bundle in progress.
    Idle,
    /// Collecting frames.
    Receiving,
    /// Every group decoded; import pending.
    Decoded,
    /// Imported into the store.
    Imported,
    /// Import failed or the bundle was refused (the reason says why); the previous
    /// generation is still live.
    ImportFailed,
    /// A newer bundle superseded it before it was imported.
    Superseded,
    /// A value this build does not know.
    Unknown(u8),
}

impl Phase {
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Phase {
        match b {
            0 => Phase::Idle,
            1 => Phase::Receiving,
            2 => Phase::Decoded,
            3 => Phase::Imported,
            4 => Phase::ImportFailed,
            5 => Phase::Superseded,
            n => Phase::Unknown(n),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Phase::Idle => 0,
            Phase::Receiving => 1,
            Phase::Decoded => 2,
            Phase::Imported => 3,
            Phase::ImportFailed => 4,
            Phase::Superseded => 5,
            Phase::Unknown(n) => n,
        }
    }
}

/// Consecutive groups `first_group .. first_group + len` each needing `needed` more shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeedRun {
    /// First group of the run.
    pub first_group: u32,
    /// Groups in the run, at least 1.
    pub len: u32,
    /// Shards each still needs, at least 1.
    pub needed: u16,
}

impl NeedRun {
    /// One past the last group, as `u64` (may be 2^32).
    pub fn end(&self) -> u64 {
        u64::from(self.first_group) + u64::from(self.len)
    }
}

/// Why a report could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatusError {
    /// Ran out of bytes, bad varint, or trailing bytes.
    #[error("malformed status report: {0}")]
    Wire(#[from] WireError),
    /// Does not start with [`MAGIC`].
    #[error("not a status report: bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A version this build does not read.
    #[error(
        "status report version {0} is not supported (this build reads versions 1 and {VERSION})"
    )]
    UnsupportedVersion(u8),
    /// Longer than [`MAX_LEN`].
    #[error("status report of {0} bytes is over the {MAX_LEN}-byte cap")]
    TooLong(usize),
    /// Checksum mismatch.
    #[error("status report checksum mismatch")]
    Checksum,
    /// Flag bits this version does not define.
    #[error("reserved status flags set: {0:#04x}")]
    ReservedFlags(u8),
    /// A run's count is 0 or over 65535.
    #[error("run needs {0} shards: counts must be 1..=65535")]
    BadCount(i64),
    /// A run continues the previous one with the same count: not canonical.
    #[error("run at group {0} should have been merged with the previous one")]
    NotCanonical(u32),
    /// Groups past 2^32 - 1.
    #[error("group index overflows 32 bits")]
    GroupOverflow,
    /// Groups given to [`StatusReport::new`] not strictly increasing.
    #[error("group {0} listed out of order or twice")]
    Unsorted(u32),
    /// A failed health check's name longer than the device writes (not canonical).
    #[error("health check name of {0} bytes: at most {max} are written", max = device::MAX_CHECK_NAME)]
    CheckNameTooLong(usize),
}

/// What a device still needs for one bundle. See the module docs for the byte layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusReport {
    /// The bundle this is about.
    pub bundle_id: [u8; 16],
    /// Short digest of the device's state (opaque to the link layer).
    pub state_digest: [u8; 16],
    /// Where the device is.
    pub phase: Phase,
    /// What the device says about itself.
    pub device: DeviceSection,
    /// Bundles or removed paths were left out of `device` (the full report has them).
    pub lists_cut: bool,
    /// The device forgot some removed paths: `device.removed` is not all that left.
    pub removals_lost: bool,
    runs: Vec<NeedRun>,
    truncated: bool,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encoded size of `run` after a run ending at `prev_end` with count `prev_needed`.
fn run_cost(run: &NeedRun, prev_end: u64, prev_needed: u16) -> usize {
    let gap = u64::from(run.first_group) - prev_end;
    let multi = run.len > 1;
    let dc = i64::from(run.needed) - i64::from(prev_needed);
    varint_len((gap << 1) | u64::from(multi))
        + if multi {
            varint_len(u64::from(run.len) - 2)
        } else {
            0
        }
        + varint_len(zigzag(dc))
}

impl StatusReport {
    /// A report listing `needs` as `(group, shards still needed)`, groups strictly
    /// increasing. Entries with a count of 0 are skipped (that group is done).
    pub fn new(
        bundle_id: [u8; 16],
        state_digest: [u8; 16],
        phase: Phase,
        needs: impl IntoIterator<Item = (u32, u16)>,
    ) -> Result<Self, StatusError> {
        let mut runs: Vec<NeedRun> = Vec::new();
        let mut last: Option<u32> = None;
        for (group, needed) in needs {
            if last.is_some_and(|l| group <= l) {
                return Err(StatusError::Unsorted(group));
            }
            last = Some(group);
            if needed == 0 {
                continue;
            }
            match runs.last_mut() {
                Some(r) if r.end() == u64::from(group) && r.needed == needed => r.len += 1,
                _ => runs.push(NeedRun {
                    first_group: group,
                    len: 1,
                    needed,
                }),
            }
        }
        Ok(StatusReport {
            runs,
            ..StatusReport::empty(bundle_id, state_digest, phase)
        })
    }

    /// A report listing no groups.
    pub fn empty(bundle_id: [u8; 16], state_digest: [u8; 16], phase: Phase) -> Self {
        StatusReport {
            bundle_id,
            state_digest,
            phase,
            device: DeviceSection::default(),
            lists_cut: false,
            removals_lost: false,
            runs: Vec::new(),
            truncated: false,
        }
    }

    /// What this report says of bundle `id`: the report's own bundle in full, another by
    /// the id prefix of its note (phase, reason).
    pub fn said_of(&self, id: &[u8; 16]) -> Option<(Phase, device::Reason)> {
        if *id == self.bundle_id {
            return Some((self.phase, self.device.reason));
        }
        self.device
            .others
            .iter()
            .find(|n| id.starts_with(&n.id_prefix))
            .map(|n| (n.phase, n.reason))
    }

    /// The runs, in group order, maximal.
    pub fn runs(&self) -> &[NeedRun] {
        &self.runs
    }

    /// Every listed `(group, needed)`, in group order.
    pub fn needs(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |i| (r.first_group + i, r.needed)))
    }

    /// Number of groups listed.
    pub fn listed_groups(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.len)).sum()
    }

    /// Whether unfinished groups after the last listed one were left out.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The size budget for a report about `unfinished` groups: `64 + 2 * unfinished`.
    pub fn budget(unfinished: u64) -> usize {
        usize::try_from(unfinished.saturating_mul(2).saturating_add(64)).unwrap_or(usize::MAX)
    }

    /// [`budget`](Self::budget), plus what this report's lists of other bundles and removed
    /// paths cost (6 and 5 bytes an entry) and its probation block.
    /// The section's varints are counted at their usual widths (a generation below 2^14, a
    /// sequence below 2^35, lists below 128 entries); wider ones add what they take beyond.
    pub fn budget_with_lists(&self, unfinished: u64) -> usize {
        let d = &self.device;
        let wide = |v: u64, usual: usize| varint_len(v).saturating_sub(usual);
        let beyond = wide(d.live.map_or(0, |l| u64::from(l.generation)), 2)
            + wide(d.sequence, 5)
            + wide(d.others.len() as u64, 1)
            + wide(d.removed.len() as u64, 1);
        Self::budget(unfinished)
            .saturating_add(d.probation.as_ref().map_or(0, |p| p.encoded_len()))
            .saturating_add(device::NOTE_LEN * d.others.len())
            .saturating_add(5 * d.removed.len())
            .saturating_add(beyond)
    }

    /// Bytes of everything but the runs: the least [`truncate_to`](Self::truncate_to) can
    /// reach.
    pub fn base_len(&self) -> usize {
        HEAD_LEN + self.device.encoded_len()
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        let mut len = self.base_len();
        let (mut prev_end, mut prev_needed) = (0u64, 0u16);
        for r in &self.runs {
            len += run_cost(r, prev_end, prev_needed);
            prev_end = r.end();
            prev_needed = r.needed;
        }
        len
    }

    /// Drops trailing groups until the encoding fits `max_len` bytes (never below the
    /// header and the device section), setting the truncated flag if anything was dropped.
    /// Returns whether the result fits.
    pub fn truncate_to(&mut self, max_len: usize) -> bool {
        if self.encoded_len() <= max_len {
            return true;
        }
        let mut used = self.base_len();
        let (mut prev_end, mut prev_needed) = (0u64, 0u16);
        let mut keep = 0;
        let mut partial: Option<NeedRun> = None;
        for r in &self.runs {
            let cost = run_cost(r, prev_end, prev_needed);
            if used + cost <= max_len {
                used += cost;
                prev_end = r.end();
                prev_needed = r.needed;
                keep += 1;
                continue;
            }
            // Keep as much of this run as fits: try the longest lengths whose `len - 2`
            // varint takes 5, 4, .. 1 bytes, then a lone group.
            let left = max_len.saturating_sub(used);
            for bytes in (1..=5u32).rev() {
                let max_len_field = 1u64.checked_shl(7 * bytes).map_or(u64::MAX, |v| v - 1);
                let len = (u64::from(r.len) - 1).min(max_len_field + 2);
                if len < 2 {
                    continue;
                }
                let cand = NeedRun {
                    len: len as u32,
                    ..*r
                };
                if run_cost(&cand, prev_end, prev_needed) <= left {
                    partial = Some(cand);
                    break;
                }
            }
            if partial.is_none() {
                let lone = NeedRun { len: 1, ..*r };
                if run_cost(&lone, prev_end, prev_needed) <= left {
                    partial = Some(lone);
                }
            }
            break;
        }
        self.runs.truncate(keep);
        self.runs.extend(partial);
        self.truncated = true;
        self.encoded_len() <= max_len
    }

    /// Appends the encoded report.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.phase.to_u8());
        let flags = [
            (self.truncated, FLAG_TRUNCATED),
            (self.lists_cut, FLAG_LISTS_CUT),
            (self.removals_lost, FLAG_REMOVALS_LOST),
            (self.device.probation.is_some(), FLAG_PROBATION),
        ];
        out.push(flags.iter().filter(|(on, _)| *on).map(|(_, f)| f).sum());
        out.extend_from_slice(&self.bundle_id);
        out.extend_from_slice(&self.state_digest);
        self.device.encode(out);
        let (mut prev_end, mut prev_needed) = (0u64, 0u16);
        for r in &self.runs {
            let gap = u64::from(r.first_group) - prev_end;
            let multi = r.len > 1;
            put_varint(out, (gap << 1) | u64::from(multi));
            if multi {
                put_varint(out, u64::from(r.len) - 2);
            }
            put_varint(out, zigzag(i64::from(r.needed) - i64::from(prev_needed)));
            prev_end = r.end();
            prev_needed = r.needed;
        }
        let crc = crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a whole report. Total: any input gives a report or an error, in memory
    /// proportional to the input (each run takes at least two bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, StatusError> {
        if bytes.len() > MAX_LEN {
            return Err(StatusError::TooLong(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let magic: [u8; 2] = r.take_array()?;
        if magic != MAGIC {
            return Err(StatusError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != VERSION && version != 1 {
            return Err(StatusError::UnsupportedVersion(version));
        }
        if bytes.len() < HEAD_LEN {
            return Err(WireError::Truncated {
                needed: HEAD_LEN,
                remaining: bytes.len(),
            }
            .into());
        }
        let body_len = bytes.len() - 4;
        let stored = u32::from_le_bytes([
            bytes[body_len],
            bytes[body_len + 1],
            bytes[body_len + 2],
            bytes[body_len + 3],
        ]);
        if crc32c(&bytes[..body_len]) != stored {
            return Err(StatusError::Checksum);
        }
        let mut r = Reader::new(&bytes[3..body_len]);
        let phase = Phase::from_u8(r.u8()?);
        let flags = r.u8()?;
        let known = if version == 1 { FLAG_TRUNCATED } else { FLAGS };
        if flags & !known != 0 {
            return Err(StatusError::ReservedFlags(flags));
        }
        let bundle_id = r.take_array()?;
        let state_digest = r.take_array()?;
        let device = if version == 1 {
            DeviceSection::default()
        } else {
            DeviceSection::decode(&mut r, flags & FLAG_PROBATION != 0)?
        };
        if let Some(p) = device.probation.as_ref() {
            if p.check.len() > device::MAX_CHECK_NAME {
                return Err(StatusError::CheckNameTooLong(p.check.len()));
            }
        }
        let mut runs: Vec<NeedRun> = Vec::new();
        let (mut prev_end, mut prev_needed) = (0u64, 0u16);
        while !r.is_empty() {
            let head = r.varint_u64()?;
            let gap = head >> 1;
            let len = if head & 1 == 1 {
                r.varint_u64()?
                    .checked_add(2)
                    .ok_or(StatusError::GroupOverflow)?
            } else {
                1
            };
            let dc = unzigzag(r.varint_u64()?);
            let needed = i64::from(prev_needed)
                .checked_add(dc)
                .ok_or(StatusError::BadCount(i64::MAX))?;
            let needed = match u16::try_from(needed) {
                Ok(n) if n > 0 => n,
                _ => return Err(StatusError::BadCount(needed)),
            };
            let first = prev_end
                .checked_add(gap)
                .ok_or(StatusError::GroupOverflow)?;
            let end = first.checked_add(len).ok_or(StatusError::GroupOverflow)?;
            if end > 1 << 32 {
                return Err(StatusError::GroupOverflow);
            }
            if !runs.is_empty() && gap == 0 && needed == prev_needed {
                return Err(StatusError::NotCanonical(first as u32));
            }
            runs.push(NeedRun {
                first_group: first as u32,
                len: len as u32,
                needed,
            });
            prev_end = end;
            prev_needed = needed;
        }
        Ok(StatusReport {
            bundle_id,
            state_digest,
            phase,
            device,
            lists_cut: flags & FLAG_LISTS_CUT != 0,
            removals_lost: flags & FLAG_REMOVALS_LOST != 0,
            runs,
            truncated: flags & FLAG_TRUNCATED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn report(needs: &[(u32, u16)]) -> StatusReport {
        StatusReport::new([1; 16], [2; 16], Phase::Receiving, needs.iter().copied()).unwrap()
    }

    fn round_trip(r: &StatusReport) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out.len(), r.encoded_len());
        assert_eq!(&StatusReport::decode(&out).unwrap(), r);
        out
    }

    #[test]
    fn empty_and_runs() {
        let r = report(&[]);
        assert_eq!(round_trip(&r).len(), FIXED_LEN);
        let r = report(&[(0, 3), (1, 3), (2, 3), (5, 0), (7, 1), (u32::MAX, 65535)]);
        assert_eq!(
            r.runs(),
            &[
                NeedRun {
                    first_group: 0,
                    len: 3,
                    needed: 3
                },
                NeedRun {
                    first_group: 7,
                    len: 1,
                    needed: 1
                },
                NeedRun {
                    first_group: u32::MAX,
                    len: 1,
                    needed: 65535
                },
            ]
        );
        round_trip(&r);
        assert_eq!(
            StatusReport::new([0; 16], [0; 16], Phase::Idle, [(3, 1), (3, 1)]),
            Err(StatusError::Unsorted(3))
        );
    }

    #[test]
    fn every_phase_byte_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(Phase::from_u8(b).to_u8(), b);
        }
        let mut r = report(&[(4, 2)]);
        r.phase = Phase::Unknown(200);
        round_trip(&r);
    }

    #[test]
    fn rejects_non_canonical_and_damaged() {
        let r = report(&[(0, 2), (1, 3)]);
        let mut out = Vec::new();
        r.encode(&mut out);
        for n in 0..out.len() {
            assert!(StatusReport::decode(&out[..n]).is_err());
        }
        // Hand-made: two lone runs at groups 0 and 1 with the same count.
        let mut bad = out[..FIXED_LEN - 4].to_vec();
        bad.extend_from_slice(&[0x00, 0x04, 0x00, 0x00]);
        let crc = crc32c(&bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            StatusReport::decode(&bad),
            Err(StatusError::NotCanonical(1))
        );
        let mut v3 = out.clone();
        v3[2] = 3;
        assert_eq!(
            StatusReport::decode(&v3),
            Err(StatusError::UnsupportedVersion(3))
        );
    }

    fn needs_strategy(max_gap: u32, max_count: u16) -> impl Strategy<Value = Vec<(u32, u16)>> {
        proptest::collection::vec((0..=max_gap, 1..=max_count), 0..300).prop_map(|v| {
            let mut g = 0u64;
            let mut out = Vec::new();
            for (gap, c) in v {
                g += u64::from(gap);
                if g > u64::from(u32::MAX) {
                    break;
                }
                out.push((g as u32, c));
                g += 1;
            }
            out
        })
    }

    proptest! {
        #[test]
        fn round_trip_any(needs in needs_strategy(u32::MAX / 64, u16::MAX)) {
            round_trip(&report(&needs));
        }

        /// The budget `64 + 2n` always holds once truncated to it, and the truncated
        /// report still round-trips and lists a prefix of the groups.
        #[test]
        fn budget_holds_after_truncation(needs in needs_strategy(100_000, u16::MAX)) {
            let full = report(&needs);
            let n = full.listed_groups();
            let mut r = full.clone();
            prop_assert!(r.truncate_to(StatusReport::budget(n)));
            prop_assert!(r.encoded_len() <= StatusReport::budget(n));
            round_trip(&r);
            let kept: Vec<_> = r.needs().collect();
            let all: Vec<_> = full.needs().collect();
            prop_assert_eq!(&all[..kept.len()], &kept[..]);
            prop_assert_eq!(r.is_truncated(), kept.len() < all.len());
        }

        /// Close groups with similar counts fit `41 + 2n` without truncation.
        #[test]
        fn usual_reports_fit_without_truncation(
            start in 0u32..63,
            steps in proptest::collection::vec((0u32..63, -63i32..=63, 1u32..300), 0..200),
            first_count in 1u16..2000,
        ) {
            let mut needs = Vec::new();
            let mut g = start;
            let mut c = i32::from(first_count);
            for (gap, dc, run) in steps {
                c = (c + dc).clamp(1, 65535);
                for _ in 0..run {
                    needs.push((g, c as u16));
                    g += 1;
                }
                g += gap;
            }
            let mut r = report(&needs);
            let n = r.listed_groups();
            // The first count is absolute, so allow its varint beyond one byte.
            prop_assert!(r.encoded_len() <= FIXED_LEN + 2 + 2 * n as usize, "{} for {} groups", r.encoded_len(), n);
            prop_assert!(r.truncate_to(StatusReport::budget(n)));
            prop_assert!(!r.is_truncated());
        }

        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StatusReport::decode(&bytes);
        }

        #[test]
        fn device_section_round_trips(
            live in proptest::option::of((1u32..=u32::MAX, any::<[u8; 5]>())),
            activation in any::<u8>(),
            sequence in any::<u64>(),
            reason in any::<u8>(),
            others in proptest::collection::vec((any::<[u8; 4]>(), any::<u8>(), any::<u8>()), 0..20),
            removed in proptest::collection::vec(any::<[u8; 5]>(), 0..40),
            probation in proptest::option::of((any::<[u8; 4]>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..=32))),
            flags in 0u8..8,
            needs in needs_strategy(1000, 300),
        ) {
            let mut r = report(&needs);
            r.device = DeviceSection {
                live: live.map(|(generation, root)| device::Live { generation, root }),
                activation: device::Activation::from_u8(activation),
                sequence,
                reason: device::Reason::from_u8(reason),
                others: others.into_iter().map(|(id_prefix, p, why)| device::BundleNote {
                    id_prefix,
                    phase: Phase::from_u8(p),
                    reason: device::Reason::from_u8(why),
                }).collect(),
                removed,
                probation: probation.map(|(bundle_prefix, why, reports, minutes, starts, check)| device::Probation {
                    bundle_prefix,
                    reason: device::Reason::from_u8(why),
                    reports,
                    minutes,
                    starts,
                    check,
                }),
            };
            r.lists_cut = flags & 2 != 0;
            r.removals_lost = flags & 4 != 0;
            let n = r.listed_groups();
            let bytes = round_trip(&r);
            for cut in 0..bytes.len() {
                prop_assert!(StatusReport::decode(&bytes[..cut]).is_err());
            }
            prop_assert!(r.truncate_to(r.budget_with_lists(n)));
        }

        #[test]
        fn version_1_reports_still_decode(needs in needs_strategy(1000, 300)) {
            let r = report(&needs);
            let mut v2 = Vec::new();
            r.encode(&mut v2);
            // The same report as version 1 wrote it: no device section.
            let mut v1 = v2[..HEAD_LEN - 4].to_vec();
            v1[2] = 1;
            v1.extend_from_slice(&v2[FIXED_LEN - 4..v2.len() - 4]);
            let crc = crc32c(&v1);
            v1.extend_from_slice(&crc.to_le_bytes());
            prop_assert_eq!(StatusReport::decode(&v1).unwrap(), r);
        }

        /// Any body under a valid checksum decodes or is refused; what decodes re-encodes to
        /// its input (version 2) or to the same report (version 1, re-encoded as 2).
        #[test]
        fn decode_is_total_with_valid_crc(
            version in 1u8..=2,
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut bytes = vec![b'n', b'S', version, 1, 0];
            bytes.extend_from_slice(&[7; 32]);
            bytes.extend_from_slice(&body);
            let crc = crc32c(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            if let Ok(r) = StatusReport::decode(&bytes) {
                let mut out = Vec::new();
                r.encode(&mut out);
                prop_assert_eq!(StatusReport::decode(&out).unwrap(), r);
                if version == VERSION {
                    prop_assert_eq!(out, bytes);
                }
            }
        }
    }
}
