//! `ground show`: what the ground knows of a device, from its mirror alone: who it is, its
//! last report, what is live, each bundle packed for it and what is still missing of those in
//! flight, and whether the mirror may be packed against.

use std::path::{Path, PathBuf};

use narlink_protocol::digest::{hex, short, state_digest};
use narlink_protocol::frame::OVERHEAD;
use narlink_protocol::schedule::Sender;
use narlink_protocol::seal::device_id;
use narlink_protocol::status::device::Reason;
use narlink_protocol::status::Phase;
use narlink_protocol::storepath::{unpack, Lookup, PathSet};
use serde::Serialize;

use crate::state::mirror::{Mirror, Standing};
use crate::state::StateError;
use crate::status_view::{phase_name, report_of, StatusView};

#[derive(Clone, Debug, Serialize)]
pub struct Show {
    pub mirror: PathBuf,
    /// The device id this mirror takes reports of (none: no device key given).
    pub device: Option<String>,
    /// The paths the mirror believes the device holds, and their state digest.
    pub paths: usize,
    pub state: String,
    /// The device reported another state, not explained by its report: pack is refused.
    pub stale: bool,
    pub last_report: Option<LastReportView>,
    /// Every bundle packed here, newest first.
    pub bundles: Vec<BundleView>,
    /// Frame bytes the bundles in flight still need (each unfinished group's missing
    /// shards, as the last report listed them), before any resend margin.
    pub next_pass_bytes: u64,
    /// The generation on probation or reverted, as the last report said (none: committed,
    /// or no probation).
    pub probation: Option<ProbationShow>,
}

/// Where the trial of the device's newest generation stands, as the ground sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ProbationShow {
    #[serde(flatten)]
    pub report: crate::status_view::ProbationView,
    /// The confirmation the last report calls for (sent with the next `ground pack` or
    /// `ground resend`); none while reverted, or without the device's key.
    pub confirmation_due: Option<super::confirm::Due>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastReportView {
    pub counter: Option<u32>,
    /// Seconds since the Unix epoch, and how long ago.
    pub received_at: u64,
    pub age_secs: u64,
    pub live_generation: Option<u32>,
    /// The live path: the mirror's path with that tag, or the tag (8 hash characters).
    pub live_root: Option<String>,
    pub activation: String,
    pub sequence: u64,
    pub report: StatusView,
}

#[derive(Clone, Debug, Serialize)]
pub struct BundleView {
    pub bundle: String,
    pub sequence: u64,
    pub packed_at: u64,
    pub bundle_bytes: u64,
    /// The ground's record: in flight, imported, failed, superseded, cancelled.
    pub standing: &'static str,
    pub reason: String,
    /// What the last report said of it, if it named it.
    pub device_phase: Option<String>,
    /// For the report's own bundle while receiving: unfinished groups listed, shards they
    /// need, and the frame bytes that is.
    pub groups_unfinished: Option<u64>,
    pub shards_needed: Option<u64>,
    pub bytes_needed: Option<u64>,
}

pub fn show(dir: &Path) -> Result<Show, StateError> {
    let keys = Mirror::downlink_keys(dir)?;
    let mirror = Mirror::open(dir)?;
    let paths = mirror.db.paths()?;
    let state = hex(&short(&state_digest(paths.iter().map(String::as_str))));
    let last = mirror.last_report()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = last.as_ref().and_then(|l| {
        let (r, counter) = report_of(&l.bytes)?;
        Some((r, counter, l.received_at))
    });
    let names = PathSet::new(&paths);
    let last_report = report.as_ref().map(|(r, counter, at)| {
        let live_root = r.device.live.map(|l| match names.lookup(&l.root) {
            Lookup::Unique(p) => p.to_owned(),
            _ => format!("{}...", unpack(&l.root)),
        });
        let view = StatusView::of(r);
        LastReportView {
            counter: *counter,
            received_at: *at,
            age_secs: now.saturating_sub(*at),
            live_generation: r.device.live.map(|l| l.generation),
            live_root,
            activation: view.activation.clone(),
            sequence: r.device.sequence,
            report: view,
        }
    });
    let mut bundles = Vec::new();
    let mut next_pass_bytes = 0;
    for (id, b) in mirror.ground_bundles()?.into_iter().rev() {
        let said = report
            .as_ref()
            .and_then(|(r, _, _)| Some((r.said_of(&id)?.0, r.bundle_id == id)));
        let mut v = BundleView {
            bundle: hex(&id),
            sequence: b.sequence,
            packed_at: b.packed_at,
            bundle_bytes: b.bundle_len,
            standing: b.standing.name(),
            reason: Reason::from_u8(b.reason).name(),
            device_phase: said.map(|(p, _)| phase_name(p)),
            groups_unfinished: None,
            shards_needed: None,
            bytes_needed: None,
        };
        let receiving = said == Some((Phase::Receiving, true));
        if let (true, Standing::InFlight, Some((r, _, _))) = (receiving, b.standing, &report) {
            if let Some(rec) = mirror.send_record(&id)? {
                let params = rec.options.params(rec.bundle_len);
                let shards: u64 = match Sender::new(id, params, 0) {
                    Ok(s) => r
                        .needs()
                        .map(|(g, n)| u64::from(n.min(s.layout().group_k(g).unwrap_or(0))))
                        .sum(),
                    Err(_) => 0,
                };
                let bytes = shards * (u64::from(params.shard_size) + OVERHEAD as u64);
                v.groups_unfinished = Some(r.listed_groups());
                v.shards_needed = Some(shards);
                v.bytes_needed = Some(bytes);
                next_pass_bytes += bytes;
            }
        }
        bundles.push(v);
    }
    let probation = match (&report, last_report.as_ref()) {
        (Some((r, counter, _)), Some(l)) => match l.report.probation.clone() {
            Some(view) => Some(ProbationShow {
                report: view,
                confirmation_due: super::confirm::due(&mirror, r, *counter, keys.secret.as_ref())?,
            }),
            None => None,
        },
        _ => None,
    };
    Ok(Show {
        probation,
        mirror: dir.to_owned(),
        device: keys.secret.map(|s| hex(&device_id(&s))),
        paths: paths.len(),
        state,
        stale: mirror.stale()?.is_some(),
        last_report,
        bundles,
        next_pass_bytes,
    })
}

impl Show {
    pub fn render(&self) -> String {
        let mut s = format!(
            "mirror {} of device {}\n  believes {} paths, state {}{}",
            self.mirror.display(),
            self.device.as_deref().unwrap_or("(no device key)"),
            self.paths,
            self.state,
            if self.stale {
                " -- STALE: the device reported another state; rebuild with `ground ack --inventory`"
            } else {
                ""
            }
        );
        match &self.last_report {
            None => s.push_str("\n  no report taken yet"),
            Some(l) => {
                s.push_str(&format!(
                    "\n  last report: message {}, {} ago: bundle {} {}",
                    l.counter.map_or("-".into(), |c| c.to_string()),
                    ago(l.age_secs),
                    l.report.bundle,
                    l.report.phase
                ));
                match (l.live_generation, &l.live_root) {
                    (Some(g), Some(r)) => s.push_str(&format!("\n  live: generation {g}, {r}")),
                    _ => s.push_str("\n  live: no generation"),
                }
                s.push_str(&format!(
                    "\n  last activation: {}; newest sequence taken: {}",
                    l.activation, l.sequence
                ));
            }
        }
        if let Some(p) = &self.probation {
            s.push_str(&format!("\n  {}", p.report.describe()));
            match (&p.confirmation_due, p.report.state.as_str(), &self.device) {
                (Some(c), _, _) => s.push_str(&format!(
                    "\n  confirmation of generation {} due: it goes with the next `ground pack` \
                     or `ground resend`",
                    c.generation
                )),
                (None, "probation", None) => s.push_str(
                    "\n  the mirror has no device key, so it cannot confirm: the device will revert \
                     when its window runs out (`ground device-key`)",
                ),
                _ => {}
            }
        }
        if self.bundles.is_empty() {
            s.push_str("\n  no bundles packed here");
        }
        for b in self.bundles.iter().take(20) {
            s.push_str(&format!(
                "\n  bundle {} (sequence {}): {}",
                b.bundle, b.sequence, b.standing
            ));
            if b.reason != "none" {
                s.push_str(&format!(" ({})", b.reason));
            }
            if let Some(p) = &b.device_phase {
                s.push_str(&format!("; device says {p}"));
            }
            if let (Some(g), Some(n), Some(bytes)) =
                (b.groups_unfinished, b.shards_needed, b.bytes_needed)
            {
                s.push_str(&format!(
                    "; {g} groups unfinished, {n} shards ({bytes} B) needed"
                ));
            }
        }
        if self.bundles.len() > 20 {
            s.push_str(&format!(
                "\n  ... {} older bundles",
                self.bundles.len() - 20
            ));
        }
        s.push_str(&format!(
            "\n  next pass needs {} B of frames (before margin)",
            self.next_pass_bytes
        ));
        s
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}
