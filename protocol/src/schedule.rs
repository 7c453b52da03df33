//! Ground side: which shards to put on air, and in what order. A pure state machine.
//!
//! Every group has a fixed send order over its `k + P` shard indices: data `0..k`, then parity
//! `k..k+P`, then around again. The [`Sender`] keeps one cursor per group (how many shards it
//! has sent of that group) and always sends the next ones in that order. So:
//!
//! * the first pass sends all data shards and the first `ceil(k * redundancy / 100)` parity
//!   shards of every group;
//! * a resend sends parity never sent before (the device cannot have it, so each one counts);
//! * once all `P` parity shards have been sent, the cursor wraps and the least recently sent
//!   shards go again (the device lacks some of them, but the ground does not know which).
//!
//! Within a pass, shards of different groups are interleaved round-robin (group 0, 1, 2, …, then
//! again), so a burst of `b` consecutive losses costs `b` different groups one shard each
//! instead of one group `b` shards.

use thiserror::Error;

use crate::frame::FrameHeader;
use crate::layout::GroupLayout;
use crate::params::{LinkParams, ParamsError};
use crate::status::{Phase, StatusReport};

/// One shard to send: group and shard index within the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardRef {
    /// Group index.
    pub group: u32,
    /// Shard index within the group (`< k` data, `k + j` parity `j`).
    pub shard: u16,
}

/// Why a status report cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResendError {
    /// The report is about another bundle.
    #[error("status report is about bundle {got:02x?}, not {want:02x?}")]
    WrongBundle {
        /// The sender's bundle.
        want: [u8; 16],
        /// The report's.
        got: [u8; 16],
    },
    /// The report names a group past the end of the bundle.
    #[error("status report names group {group}, the bundle has {groups}")]
    NoSuchGroup {
        /// Named group.
        group: u32,
        /// `G`.
        groups: u32,
    },
}

/// The ground's send state for one bundle.
#[derive(Debug, Clone)]
pub struct Sender {
    bundle_id: [u8; 16],
    params: LinkParams,
    layout: GroupLayout,
    redundancy_percent: u16,
    resend_margin_percent: u16,
    /// The most loss a resend is sized for, in parts per million.
    max_loss_ppm: u32,
    /// Shards sent so far per group; the next shard is `sent % (k + P)`.
    sent: Vec<u64>,
    /// Per group: shards still needed at the last report (k before any), and shards sent
    /// by then: from these the next report tells how many got through.
    last_needed: Vec<u16>,
    sent_at_report: Vec<u64>,
    /// Frame loss estimated from the reports so far, in parts per million.
    loss_ppm: u32,
    policy: ResendPolicy,
}

/// How many shards a resend gives a group that still needs `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResendPolicy {
    /// Exactly `n` (plus the fixed margin): the fewest bytes, more round trips under loss.
    Exact,
    /// Enough that `n` arrive with high probability at the loss measured from the reports
    /// (see [`shards_to_send`]): when reports only come between passes, this saves passes
    /// for a few percent more bytes.
    #[default]
    LossAdaptive,
}

/// The most loss a resend is sized for by default: 33 %. A group needing `n`
/// then gets at most `(n + 3.5·sqrt(0.33·n)) / 0.67` shards: 1.9 times 64, 1.6 times 1000.
pub const DEFAULT_MAX_LOSS_PPM: u32 = 330_000;

/// Loss assumed before any report has measured it: 10%.
const INITIAL_LOSS_PPM: u32 = 100_000;
/// Highest loss the estimate will assume: 95%.
const MAX_LOSS_PPM: u32 = 950_000;

/// Shards to send so that `needed` of them arrive with high probability (about 99.9% per
/// group, 3.5 standard deviations) over a link losing `loss_ppm`:
/// `(n + 3.5·sqrt(n·p)) / (1 − p)`, rounded up. A group that falls short costs a whole extra
/// pass when reports only come between passes; a few more parity frames cost little.
pub fn shards_to_send(needed: u64, loss_ppm: u32) -> u64 {
    if needed == 0 {
        return 0;
    }
    let p = f64::from(loss_ppm.min(MAX_LOSS_PPM)) / 1e6;
    let n = needed as f64;
    ((n + 3.5 * (n * p).sqrt()) / (1.0 - p)).ceil() as u64
}

fn percent_of(n: u64, percent: u16) -> u64 {
    (n * u64::from(percent)).div_ceil(100)
}

impl Sender {
    /// A sender for a bundle whose first pass adds `redundancy_percent` parity (rounded up,
    /// at most `P`) to each group.
    pub fn new(
        bundle_id: [u8; 16],
        params: LinkParams,
        redundancy_percent: u16,
    ) -> Result<Self, ParamsError> {
        let layout = params.validate()?;
        Ok(Sender {
            bundle_id,
            params,
            layout,
            redundancy_percent,
            resend_margin_percent: 0,
            max_loss_ppm: DEFAULT_MAX_LOSS_PPM,
            sent: vec![0; layout.group_count() as usize],
            last_needed: (0..layout.group_count())
                .map(|g| layout.group_k(g).unwrap_or(0))
                .collect(),
            sent_at_report: vec![0; layout.group_count() as usize],
            loss_ppm: INITIAL_LOSS_PPM,
            policy: ResendPolicy::default(),
        })
    }

    /// A sender that continues where an earlier one stopped: `sent` is what
    /// [`sent_counts`](Self::sent_counts) returned then (one count per group).
    pub fn with_sent(
        bundle_id: [u8; 16],
        params: LinkParams,
        redundancy_percent: u16,
        sent: Vec<u64>,
    ) -> Result<Self, ParamsError> {
        let mut s = Self::new(bundle_id, params, redundancy_percent)?;
        if sent.len() == s.sent.len() {
            s.sent_at_report = sent.clone();
            s.sent = sent;
        }
        Ok(s)
    }

    /// Shards sent so far, per group: the state to persist between passes.
    pub fn sent_counts(&self) -> &[u64] {
        &self.sent
    }

    /// Take back the last `count` shards planned for `group` that were never put on air (a
    /// pass cut short by its byte budget), so the next plan sends them first.
    pub fn unsend(&mut self, group: u32, count: u64) {
        if let Some(c) = self.sent.get_mut(group as usize) {
            *c = c.saturating_sub(count);
        }
    }

    /// Extra shards per resend, as a percentage of what a group asked for (rounded up;
    /// default 0: exactly what was asked). A margin trades bytes for fewer round trips.
    pub fn set_resend_margin(&mut self, percent: u16) {
        self.resend_margin_percent = percent;
    }

    /// The most loss a resend is sized for (default [`DEFAULT_MAX_LOSS_PPM`]), whatever the
    /// estimate says: a pass cut short looks like heavy loss, and must not make the next
    /// resend many times the deficit. The planned margin is then at most
    /// [`shards_to_send`]`(n, max)` − `n` shards for a group that needs `n`.
    pub fn set_max_loss(&mut self, ppm: u32) {
        self.max_loss_ppm = ppm;
    }

    /// The bundle's layout.
    pub fn layout(&self) -> &GroupLayout {
        &self.layout
    }

    /// The bundle's parameters.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Parity shards `group` gets in the first pass.
    pub fn initial_parity(&self, group: u32) -> u16 {
        let k = self.layout.group_k(group).unwrap_or(0);
        percent_of(u64::from(k), self.redundancy_percent).min(u64::from(self.params.parity)) as u16
    }

    /// Shards of `group` sent so far.
    pub fn sent(&self, group: u32) -> u64 {
        self.sent.get(group as usize).copied().unwrap_or(0)
    }

    /// The header of the frame carrying `shard`.
    pub fn frame_header(&self, shard: ShardRef) -> FrameHeader {
        FrameHeader {
            bundle_id: self.bundle_id,
            params: self.params,
            group: shard.group,
            shard: shard.shard,
        }
    }

    /// Plans `count` more shards of `group` from its cursor, advancing the cursor.
    fn plan(&mut self, group: u32, count: u64) -> Option<PassEntry> {
        let k = self.layout.group_k(group)?;
        if count == 0 {
            return None;
        }
        let total = u32::from(k) + u32::from(self.params.parity);
        let cursor = &mut self.sent[group as usize];
        let entry = PassEntry {
            group,
            next: (*cursor % u64::from(total)) as u32,
            total,
            remaining: count,
        };
        *cursor += count;
        Some(entry)
    }

    /// The first pass: every data shard and the initial parity of every group, interleaved.
    pub fn first_pass(&mut self) -> Pass {
        let entries = (0..self.layout.group_count())
            .filter_map(|g| {
                let k = u64::from(self.layout.group_k(g)?);
                let count = k + u64::from(self.initial_parity(g));
                self.plan(g, count)
            })
            .collect();
        Pass::new(entries)
    }

    /// The shards each group in `report` still needs (plus the resend margin), new parity
    /// first, interleaved. Counts over a group's `k` are taken as `k`. A report for a phase
    /// past receiving asks for nothing.
    pub fn resend(&mut self, report: &StatusReport) -> Result<Pass, ResendError> {
        if report.bundle_id != self.bundle_id {
            return Err(ResendError::WrongBundle {
                want: self.bundle_id,
                got: report.bundle_id,
            });
        }
        if matches!(
            report.phase,
            Phase::Decoded | Phase::Imported | Phase::ImportFailed | Phase::Superseded
        ) {
            return Ok(Pass::new(Vec::new()));
        }
        let groups = self.layout.group_count();
        if let Some(run) = report.runs().iter().find(|r| r.end() > u64::from(groups)) {
            return Err(ResendError::NoSuchGroup {
                group: (run.end() - 1) as u32,
                groups,
            });
        }
        self.observe(report);
        let margin = self.resend_margin_percent;
        let mut entries = Vec::new();
        for (group, needed) in report.needs() {
            let k = self.layout.group_k(group).unwrap_or(0);
            let n = u64::from(needed.min(k));
            let count = match self.policy {
                ResendPolicy::Exact => n,
                ResendPolicy::LossAdaptive => {
                    shards_to_send(n, self.loss_ppm.min(self.max_loss_ppm))
                }
            };
            entries.extend(self.plan(group, count + percent_of(n, margin)));
        }
        self.sent_at_report.clone_from(&self.sent);
        Ok(Pass::new(entries))
    }

    /// Choose how resends are sized (default [`ResendPolicy::LossAdaptive`]).
    pub fn set_policy(&mut self, policy: ResendPolicy) {
        self.policy = policy;
    }

    /// The loss the sender currently assumes, in parts per million.
    pub fn loss_estimate_ppm(&self) -> u32 {
        self.loss_ppm
    }

    /// Learn the link's loss from a report: for every group sent to since the last report
    /// and still unfinished, the drop in its need is what arrived of what was sent.
    fn observe(&mut self, report: &StatusReport) {
        let mut listed = vec![false; self.last_needed.len()];
        let (mut sent, mut arrived) = (0u64, 0u64);
        for (group, needed) in report.needs() {
            let g = group as usize;
            let Some(last) = self.last_needed.get_mut(g) else {
                continue;
            };
            listed[g] = true;
            let delta = self.sent[g].saturating_sub(self.sent_at_report[g]);
            if delta > 0 {
                sent += delta;
                arrived += u64::from(last.saturating_sub(needed)).min(delta);
            }
            *last = needed;
        }
        if !report.is_truncated() {
            for (g, last) in self.last_needed.iter_mut().enumerate() {
                if !listed[g] {
                    *last = 0;
                }
            }
        }
        // Too few samples say little; keep the earlier estimate then.
        if sent >= 32 {
            let lost = sent - arrived;
            self.loss_ppm = ((lost * 1_000_000 / sent) as u32).min(MAX_LOSS_PPM);
        }
    }
}

#[derive(Debug, Clone)]
struct PassEntry {
    group: u32,
    /// Next shard index.
    next: u32,
    /// `k + P`.
    total: u32,
    remaining: u64,
}

/// The shards of one pass, in send order. An iterator of [`ShardRef`].
#[derive(Debug, Clone)]
pub struct Pass {
    active: Vec<PassEntry>,
    pos: usize,
    left: u64,
}

impl Pass {
    fn new(active: Vec<PassEntry>) -> Self {
        let left = active.iter().map(|e| e.remaining).sum();
        Pass {
            active,
            pos: 0,
            left,
        }
    }

    /// Shards left in this pass.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl Iterator for Pass {
    type Item = ShardRef;

    fn next(&mut self) -> Option<ShardRef> {
        if self.left == 0 {
            return None;
        }
        loop {
            if self.pos >= self.active.len() {
                self.active.retain(|e| e.remaining > 0);
                self.pos = 0;
            }
            let e = self.active.get_mut(self.pos)?;
            self.pos += 1;
            if e.remaining == 0 {
                continue;
            }
            let shard = ShardRef {
                group: e.group,
                shard: e.next as u16,
            };
            e.next = (e.next + 1) % e.total;
            e.remaining -= 1;
            self.left -= 1;
            return Some(shard);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, usize::try_from(self.left).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CodecId;

    fn params(len: u64, k: u16, parity: u16) -> LinkParams {
        LinkParams {
            codec: CodecId::RsSimd16,
            shard_size: 2,
            group_k: k,
            parity,
            bundle_len: len,
        }
    }

    #[test]
    fn first_pass_is_interleaved() {
        // 6 shards, K = 3: groups of 3 and 3; 50% redundancy -> 2 parity each.
        let mut s = Sender::new([0; 16], params(12, 3, 4), 50).unwrap();
        assert_eq!(s.initial_parity(0), 2);
        let pass: Vec<_> = s.first_pass().map(|r| (r.group, r.shard)).collect();
        assert_eq!(
            pass,
            vec![
                (0, 0),
                (1, 0),
                (0, 1),
                (1, 1),
                (0, 2),
                (1, 2),
                (0, 3),
                (1, 3),
                (0, 4),
                (1, 4)
            ]
        );
        assert_eq!(s.sent(0), 5);
    }

    #[test]
    fn resend_new_parity_first_then_wraps() {
        let mut s = Sender::new([0; 16], params(6, 3, 2), 0).unwrap();
        s.set_policy(ResendPolicy::Exact);
        assert_eq!(s.first_pass().count(), 3);
        let report = |n| StatusReport::new([0; 16], [0; 16], Phase::Receiving, [(0, n)]).unwrap();
        // Needs 1: parity 0 (index 3).
        assert_eq!(
            s.resend(&report(1)).unwrap().collect::<Vec<_>>(),
            vec![ShardRef { group: 0, shard: 3 }]
        );
        // Needs 3: parity 1, then wrap to the least recently sent: data 0, 1.
        let shards: Vec<u16> = s.resend(&report(3)).unwrap().map(|r| r.shard).collect();
        assert_eq!(shards, vec![4, 0, 1]);
        // Counts over k are clamped to k.
        assert_eq!(s.resend(&report(9)).unwrap().count(), 3);
    }

    #[test]
    fn resend_checks_report() {
        let mut s = Sender::new([0; 16], params(6, 3, 2), 0).unwrap();
        let other = StatusReport::new([1; 16], [0; 16], Phase::Receiving, [(0, 1)]).unwrap();
        assert!(matches!(
            s.resend(&other),
            Err(ResendError::WrongBundle { .. })
        ));
        let past = StatusReport::new([0; 16], [0; 16], Phase::Receiving, [(1, 1)]).unwrap();
        assert_eq!(
            s.resend(&past).unwrap_err(),
            ResendError::NoSuchGroup {
                group: 1,
                groups: 1
            }
        );
        let done = StatusReport::new([0; 16], [0; 16], Phase::Decoded, [(0, 1)]).unwrap();
        assert_eq!(s.resend(&done).unwrap().count(), 0);
    }

    #[test]
    fn adaptive_resend_learns_the_loss() {
        let mut s = Sender::new([0; 16], params(200_000, 1000, 1000), 0).unwrap();
        let groups = s.layout().group_count();
        assert_eq!(s.first_pass().count(), 100_000);
        // Every group got 80% of what was sent: loss 20%.
        let r = StatusReport::new(
            [0; 16],
            [0; 16],
            Phase::Receiving,
            (0..groups).map(|g| (g, 200)),
        )
        .unwrap();
        let n = s.resend(&r).unwrap().count() as u64;
        assert_eq!(s.loss_estimate_ppm(), 200_000);
        assert_eq!(n, u64::from(groups) * shards_to_send(200, 200_000));
        assert!(shards_to_send(200, 200_000) > 250 && shards_to_send(200, 200_000) < 280);
        assert_eq!(shards_to_send(0, 500_000), 0);
    }

    #[test]
    fn resend_margin_rounds_up() {
        let mut s = Sender::new([0; 16], params(200, 100, 100), 0).unwrap();
        s.first_pass().for_each(drop);
        s.set_policy(ResendPolicy::Exact);
        s.set_resend_margin(10);
        let r = StatusReport::new([0; 16], [0; 16], Phase::Receiving, [(0, 5)]).unwrap();
        assert_eq!(s.resend(&r).unwrap().count(), 6);
    }

    /// A pass that delivered 4 of 68 frames (cut short, or nearly all lost) makes the loss
    /// estimate 94 %; the next resend still sends at most the deficit plus the planned
    /// margin, not 25 times it.
    #[test]
    fn a_pass_cut_short_does_not_inflate_the_resend() {
        let mut s = Sender::new([0; 16], params(68 * 2, 1000, 1000), 0).unwrap();
        assert_eq!(s.first_pass().count(), 68);
        let r = StatusReport::new([0; 16], [0; 16], Phase::Receiving, [(0, 64)]).unwrap();
        let n = s.resend(&r).unwrap().count() as u64;
        assert!(s.loss_estimate_ppm() > 900_000);
        assert_eq!(n, shards_to_send(64, DEFAULT_MAX_LOSS_PPM));
        assert!(n < 2 * 64, "{n} shards for a deficit of 64");
        // Without the cap, the estimate would have its way.
        s.set_max_loss(MAX_LOSS_PPM);
        let r = StatusReport::new([0; 16], [0; 16], Phase::Receiving, [(0, 64)]).unwrap();
        assert!(s.resend(&r).unwrap().count() as u64 > 64 * 10);
    }
}
