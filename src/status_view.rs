//! A status report as people and scripts read it (`device status`, `ground ack`, `inspect`):
//! shared by both sides, so it lives with neither.

use narlink_protocol::digest::hex;
use narlink_protocol::seal::Sealed;
use narlink_protocol::status::device::Activation;
use narlink_protocol::status::{Phase as WirePhase, StatusReport, MAGIC};
use narlink_protocol::storepath::unpack;
use serde::Serialize;

/// A status report as people and scripts read it.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub bundle: String,
    pub phase: String,
    pub state_digest: String,
    /// (group, shards still needed) for the listed unfinished groups.
    pub needs: Vec<(u32, u16)>,
    pub truncated: bool,
    /// Why the bundle failed or was refused ("none" if it did not).
    pub reason: String,
    /// The live generation of the device's profile and the first 8 hash characters of the
    /// path it holds.
    pub live_generation: Option<u32>,
    pub live_root: Option<String>,
    /// How the last landing went: none, passed, rolled back, landing.
    pub activation: String,
    /// The newest bundle sequence the device took.
    pub sequence: u64,
    /// Other bundles (id prefix, 8 hex digits), newest first.
    pub others: Vec<OtherBundle>,
    /// Store paths garbage collection removed (first 8 hash characters).
    pub removed: Vec<String>,
    /// Bundles or removed paths were left out (the device's full report has them).
    pub lists_cut: bool,
    /// The device forgot some removed paths.
    pub removals_lost: bool,
    /// The generation on probation, or the one reverted (until the next landing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probation: Option<ProbationView>,
    /// The device id and counter of its seal, if sealed (as read: `inspect` has no key to
    /// check them with; `ground ack` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
}

/// Where a generation on probation stands (see protocol `status::device::Probation`).
#[derive(Clone, Debug, Serialize)]
pub struct ProbationView {
    /// The bundle that landed it (id prefix, 8 hex digits).
    pub bundle: String,
    /// "probation", "reverting" (a revert under way) or "reverted".
    pub state: String,
    /// Why it was reverted ("none" while on probation).
    pub reason: String,
    pub reports: u32,
    pub minutes: u32,
    /// Starts in a row that did not prove healthy.
    pub failed_starts: u8,
    /// The health check that failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// Another bundle a report notes.
#[derive(Clone, Debug, Serialize)]
pub struct OtherBundle {
    pub bundle: String,
    pub phase: String,
    pub reason: String,
}

impl StatusView {
    pub fn of(r: &StatusReport) -> StatusView {
        let d = &r.device;
        StatusView {
            bundle: hex(&r.bundle_id),
            phase: phase_name(r.phase),
            state_digest: hex(&r.state_digest),
            needs: r.needs().collect(),
            truncated: r.is_truncated(),
            reason: d.reason.name(),
            live_generation: d.live.map(|l| l.generation),
            live_root: d.live.map(|l| unpack(&l.root)),
            activation: activation_name(d.activation),
            sequence: d.sequence,
            others: d
                .others
                .iter()
                .map(|n| OtherBundle {
                    bundle: hex(&n.id_prefix),
                    phase: phase_name(n.phase),
                    reason: n.reason.name(),
                })
                .collect(),
            removed: d.removed.iter().map(|t| unpack(t)).collect(),
            lists_cut: r.lists_cut,
            removals_lost: r.removals_lost,
            probation: d.probation.as_ref().map(|p| ProbationView {
                bundle: hex(&p.bundle_prefix),
                state: match d.activation {
                    Activation::Reverted => "reverted".into(),
                    // A revert under way (the block says why).
                    Activation::Landing => "reverting".into(),
                    _ => "probation".into(),
                },
                reason: p.reason.name(),
                reports: p.reports,
                minutes: p.minutes,
                failed_starts: p.starts,
                check: (!p.check.is_empty())
                    .then(|| String::from_utf8_lossy(&p.check).into_owned()),
            }),
            device: None,
            counter: None,
        }
    }

    pub fn summary(&self) -> String {
        let from = match (&self.device, self.counter) {
            (Some(d), Some(c)) => format!(" (device {d}, message {c})"),
            _ => String::new(),
        };
        format!(
            "status{from}: bundle {} {}, state {}, {} unfinished groups listed",
            self.bundle,
            self.phase,
            self.state_digest,
            self.needs.len()
        )
    }

    pub fn render(&self) -> String {
        let mut s = self.summary();
        if self.reason != "none" {
            s.push_str(&format!("\n  reason: {}", self.reason));
        }
        match (self.live_generation, &self.live_root) {
            (Some(g), Some(r)) => s.push_str(&format!(
                "\n  live: generation {g} ({r}...), last activation {}",
                self.activation
            )),
            _ => s.push_str(&format!(
                "\n  live: no generation, last activation {}",
                self.activation
            )),
        }
        if let Some(p) = &self.probation {
            s.push_str(&format!("\n  {}", p.describe()));
        }
        s.push_str(&format!(
            "\n  newest bundle sequence taken: {}",
            self.sequence
        ));
        for o in &self.others {
            s.push_str(&format!("\n  bundle {}...: {}", o.bundle, o.phase));
            if o.reason != "none" {
                s.push_str(&format!(" ({})", o.reason));
            }
        }
        if !self.removed.is_empty() {
            s.push_str(&format!(
                "\n  {} paths removed by garbage collection",
                self.removed.len()
            ));
        }
        if self.lists_cut {
            s.push_str("\n  (more bundles or removed paths in the device's full report)");
        }
        for (g, n) in self.needs.iter().take(50) {
            s.push_str(&format!("\n  group {g}: {n} shards needed"));
        }
        if self.needs.len() > 50 {
            s.push_str(&format!("\n  ... {} more", self.needs.len() - 50));
        }
        s
    }
}

impl ProbationView {
    pub fn describe(&self) -> String {
        let mut s = match self.state.as_str() {
            "reverted" => format!("bundle {}... reverted ({})", self.bundle, self.reason),
            "reverting" => format!("bundle {}... being reverted ({})", self.bundle, self.reason),
            _ => format!("bundle {}... on probation, not confirmed yet", self.bundle),
        };
        if let Some(c) = &self.check {
            s.push_str(&format!(", health check {c} failed"));
        }
        s.push_str(&format!(
            "; {} reports and {} minutes under it",
            self.reports, self.minutes
        ));
        if self.failed_starts > 0 {
            s.push_str(&format!(", {} failed starts in a row", self.failed_starts));
        }
        s
    }
}

pub fn phase_name(p: WirePhase) -> String {
    match p {
        WirePhase::Idle => "idle".into(),
        WirePhase::Receiving => "receiving".into(),
        WirePhase::Decoded => "ready to import".into(),
        WirePhase::Imported => "imported".into(),
        WirePhase::ImportFailed => "failed".into(),
        WirePhase::Superseded => "superseded".into(),
        WirePhase::Unknown(n) => format!("unknown phase {n}"),
    }
}

pub fn activation_name(a: Activation) -> String {
    match a {
        Activation::None => "none".into(),
        Activation::Passed => "passed".into(),
        Activation::RolledBack => "failed, rolled back".into(),
        Activation::Landing => "under way".into(),
        Activation::Probation => "passed, on probation".into(),
        Activation::Reverted => "passed, then reverted".into(),
        Activation::Committed => "passed, confirmed by the ground".into(),
        Activation::Unknown(n) => format!("unknown ({n})"),
    }
}

pub fn is_report_magic(b: &[u8]) -> bool {
    b.starts_with(&MAGIC)
}

/// A downlink message's payload, and its seal (unchecked) if it is sealed; the bytes as they
/// are otherwise.
pub fn unseal(bytes: &[u8]) -> (&[u8], Option<Sealed<'_>>) {
    match Sealed::parse(bytes) {
        Ok(s) => (s.payload, Some(s)),
        Err(_) => (bytes, None),
    }
}

/// A sealed (or bare) report as kept: the report and its seal's counter, if it decodes.
pub fn report_of(bytes: &[u8]) -> Option<(StatusReport, Option<u32>)> {
    let (payload, seal) = unseal(bytes);
    let r = StatusReport::decode(payload).ok()?;
    Some((r, seal.map(|s| s.counter)))
}

pub fn decode_report(bytes: &[u8]) -> Result<StatusView, String> {
    let (payload, seal) = unseal(bytes);
    let mut v = StatusReport::decode(payload)
        .map(|r| StatusView::of(&r))
        .map_err(|e| e.to_string())?;
    v.device = seal.map(|s| hex(&s.device));
    v.counter = seal.map(|s| s.counter);
    Ok(v)
}
