//! The link simulator: the real ground sender and the real device intake, over a modeled
//! link (loss, bursts, corruption, duplication, reordering), in passes with a byte budget,
//! a status report after each pass, and device reboots mid-pass. Deterministic for a seed.
//!
//! Two devices can sit at the far end: [`StateDevice`], the real device (redb state, durable
//! frames, staging, then import into a real Nix store), and [`MemoryDevice`], an in-memory
//! group decoder for quick studies of the link alone.

use std::collections::HashMap;

use narlink_protocol::digest::short;
use narlink_protocol::fec;
use narlink_protocol::frame::Frame;
use narlink_protocol::params::{Limits, LinkParams};
use narlink_protocol::receiver::{GroupTracker, Outcome};
use narlink_protocol::sim::{LinkModel, Loss, Prob, Rng};
use narlink_protocol::status::{Phase, StatusReport};
use serde::Serialize;

use crate::device::link::{LinkError as DeviceLinkError, LinkReceiver};
use crate::device::status;
use crate::ground::link::{FrameSource, LinkError as GroundLinkError};
use crate::state::device::DeviceState;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("ground: {0}")]
    Ground(#[from] GroundLinkError),
    #[error("device: {0}")]
    Device(#[from] DeviceLinkError),
    #[error("ground cannot use the device's report: {0}")]
    Resend(#[from] narlink_protocol::schedule::ResendError),
    #[error("device report does not decode: {0}")]
    Report(#[from] narlink_protocol::status::StatusError),
    #[error("device decoded group {0} to bytes that differ from what was sent")]
    Mismatch(u32),
}

/// The modeled link and the pass structure.
#[derive(Clone, Debug, Serialize)]
pub struct SimOptions {
    /// Long-run frame loss rate.
    pub loss: f64,
    /// Mean burst length in frames (Gilbert–Elliott); `None` for i.i.d. loss.
    pub burst: Option<f64>,
    /// Probability that a frame is corrupted (up to 8 bytes flipped).
    pub corrupt: f64,
    pub duplicate: f64,
    /// Reordering window in frames (0: in order).
    pub reorder: usize,
    /// Frame bytes the ground may send per pass (`None`: no limit).
    pub pass_bytes: Option<u64>,
    /// Probability that the device reboots at a random point of a pass, losing the frames
    /// it had not yet persisted.
    pub reboot: f64,
    pub seed: u64,
    pub max_passes: u32,
    /// Probability that a status report is lost on the downlink (the probation trial).
    pub report_loss: f64,
    /// Model the probation trial after the import: the window in reports (one a pass); 0
    /// does not model it.
    pub probation_reports: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            loss: 0.0,
            burst: None,
            corrupt: 0.0,
            duplicate: 0.0,
            reorder: 0,
            pass_bytes: None,
            reboot: 0.0,
            seed: 1,
            max_passes: 50,
            report_loss: 0.0,
            probation_reports: 0,
        }
    }
}

/// One pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassRow {
    pub pass: u32,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_delivered: u64,
    pub rebooted: bool,
    pub groups_done: u32,
    pub groups: u32,
    /// Shards still needed after the pass, times the shard size.
    pub bytes_needed: u64,
    pub report_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SimReport {
    pub passes: u32,
    /// Bundle bytes.
    pub payload_bytes: u64,
    pub bytes_on_air: u64,
    pub on_air_per_payload: f64,
    /// The floor for this loss: frame bytes of every shard / (1 − loss).
    pub downlink_bytes: u64,
    pub status_reports: u32,
    pub completed: bool,
    pub rows: Vec<PassRow>,
}

/// The far end of the link.
pub trait Device {
    /// Frames delivered in one pass; `reboot_at` = index of the frame before which the device
    /// loses power (frames not yet persisted are lost, then it starts again).
    fn receive(&mut self, frames: Vec<Vec<u8>>, reboot_at: Option<usize>) -> Result<(), SimError>;
    /// The status report sent down after the pass.
    fn report(&mut self) -> Result<Vec<u8>, SimError>;
}

/// Run passes until the device reports the bundle decoded, or `max_passes`.
pub fn run(
    ground: &mut FrameSource,
    device: &mut dyn Device,
    opts: &SimOptions,
) -> Result<SimReport, SimError> {
    let mut model = link_model(opts, opts.seed);
    let mut rng = Rng::new(opts.seed ^ 0x5eed_b007);
    let params = ground.params();
    let layout = *ground.sender.layout();
    let mut report = SimReport {
        payload_bytes: params.bundle_len,
        ..SimReport::default()
    };
    let mut last: Option<StatusReport> = None;
    for pass in 1..=opts.max_passes {
        let plan = match &last {
            None => ground.sender.first_pass(),
            Some(r) => ground.sender.resend(r)?,
        };
        let mut frames = Vec::new();
        let emitted = ground.emit(plan, opts.pass_bytes, &mut |f| {
            frames.push(f.to_vec());
            Ok(())
        })?;
        let delivered = model.transmit(frames);
        let n = delivered.len();
        let reboot_at = (opts.reboot > 0.0 && n > 0 && rng.chance(Prob::new(opts.reboot)))
            .then(|| rng.below(n as u64) as usize);
        device.receive(delivered, reboot_at)?;
        // Sealed like a real device's (24 bytes of the downlink); the simulated ground plans
        // from the payload.
        let bytes = device.report()?;
        let r = StatusReport::decode(crate::status_view::unseal(&bytes).0)?;
        let needed: u64 = r.needs().map(|(_, n)| u64::from(n)).sum();
        let done = matches!(r.phase, Phase::Decoded | Phase::Imported);
        let unfinished = if done { 0 } else { r.listed_groups() as u32 };
        report.rows.push(PassRow {
            pass,
            frames_sent: emitted.frames,
            bytes_sent: emitted.bytes,
            frames_delivered: n as u64,
            rebooted: reboot_at.is_some(),
            groups: layout.group_count(),
            groups_done: layout.group_count().saturating_sub(unfinished),
            bytes_needed: needed * u64::from(params.shard_size),
            report_bytes: bytes.len() as u64,
        });
        report.passes = pass;
        report.bytes_on_air += emitted.bytes;
        report.downlink_bytes += bytes.len() as u64;
        report.status_reports += 1;
        if done {
            report.completed = true;
            break;
        }
        last = Some(r);
    }
    report.on_air_per_payload = report.bytes_on_air as f64 / report.payload_bytes.max(1) as f64;
    Ok(report)
}

/// The modeled uplink of `opts`, seeded with `seed`.
fn link_model(opts: &SimOptions, seed: u64) -> LinkModel {
    let mut model = LinkModel::new(seed).with_loss(match opts.burst {
        Some(b) if b > 1.0 => Loss::bursts(opts.loss, b),
        _ => Loss::iid(opts.loss),
    });
    if opts.corrupt > 0.0 {
        model = model.with_corruption(opts.corrupt, 8);
    }
    if opts.duplicate > 0.0 {
        model = model.with_duplication(opts.duplicate);
    }
    if opts.reorder > 1 {
        model = model.with_reordering(opts.reorder);
    }
    model
}

/// The real device: durable frames in its redb state, staging as groups decode.
pub struct StateDevice<'a> {
    pub state: &'a DeviceState,
    pub reboots: u32,
}

impl Device for StateDevice<'_> {
    fn receive(&mut self, frames: Vec<Vec<u8>>, reboot_at: Option<usize>) -> Result<(), SimError> {
        let mut rx = LinkReceiver::open(self.state)?;
        for (i, f) in frames.iter().enumerate() {
            if reboot_at == Some(i) {
                // Power lost: whatever was not flushed is gone; the device starts again.
                drop(rx);
                self.reboots += 1;
                rx = LinkReceiver::open(self.state)?;
            }
            rx.handle_bytes(f)?;
        }
        rx.flush()?;
        Ok(())
    }

    fn report(&mut self) -> Result<Vec<u8>, SimError> {
        Ok(status::report(self.state, status::Detail::Regular)?.1)
    }
}

/// An in-memory device for studies of the link alone: it decodes groups and checks them
/// against the bytes that were sent.
pub struct MemoryDevice {
    params: LinkParams,
    tracker: GroupTracker,
    shards: HashMap<u32, Vec<(u16, Vec<u8>)>>,
    /// The bytes the ground sent, to check every decoded group against.
    original: Vec<u8>,
    /// Reports sealed so far (the downlink counter).
    reports: u32,
}

impl MemoryDevice {
    pub fn new(
        id: [u8; 16],
        params: LinkParams,
        original: Vec<u8>,
    ) -> Result<MemoryDevice, SimError> {
        let tracker = GroupTracker::new(id, params, &Limits::default())
            .map_err(|e| SimError::Ground(GroundLinkError::Params(e)))?;
        Ok(MemoryDevice {
            params,
            tracker,
            shards: HashMap::new(),
            original,
            reports: 0,
        })
    }
}

impl Device for MemoryDevice {
    fn receive(&mut self, frames: Vec<Vec<u8>>, reboot_at: Option<usize>) -> Result<(), SimError> {
        // Persisting is instant here, so a reboot loses nothing but the frame it interrupts.
        for (i, bytes) in frames.iter().enumerate() {
            if reboot_at == Some(i) {
                continue;
            }
            let Ok(f) = Frame::decode(bytes) else {
                continue;
            };
            let h = *f.header();
            if !self.tracker.peek_frame(&h).is_wanted() {
                continue;
            }
            self.shards
                .entry(h.group)
                .or_default()
                .push((h.shard, f.payload().to_vec()));
            if self.tracker.handle_frame(&h) == Outcome::Decodable {
                let layout = *self.tracker.layout();
                let held = self.shards.remove(&h.group).unwrap_or_default();
                let refs: Vec<(u16, &[u8])> =
                    held.iter().map(|(i, b)| (*i, b.as_slice())).collect();
                let code = fec::codec(self.params.codec);
                let data = fec::decode_group(code.as_ref(), &self.params, &layout, h.group, &refs)
                    .map_err(|e| SimError::Ground(GroundLinkError::Fec(e)))?;
                let range = layout.byte_range(h.group).unwrap_or(0..0);
                if data != self.original[range.start as usize..range.end as usize] {
                    return Err(SimError::Mismatch(h.group));
                }
                self.tracker.mark_decoded(h.group);
            }
        }
        Ok(())
    }

    fn report(&mut self) -> Result<Vec<u8>, SimError> {
        let phase = if self.tracker.is_complete() {
            Phase::Decoded
        } else {
            Phase::Receiving
        };
        let r = self.tracker.status_report(short(&[0; 32]), phase);
        let mut b = Vec::new();
        r.encode(&mut b);
        self.reports += 1;
        Ok(narlink_protocol::seal::seal(&[0; 32], self.reports, &b))
    }
}

impl SimReport {
    pub fn render(&self) -> String {
        let mut s = String::from("pass  frames sent   bytes sent  delivered  reboot  groups done   bytes needed  report\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{:>4}  {:>11}  {:>11}  {:>9}  {:>6}  {:>5}/{:<5}  {:>13}  {:>5} B\n",
                r.pass,
                r.frames_sent,
                r.bytes_sent,
                r.frames_delivered,
                if r.rebooted { "yes" } else { "" },
                r.groups_done,
                r.groups,
                r.bytes_needed,
                r.report_bytes
            ));
        }
        s.push_str(&format!(
            "{} after {} passes: payload {} B, on air {} B ({:.3} x payload), downlink {} B in {} status reports",
            if self.completed { "completed" } else { "NOT completed" },
            self.passes,
            self.payload_bytes,
            self.bytes_on_air,
            self.on_air_per_payload,
            self.downlink_bytes,
            self.status_reports
        ));
        s
    }

    /// An SVG chart of progress per pass: bytes sent in each pass (bars) and bytes still
    /// needed after it (line), on axes with ticks and units, and a legend.
    pub fn svg(&self) -> String {
        let (w, h) = (680.0, 400.0);
        let (left, right, top, bottom) = (80.0, 30.0, 80.0, 60.0);
        let peak = self
            .rows
            .iter()
            .map(|r| r.bytes_needed.max(r.bytes_sent))
            .max()
            .unwrap_or(1)
            .max(self.payload_bytes)
            .max(1) as f64;
        // Ticks at a round step (1, 2 or 5 times a power of ten), the axis to the next one.
        let step = nice_step(peak / 5.0);
        let top_value = (peak / step).ceil() * step;
        let n = self.rows.len().max(1) as f64;
        let plot_w = w - left - right;
        let plot_h = h - top - bottom;
        let x = |i: f64| left + plot_w * i / n;
        let y = |v: f64| top + plot_h * (1.0 - v / top_value);
        let (unit, scale) = if top_value >= 1e6 {
            ("MB", 1e6)
        } else if top_value >= 1e3 {
            ("kB", 1e3)
        } else {
            ("B", 1.0)
        };
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"22\" font-size=\"14\">narlink simulate: {} B payload, {} passes</text>\n",
            self.payload_bytes, self.passes
        );
        // Y axis: ticks, grid lines, labels, and the axis title turned upright.
        let mut v = 0.0;
        while v <= top_value * 1.0001 {
            let yv = y(v);
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{yv}\" x2=\"{}\" y2=\"{yv}\" stroke=\"#ddd\"/>\n\
                 <line x1=\"{}\" y1=\"{yv}\" x2=\"{left}\" y2=\"{yv}\" stroke=\"black\"/>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                w - right,
                left - 5.0,
                left - 8.0,
                yv + 4.0,
                tick_label(v / scale)
            ));
            v += step;
        }
        s.push_str(&format!(
            "<text transform=\"translate(20,{}) rotate(-90)\" text-anchor=\"middle\">bytes ({unit})</text>\n",
            top + plot_h / 2.0
        ));
        // X axis: one tick and label per pass.
        let base = top + plot_h;
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"black\"/>\n\
             <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{base}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">pass</text>\n",
            w - right,
            left + plot_w / 2.0,
            h - 18.0
        ));
        let bw = plot_w / n * 0.6;
        // The line starts at the payload, before the first pass.
        let mut points = vec![format!("{left},{}", y(self.payload_bytes as f64))];
        for (i, r) in self.rows.iter().enumerate() {
            let xi = x(i as f64 + 1.0);
            let xc = xi - plot_w / n / 2.0;
            s.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{bw}\" height=\"{}\" fill=\"#9ecae1\"/>\n\
                 <line x1=\"{xc}\" y1=\"{base}\" x2=\"{xc}\" y2=\"{}\" stroke=\"black\"/>\n\
                 <text x=\"{xc}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                xc - bw / 2.0,
                y(r.bytes_sent as f64),
                base - y(r.bytes_sent as f64),
                base + 5.0,
                base + 18.0,
                r.pass
            ));
            points.push(format!("{xc},{}", y(r.bytes_needed as f64)));
        }
        // Legend, one entry a row.
        let lx = w - right - 190.0;
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>\n\
             <rect x=\"{lx}\" y=\"34\" width=\"18\" height=\"10\" fill=\"#9ecae1\"/>\n\
             <text x=\"{}\" y=\"44\">bytes sent in the pass</text>\n\
             <line x1=\"{lx}\" y1=\"57\" x2=\"{}\" y2=\"57\" stroke=\"#d62728\" stroke-width=\"2\"/>\n\
             <text x=\"{}\" y=\"62\">bytes still needed after it</text>\n</svg>\n",
            points.join(" "),
            lx + 24.0,
            lx + 18.0,
            lx + 24.0
        ));
        s
    }
}

/// What a simulated update of a real closure did, end to end.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    #[serde(flatten)]
    pub link: SimReport,
    pub pack: crate::ground::pack::PackReport,
    pub imported_paths: usize,
    /// `nix-store --verify-path` passed on the device for the whole target closure, and the
    /// device's closure of the target equals the ground's.
    pub verified: bool,
    pub device_reboots: u32,
    /// How the probation trial went, if it was modeled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialReport>,
}

/// The probation trial after the landing, over the modeled links: a report a pass (lost on
/// the downlink with `report_loss`), the ground's confirmation for each report that came
/// down (through the uplink model), the real device deciding.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrialReport {
    /// Passes until the trial ended (or `max_passes`).
    pub passes: u32,
    pub reports_lost: u32,
    pub confirmations_sent: u32,
    pub confirmations_delivered: u32,
    /// "committed", "reverted: not confirmed", or "undecided".
    pub outcome: String,
}

impl TrialReport {
    pub fn render(&self) -> String {
        format!(
            "probation: {} after {} passes ({} reports lost, {} confirmations sent, {} delivered)",
            self.outcome,
            self.passes,
            self.reports_lost,
            self.confirmations_sent,
            self.confirmations_delivered
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateSimError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Nix(#[from] crate::nixstore::NixError),
    #[error(transparent)]
    Sync(#[from] crate::index::SyncError),
    #[error(transparent)]
    Pack(#[from] crate::ground::pack::PackError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Import(#[from] crate::device::import::ImportError),
    #[error(transparent)]
    Ground(#[from] GroundLinkError),
    #[error(transparent)]
    Activate(#[from] crate::device::activate::ActivateError),
}

/// Simulate the update from the closure of `v1` (on the device) to that of `v2` over the
/// modeled link: real pack, real frames, real device state and a real Nix import into a
/// chroot store under `work`.
pub fn simulate_update(
    ground_store: &crate::nixstore::NixStore,
    v1: &str,
    v2: &str,
    work: &std::path::Path,
    link: crate::ground::link::LinkOptions,
    opts: &SimOptions,
    progress: bool,
) -> Result<UpdateReport, UpdateSimError> {
    use crate::nixstore::NixStore;
    let roots = ground_store.resolve_roots(&[v1.to_owned(), v2.to_owned()])?;
    let device_uri = format!("local?root={}", work.join("device").display());
    let device_store = NixStore::new(Some(&device_uri));
    let v1_closure = ground_store.closure(&roots[..1])?;
    ground_store.copy_to(&device_store, &v1_closure)?;
    // A signing key for this run, derived from the seed; the device trusts it.
    let key = narlink_protocol::signature::SecretKey::from_seed(
        "narlink-sim-1",
        *blake3::hash(&opts.seed.to_le_bytes()).as_bytes(),
    );
    crate::device::init::init(
        &work.join("device-state"),
        Some(&device_uri),
        progress,
        |state| state.set_trust(&[key.public()], &[], false),
    )?;
    let (device_key, _) = crate::state::identity::ensure_secret(&work.join("device-state"))?;
    crate::ground::init::init(
        &work.join("mirror"),
        ground_store,
        &roots[..1],
        progress,
        Some(&device_key),
    )?;
    let mirror = crate::state::mirror::Mirror::open(&work.join("mirror"))?;
    let bundle = work.join("update.bundle");
    let key = std::sync::Arc::new(key);
    let pack_opts = crate::ground::pack::PackOptions {
        progress,
        sign_key: Some(key.clone()),
        piece_log2: link.piece_log2(),
        ..Default::default()
    };
    let pack = crate::ground::pack::pack(&mirror, ground_store, &roots[1..], &bundle, &pack_opts)?;
    let mut ground = FrameSource::open(&bundle, link, None)?;
    ground.announce(&key, pack.sequence);
    let state = DeviceState::open(&work.join("device-state"))?;
    let mut device = StateDevice {
        state: &state,
        reboots: 0,
    };
    let report = run(&mut ground, &mut device, opts)?;
    let device_reboots = device.reboots;
    let mut imported_paths = 0;
    let mut verified = false;
    let mut trial_report = None;
    if report.completed {
        let plan = (opts.probation_reports > 0).then(|| landing_plan(&device_store, opts));
        let imp = crate::device::import::import_all(
            &state,
            &device_store,
            progress,
            false,
            plan.as_ref(),
        )?;
        imported_paths = imp.bundles.iter().map(|b| b.paths_imported).sum();
        let target = ground_store.closure(&roots[1..])?;
        verified = device_store.verify_paths(&target).is_ok()
            && device_store.closure(&roots[1..])? == target;
        if plan.is_some() {
            crate::device::activate::land(&state, &device_store)?;
            trial_report = Some(trial(&state, &mirror, opts)?);
        }
    }
    Ok(UpdateReport {
        link: report,
        pack,
        imported_paths,
        verified,
        device_reboots,
        trial: trial_report,
    })
}

/// Land on the device store's default profile, on probation for `probation_reports` reports.
fn landing_plan(
    store: &crate::nixstore::NixStore,
    opts: &SimOptions,
) -> crate::device::activate::Plan {
    crate::device::activate::Plan {
        profile: store.default_profile(),
        command: Some("true".into()),
        timeout: std::time::Duration::from_secs(60),
        probation: Some(crate::state::probation::Window {
            seconds: u64::MAX,
            reports: opts.probation_reports,
            starts: 3,
            checks: None,
        }),
    }
}

/// The trial of the generation just landed: each pass the device writes a report, the ground
/// answers each report that comes down with its confirmation, and the device takes what the
/// uplink delivers, until it commits or its window of reports runs out.
fn trial(
    state: &DeviceState,
    mirror: &crate::state::mirror::Mirror,
    opts: &SimOptions,
) -> Result<TrialReport, UpdateSimError> {
    use crate::device::probation::{step, Event, Step};
    let mut r = TrialReport {
        outcome: "undecided".into(),
        ..TrialReport::default()
    };
    step(state, Event::Landed)?;
    let secret = mirror.device_secret()?;
    let mut model = link_model(opts, opts.seed ^ 0x0c0f_1a11);
    let mut rng = Rng::new(opts.seed ^ 0xd0_3a11);
    for pass in 1..=opts.max_passes {
        r.passes = pass;
        let (_, bytes) = status::report(state, status::Detail::Regular).map_err(SimError::from)?;
        if let Step::Reverted(_) = step(state, Event::Report)? {
            r.outcome = "reverted: not confirmed".into();
            break;
        }
        if opts.report_loss > 0.0 && rng.chance(Prob::new(opts.report_loss)) {
            r.reports_lost += 1;
            continue;
        }
        let Some((report, counter)) = crate::status_view::report_of(&bytes) else {
            continue;
        };
        let Some(due) = crate::ground::confirm::due(mirror, &report, counter, secret.as_ref())?
        else {
            continue;
        };
        r.confirmations_sent += 1;
        let delivered = model.transmit(vec![due.frame]);
        r.confirmations_delivered += delivered.len() as u32;
        let mut rx = LinkReceiver::open(state).map_err(SimError::from)?;
        for f in &delivered {
            rx.handle_bytes(f).map_err(SimError::from)?;
        }
        rx.flush().map_err(SimError::from)?;
        if !rx.stats.generations_confirmed.is_empty() {
            r.outcome = "committed".into();
            break;
        }
    }
    Ok(r)
}

/// A round step near `raw`: 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// A tick value without trailing zeros.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_ticks_are_round() {
        assert_eq!(nice_step(8_388_608.0 / 5.0), 2e6);
        assert_eq!(nice_step(420.0), 500.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.25), "0.25");
    }
}
