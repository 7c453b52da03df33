//! A status report as people and scripts read it (`device status`, `ground ack`, `inspect`):
//! shared by both sides, so it lives with neither.

use narlink_protocol::digest::hex;
use narlink_protocol::seal::Sealed;
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
    /// The device id and counter of its seal, if sealed (as read: `inspect` has no key to
    /// check them with; `ground ack` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
}

impl StatusView {
    pub fn of(r: &StatusReport) -> StatusView {
        StatusView {
            bundle: hex(&r.bundle_id),
            phase: phase_name(r.phase),
            state_digest: hex(&r.state_digest),
            needs: r.needs().collect(),
            truncated: r.is_truncated(),
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

/// A downlink message's payload, and its seal (unchecked) if it is sealed; the bytes as they
/// are otherwise.
pub fn unseal(bytes: &[u8]) -> (&[u8], Option<Sealed<'_>>) {
    match Sealed::parse(bytes) {
        Ok(s) => (s.payload, Some(s)),
        Err(_) => (bytes, None),
    }
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
