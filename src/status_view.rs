//! A status report as people and scripts read it (`device status`, `ground ack`, `inspect`):
//! shared by both sides, so it lives with neither.

use narlink_protocol::digest::hex;
use narlink_protocol::status::{Phase as WirePhase, StatusReport, MAGIC};
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
}

impl StatusView {
    pub fn of(r: &StatusReport) -> StatusView {
        StatusView {
            bundle: hex(&r.bundle_id),
            phase: phase_name(r.phase),
            state_digest: hex(&r.state_digest),
            needs: r.needs().collect(),
            truncated: r.is_truncated(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "status: bundle {} {}, state {}, {} unfinished groups listed",
            self.bundle,
            self.phase,
            self.state_digest,
            self.needs.len()
        )
    }

    pub fn render(&self) -> String {
        let mut s = self.summary();
        for (g, n) in self.needs.iter().take(50) {
            s.push_str(&format!("\n  group {g}: {n} shards needed"));
        }
        if self.needs.len() > 50 {
            s.push_str(&format!("\n  ... {} more", self.needs.len() - 50));
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
        WirePhase::ImportFailed => "import failed".into(),
        WirePhase::Unknown(n) => format!("unknown phase {n}"),
    }
}

pub fn is_report_magic(b: &[u8]) -> bool {
    b.starts_with(&MAGIC)
}

pub fn decode_report(bytes: &[u8]) -> Result<StatusView, String> {
    StatusReport::decode(bytes)
        .map(|r| StatusView::of(&r))
        .map_err(|e| e.to_string())
}
