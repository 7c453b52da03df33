//! Device side bookkeeping: which shards of which groups are held, which groups can be
//! decoded, what to ask for next. Sans-IO: payloads live in the caller's storage.
//!
//! The caller's loop for each frame that decodes ([`crate::frame::Frame::decode`]):
//!
//! ```text
//! match tracker.peek_frame(header) {
//!     Outcome::New | Outcome::Decodable => {
//!         storage.persist(frame)?;            // durably, first (invariant 1)
//!         if tracker.handle_frame(header) == Outcome::Decodable {
//!             let shards = tracker.received_shards(group);   // fetch those payloads
//!             storage.put_group(group, fec::decode_group(..)?)?;
//!             tracker.mark_decoded(group);
//!         }
//!     }
//!     _ => {}                                 // duplicate, surplus, done, foreign: drop
//! }
//! ```
//!
//! After a crash, [`GroupTracker::rebuild`] from the persisted `(group, shard)` pairs and the
//! list of decoded groups gives the same state back. Memory: one bit per possible
//! `(group, shard)` slot plus a counter per group, capped by [`Limits`] before allocation.

use crate::frame::FrameHeader;
use crate::layout::GroupLayout;
use crate::params::{Limits, LinkParams, ParamsError};
use crate::status::{Phase, StatusReport};

/// What a shard means to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A shard not held before; the group still needs more.
    New,
    /// A shard not held before, and with it the group has `k` distinct shards: decode it.
    Decodable,
    /// Already held.
    Duplicate,
    /// The group already has `k` shards (decodable, not yet decoded): not needed.
    Surplus,
    /// The group is already decoded.
    GroupAlreadyDone,
    /// Group or shard index outside this bundle's layout.
    OutOfRange,
    /// A frame of another bundle.
    OtherBundle,
    /// A frame naming this bundle but with different parameters: corrupt or forged.
    ParamsMismatch,
}

impl Outcome {
    /// Whether the caller should persist the shard and then call `handle_*`.
    pub fn is_wanted(self) -> bool {
        matches!(self, Outcome::New | Outcome::Decodable)
    }
}

/// Per-bundle receive state. See the module docs.
#[derive(Debug, Clone)]
pub struct GroupTracker {
    bundle_id: [u8; 16],
    params: LinkParams,
    layout: GroupLayout,
    /// Bit slots per group: `max_group_k + P`.
    stride: u64,
    bits: Vec<u64>,
    /// Distinct shards held per group (at most `k + P <= 65536`).
    have: Vec<u32>,
    decoded: Vec<u64>,
    decoded_count: u32,
}

impl GroupTracker {
    /// An empty tracker for a bundle. Fails if the parameters are invalid or over `limits`.
    pub fn new(
        bundle_id: [u8; 16],
        params: LinkParams,
        limits: &Limits,
    ) -> Result<Self, ParamsError> {
        let layout = params.validate_within(limits)?;
        let groups = layout.group_count() as usize;
        let stride = u64::from(layout.max_group_k()) + u64::from(params.parity);
        // validate_within capped groups * stride.
        let slots = params.tracked_slots(&layout);
        Ok(GroupTracker {
            bundle_id,
            params,
            layout,
            stride,
            bits: vec![0; slots.div_ceil(64) as usize],
            have: vec![0; groups],
            decoded: vec![0; groups.div_ceil(64)],
            decoded_count: 0,
        })
    }

    /// The state after a restart: `persisted` are the `(group, shard)` pairs whose payloads
    /// are durably stored, `decoded` the groups whose data is durably stored. Pairs outside
    /// the layout are ignored.
    pub fn rebuild(
        bundle_id: [u8; 16],
        params: LinkParams,
        limits: &Limits,
        persisted: impl IntoIterator<Item = (u32, u16)>,
        decoded: impl IntoIterator<Item = u32>,
    ) -> Result<Self, ParamsError> {
        let mut t = Self::new(bundle_id, params, limits)?;
        for (g, s) in persisted {
            t.record(g, s);
        }
        for g in decoded {
            t.mark_decoded(g);
        }
        Ok(t)
    }

    /// The bundle.
    pub fn bundle_id(&self) -> [u8; 16] {
        self.bundle_id
    }

    /// The bundle's parameters.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// The bundle's layout.
    pub fn layout(&self) -> &GroupLayout {
        &self.layout
    }

    fn slot(&self, group: u32, shard: u16) -> Option<(u16, u64)> {
        let k = self.layout.group_k(group)?;
        if u32::from(shard) >= u32::from(k) + u32::from(self.params.parity) {
            return None;
        }
        Some((k, u64::from(group) * self.stride + u64::from(shard)))
    }

    fn bit(&self, slot: u64) -> bool {
        self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn is_decoded_unchecked(&self, group: u32) -> bool {
        self.decoded[group as usize / 64] & (1 << (group % 64)) != 0
    }

    /// What [`handle_shard`](Self::handle_shard) would return, without changing anything.
    pub fn peek(&self, group: u32, shard: u16) -> Outcome {
        let Some((k, slot)) = self.slot(group, shard) else {
            return Outcome::OutOfRange;
        };
        if self.is_decoded_unchecked(group) {
            Outcome::GroupAlreadyDone
        } else if self.bit(slot) {
            Outcome::Duplicate
        } else if self.have[group as usize] >= u32::from(k) {
            Outcome::Surplus
        } else if self.have[group as usize] + 1 == u32::from(k) {
            Outcome::Decodable
        } else {
            Outcome::New
        }
    }

    fn record(&mut self, group: u32, shard: u16) {
        if let Some((_, slot)) = self.slot(group, shard) {
            if !self.bit(slot) {
                self.bits[(slot / 64) as usize] |= 1 << (slot % 64);
                self.have[group as usize] += 1;
            }
        }
    }

    /// Counts a shard the caller has durably stored. Only [`Outcome::New`] and
    /// [`Outcome::Decodable`] change state.
    pub fn handle_shard(&mut self, group: u32, shard: u16) -> Outcome {
        let outcome = self.peek(group, shard);
        if outcome.is_wanted() {
            self.record(group, shard);
        }
        outcome
    }

    fn check_header(&self, header: &FrameHeader) -> Option<Outcome> {
        if header.bundle_id != self.bundle_id {
            Some(Outcome::OtherBundle)
        } else if header.params != self.params {
            Some(Outcome::ParamsMismatch)
        } else {
            None
        }
    }

    /// [`peek`](Self::peek) for a frame header, checking bundle and parameters first.
    pub fn peek_frame(&self, header: &FrameHeader) -> Outcome {
        self.check_header(header)
            .unwrap_or_else(|| self.peek(header.group, header.shard))
    }

    /// [`handle_shard`](Self::handle_shard) for a frame header, checking bundle and
    /// parameters first.
    pub fn handle_frame(&mut self, header: &FrameHeader) -> Outcome {
        match self.check_header(header) {
            Some(o) => o,
            None => self.handle_shard(header.group, header.shard),
        }
    }

    /// Whether `group` has `k` shards and is not yet decoded.
    pub fn is_decodable(&self, group: u32) -> bool {
        match self.layout.group_k(group) {
            Some(k) => {
                !self.is_decoded_unchecked(group) && self.have[group as usize] >= u32::from(k)
            }
            None => false,
        }
    }

    /// Whether `group` is decoded.
    pub fn is_decoded(&self, group: u32) -> bool {
        group < self.layout.group_count() && self.is_decoded_unchecked(group)
    }

    /// Records that the caller has decoded `group` and stored its data durably. Returns
    /// false if the group does not exist.
    pub fn mark_decoded(&mut self, group: u32) -> bool {
        if group >= self.layout.group_count() {
            return false;
        }
        if !self.is_decoded_unchecked(group) {
            self.decoded[group as usize / 64] |= 1 << (group % 64);
            self.decoded_count += 1;
        }
        true
    }

    /// Shards `group` still needs before it can be decoded (0 if decodable, decoded, or no
    /// such group).
    pub fn needed(&self, group: u32) -> u16 {
        match self.layout.group_k(group) {
            Some(k) if !self.is_decoded_unchecked(group) => {
                u32::from(k).saturating_sub(self.have[group as usize]) as u16
            }
            _ => 0,
        }
    }

    /// Distinct shards held for `group`.
    pub fn held(&self, group: u32) -> u32 {
        self.have.get(group as usize).copied().unwrap_or(0)
    }

    /// Shard indices held for `group`, ascending: the payloads to hand to the decoder.
    pub fn received_shards(&self, group: u32) -> impl Iterator<Item = u16> + '_ {
        let total = self
            .layout
            .group_k(group)
            .map_or(0, |k| u32::from(k) + u32::from(self.params.parity));
        (0..total)
            .map(|s| s as u16)
            .filter(move |&s| self.bit(u64::from(group) * self.stride + u64::from(s)))
    }

    /// Groups not yet decoded, ascending.
    pub fn unfinished_groups(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.layout.group_count()).filter(|&g| !self.is_decoded_unchecked(g))
    }

    /// Groups decoded.
    pub fn decoded_groups(&self) -> u32 {
        self.decoded_count
    }

    /// Whether every group is decoded (the bundle is complete).
    pub fn is_complete(&self) -> bool {
        self.decoded_count == self.layout.group_count()
    }

    /// A status report listing every group that still needs shards, truncated to the
    /// `64 + 2n` budget (see [`crate::status`]).
    pub fn status_report(&self, state_digest: [u8; 16], phase: Phase) -> StatusReport {
        let needs: Vec<(u32, u16)> = self
            .unfinished_groups()
            .map(|g| (g, self.needed(g)))
            .filter(|&(_, n)| n > 0)
            .collect();
        let unfinished = needs.len() as u64;
        // Groups come ascending, so `new` cannot fail.
        let mut report = StatusReport::new(self.bundle_id, state_digest, phase, needs)
            .unwrap_or_else(|_| StatusReport::empty(self.bundle_id, state_digest, phase));
        report.truncate_to(StatusReport::budget(unfinished));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CodecId;

    fn params() -> LinkParams {
        // 10 shards of 4 bytes; K = 4 -> groups of 4, 3, 3; P = 2.
        LinkParams {
            codec: CodecId::RsSimd16,
            shard_size: 4,
            group_k: 4,
            parity: 2,
            bundle_len: 40,
        }
    }

    #[test]
    fn outcomes() {
        let mut t = GroupTracker::new([1; 16], params(), &Limits::default()).unwrap();
        assert_eq!(t.layout().group_count(), 3);
        assert_eq!(t.needed(1), 3);
        assert_eq!(t.handle_shard(1, 0), Outcome::New);
        assert_eq!(t.handle_shard(1, 0), Outcome::Duplicate);
        assert_eq!(t.handle_shard(1, 4), Outcome::New); // parity 1
        assert_eq!(t.handle_shard(1, 5), Outcome::OutOfRange); // k + P = 5
        assert_eq!(t.needed(1), 1);
        assert_eq!(t.peek(1, 2), Outcome::Decodable);
        assert_eq!(t.handle_shard(1, 2), Outcome::Decodable);
        assert!(t.is_decodable(1));
        assert_eq!(t.needed(1), 0);
        assert_eq!(t.handle_shard(1, 3), Outcome::Surplus);
        assert_eq!(t.received_shards(1).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert!(t.mark_decoded(1));
        assert!(!t.is_decodable(1));
        assert_eq!(t.handle_shard(1, 1), Outcome::GroupAlreadyDone);
        assert_eq!(t.handle_shard(3, 0), Outcome::OutOfRange);
        assert!(!t.mark_decoded(3));
        assert_eq!(t.unfinished_groups().collect::<Vec<_>>(), vec![0, 2]);
        assert!(!t.is_complete());
        let r = t.status_report([0; 16], Phase::Receiving);
        assert_eq!(r.needs().collect::<Vec<_>>(), vec![(0, 4), (2, 3)]);
    }

    #[test]
    fn frame_checks() {
        let mut t = GroupTracker::new([1; 16], params(), &Limits::default()).unwrap();
        let mut h = FrameHeader {
            bundle_id: [2; 16],
            params: params(),
            group: 0,
            shard: 0,
        };
        assert_eq!(t.handle_frame(&h), Outcome::OtherBundle);
        h.bundle_id = [1; 16];
        h.params.parity = 3;
        assert_eq!(t.handle_frame(&h), Outcome::ParamsMismatch);
        h.params = params();
        assert_eq!(t.peek_frame(&h), Outcome::New);
        assert_eq!(t.handle_frame(&h), Outcome::New);
    }

    #[test]
    fn rebuild_matches_live_state() {
        let pairs = [
            (0, 0),
            (0, 5),
            (2, 1),
            (2, 1),
            (1, 0),
            (1, 1),
            (1, 2),
            (9, 9),
        ];
        let mut live = GroupTracker::new([1; 16], params(), &Limits::default()).unwrap();
        for &(g, s) in &pairs {
            live.handle_shard(g, s);
        }
        live.mark_decoded(1);
        let rebuilt = GroupTracker::rebuild(
            [1; 16],
            params(),
            &Limits::default(),
            pairs.iter().copied(),
            [1],
        )
        .unwrap();
        for g in 0..3 {
            assert_eq!(live.needed(g), rebuilt.needed(g));
            assert_eq!(live.is_decoded(g), rebuilt.is_decoded(g));
            assert_eq!(
                live.received_shards(g).collect::<Vec<_>>(),
                rebuilt.received_shards(g).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn caps_apply_before_allocation() {
        let mut p = params();
        p.bundle_len = 1 << 40;
        assert!(GroupTracker::new([0; 16], p, &Limits::default()).is_err());
    }
}
