//! `narlink ground ...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use narlink::ground::{ack, init, link, pack};
use narlink::nixstore::NixStore;
use narlink::progress::bytes;
use narlink::state::mirror::Mirror;

use super::output;

#[derive(Subcommand)]
pub enum Command {
    /// Create a mirror saying the device holds the closure of ROOTs.
    Init(InitArgs),
    /// Pack the update to the closure of ROOTs into a bundle.
    Pack(PackArgs),
    /// Fold a device status report into the mirror.
    Ack(AckArgs),
    /// Emit exactly the frames a status report says each unfinished group still needs.
    Resend(ResendArgs),
    /// What the ground knows of the device: its last report, what is live, each bundle
    /// packed for it, what the next pass needs, stale or not.
    Show(ShowArgs),
    /// Withdraw a bundle in flight: nothing of it is sent any more, and packing is no longer
    /// held back by it (the next bundle supersedes it on the device).
    Cancel(CancelArgs),
    /// Give the mirror the device's key (its provisioning file, from `device identity
    /// --export`), or a new one after the device was set up again.
    DeviceKey(DeviceKeyArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    /// A mirror, or a ground directory holding one mirror per device (then each is shown;
    /// with --json, as an array).
    #[arg(long)]
    mirror: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    #[arg(long)]
    mirror: PathBuf,
    /// The bundle's id, or enough of its first hex digits to name one.
    bundle: String,
    /// Sign a withdrawal with this key (one the device trusts): a device that takes it drops
    /// the bundle and never imports it, even if it holds all of it.
    #[arg(long, requires = "frames")]
    sign_key: Option<PathBuf>,
    /// Where the withdrawal frame goes (a file, a directory, or - for standard output).
    #[arg(long, requires = "sign_key")]
    frames: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DeviceKeyArgs {
    #[arg(long)]
    mirror: PathBuf,
    /// The device's provisioning file.
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

/// The mirror a downlink message in `file` goes to (`dir`, or the one under it holding its
/// device's key), that mirror's downlink keys, and the message. A plain mirror is checked
/// before the file is read, so a missing or old mirror is what the error names.
fn route(
    dir: &std::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<(PathBuf, narlink::state::mirror::DownlinkKeys, Vec<u8>)> {
    use narlink::ground::fleet;
    let read = || std::fs::read(file).with_context(|| format!("reading {}", file.display()));
    if fleet::holds_mirrors(dir) {
        let bytes = read()?;
        let dir = fleet::mirror_for(dir, &bytes)?;
        let keys = Mirror::downlink_keys(&dir)?;
        return Ok((dir, keys, bytes));
    }
    let keys = Mirror::downlink_keys(dir)?;
    Ok((dir.to_owned(), keys, read()?))
}

fn read_secret_key(p: &std::path::Path) -> anyhow::Result<narlink_protocol::signature::SecretKey> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading secret key {}", p.display()))?;
    narlink_protocol::signature::SecretKey::from_nix(&text)
        .with_context(|| format!("secret key {}", p.display()))
}

fn read_device_key(path: &std::path::Path) -> anyhow::Result<narlink_protocol::seal::DeviceSecret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading device key {}", path.display()))?;
    narlink_protocol::seal::parse_secret(&text).with_context(|| {
        format!(
            "{} is not a device provisioning file (narlink-device-key-v1 ...; `device identity --export` writes one)",
            path.display()
        )
    })
}

#[derive(Args)]
pub struct InitArgs {
    /// Mirror directory (created).
    #[arg(long)]
    mirror: PathBuf,
    /// The ground's Nix store (default: the environment's).
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    json: bool,
    /// The device's provisioning file (`device identity --export`): the mirror takes only
    /// reports and inventories sealed with its key.
    #[arg(long)]
    device_key: Option<PathBuf>,
    /// Store paths (or symlinks to them, like ./result) whose closure the device holds.
    #[arg(required = true)]
    roots: Vec<String>,
}

#[derive(Args)]
pub struct PackArgs {
    #[arg(long)]
    mirror: PathBuf,
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    store: Option<String>,
    /// Sign the manifest with this secret key (Nix format: `nix-store --generate-binary-cache-key`).
    #[arg(long, required_unless_present = "unsigned")]
    sign_key: Option<PathBuf>,
    /// Make an unsigned bundle: devices refuse it unless they were set up with
    /// --allow-unsigned (tests only).
    #[arg(long, conflicts_with = "sign_key")]
    unsigned: bool,
    /// Replace the bundles still in flight: the new one is planned against the acknowledged
    /// state and carries everything they did (without this, packing while one is in flight
    /// is refused).
    #[arg(long)]
    supersede: bool,
    /// Compress every new chunk on its own: no zstd deltas or patches against data on board
    /// (the device then never reads its store to decode a payload).
    #[arg(long)]
    no_deltas: bool,
    /// Send each path's deriver (its .drv path), so that `nix-store -q --deriver` answers on
    /// the device. Costs ~50 bytes per new path.
    #[arg(long)]
    keep_derivers: bool,
    /// zstd level for new chunks (1-22).
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Threads that code new chunks (default: the CPUs this process may use). The bundle is
    /// the same whatever the number.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Also cut the bundle into frames for the uplink: a file, a directory (one file per
    /// frame), or - for standard output.
    #[arg(long)]
    frames: Option<PathBuf>,
    #[command(flatten)]
    link: LinkArgs,
    #[arg(long)]
    json: bool,
    /// The target closure roots.
    #[arg(required = true)]
    roots: Vec<String>,
}

#[derive(Args)]
pub struct AckArgs {
    /// The device's mirror, or a ground directory of mirrors (the report goes to the one
    /// holding its device's key).
    #[arg(long)]
    mirror: PathBuf,
    /// A status report written by `narlink device status`.
    report: PathBuf,
    /// The device's inventory (`device status --inventory`): rebuild the mirror from it
    /// when the report shows the mirror is stale.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// The ground's Nix store, to index paths the inventory adds (default: the environment's).
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    json: bool,
}

/// How bundles are cut into frames; defaults justified in protocol/SPEC.md.
#[derive(Args, Clone, Copy)]
pub struct LinkArgs {
    /// Frame payload size in bytes (each frame adds 44 bytes of header and checksum).
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_SHARD_SIZE, value_parser = clap::value_parser!(u16).range(16..))]
    frame_size: u16,
    /// First-pass parity, in percent of each group's data frames.
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_REDUNDANCY_PERCENT)]
    redundancy: u16,
    /// Data frames per FEC group.
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_GROUP_K, value_parser = clap::value_parser!(u16).range(1..))]
    group_k: u16,
    /// Parity frames that exist per group (fresh parity for resends).
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_PARITY)]
    parity: u16,
}

impl LinkArgs {
    fn options(&self) -> link::LinkOptions {
        link::LinkOptions {
            frame_size: self.frame_size,
            group_k: self.group_k,
            parity: self.parity,
            redundancy_percent: self.redundancy,
            ..link::LinkOptions::default()
        }
    }
}

#[derive(Args)]
pub struct ResendArgs {
    /// The device's mirror, or a ground directory of mirrors (see `ground ack`).
    #[arg(long)]
    mirror: PathBuf,
    /// The device's status report.
    #[arg(long)]
    status: PathBuf,
    /// Where the frames go: a file, a directory, or - for standard output.
    #[arg(long)]
    frames: PathBuf,
    /// Send at most this many bytes of frames (the pass budget); the rest waits.
    #[arg(long)]
    budget: Option<u64>,
    /// Size each group's share of the resend for at most this loss, in percent, however heavy
    /// the reports make it look (a pass cut short looks like heavy loss).
    #[arg(long, default_value_t = narlink_protocol::schedule::DEFAULT_MAX_LOSS_PPM / 10_000, value_parser = clap::value_parser!(u32).range(0..=95))]
    max_loss: u32,
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct PackOutput<'a> {
    #[serde(flatten)]
    pack: &'a pack::PackReport,
    frames: u64,
    frame_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmation: &'a Option<narlink::ground::confirm::Due>,
}

pub fn run(c: Command, progress: bool) -> anyhow::Result<ExitCode> {
    match c {
        Command::Init(a) => {
            let store = NixStore::new(a.store.as_deref());
            let device = a.device_key.as_deref().map(read_device_key).transpose()?;
            let r = init::init(&a.mirror, &store, &a.roots, progress, device.as_ref())
                .with_context(|| format!("ground init of mirror {}", a.mirror.display()))?;
            output(a.json, &r, || {
                format!(
                    "mirror {}: device holds {} paths ({}, {} chunks)",
                    a.mirror.display(),
                    r.paths,
                    bytes(r.nar_bytes),
                    r.chunks
                )
            })?;
        }
        Command::Pack(a) => {
            let store = NixStore::new(a.store.as_deref());
            let mirror = Mirror::open(&a.mirror)?;
            let sign_key = a
                .sign_key
                .as_deref()
                .map(read_secret_key)
                .transpose()?
                .map(std::sync::Arc::new);
            let defaults = pack::PackOptions::default();
            let opts = pack::PackOptions {
                zstd_level: a.level,
                derivers: a.keep_derivers,
                deltas: !a.no_deltas,
                supersede: a.supersede,
                sign_key,
                progress,
                piece_log2: a.link.options().piece_log2(),
                threads: a.threads.map_or(defaults.threads, usize::from),
            };
            let r = pack::pack(&mirror, &store, &a.roots, &a.out, &opts)
                .with_context(|| format!("ground pack into {}", a.out.display()))?;
            // With --json the report's `unconfirmed` says it (stderr may carry the JSON).
            if r.unconfirmed && !a.json {
                eprintln!(
                    "narlink: warning: this mirror has taken no report from the device yet: \
                     the bundle is planned against the roots given at `ground init`, which \
                     nothing has confirmed (ack a `device status` report first to be sure)"
                );
            }
            let options = a.link.options();
            let out_abs = std::path::absolute(&a.out)?;
            let mut source = link::FrameSource::open(&out_abs, options, None)?;
            if let Some(key) = &opts.sign_key {
                match source.announce(key, r.sequence) {
                    Some(frame) => mirror.put_announcement(&source.id(), &frame)?,
                    None => eprintln!(
                        "narlink: warning: frames of {} bytes cannot carry the bundle's \
                         announcement (at least {} needed): the device cannot name this bundle \
                         in its status reports until its head arrives",
                        options.frame_size,
                        narlink_protocol::announce::ANNOUNCE_LEN
                    ),
                }
            }
            let mut emitted = link::EmitReport::default();
            let mut confirmation = None;
            if let Some(dest) = &a.frames {
                let mut sink = link::FrameSink::open(dest)
                    .with_context(|| format!("opening {}", dest.display()))?;
                // The generation on probation the last report named is confirmed first.
                confirmation = narlink::ground::confirm::due_now(&mirror)?;
                if let Some(c) = &confirmation {
                    sink.write(&c.frame)
                        .with_context(|| format!("writing {}", dest.display()))?;
                }
                let pass = source.sender.first_pass();
                emitted = source.emit(pass, None, &mut |f| sink.write(f))?;
                sink.finish()
                    .with_context(|| format!("writing {}", dest.display()))?;
            }
            mirror.put_send(&source.id(), &source.record(options))?;
            let o = PackOutput {
                pack: &r,
                frames: emitted.frames,
                frame_bytes: emitted.bytes,
                confirmation: &confirmation,
            };
            let human = || {
                let mut s = r.render();
                if let Some(c) = &confirmation {
                    s.push_str(&format!(
                        "\nconfirmation:     generation {} (bundle {}, report {}), first frame",
                        c.generation, c.bundle, c.counter
                    ));
                }
                if a.frames.is_some() {
                    s.push_str(&format!(
                        "\nframes:           {} ({}, {} parity)",
                        emitted.frames,
                        bytes(emitted.bytes),
                        emitted.parity_frames
                    ));
                }
                s
            };
            if a.frames.as_deref() == Some(std::path::Path::new("-")) {
                // The frames are on stdout: the summary goes to stderr, never into them.
                if a.json {
                    eprintln!("{}", serde_json::to_string(&o)?);
                } else {
                    eprintln!("{}", human());
                }
            } else {
                output(a.json, &o, human)?;
            }
        }
        Command::Show(a) => {
            use narlink::ground::{fleet, show};
            if fleet::is_mirror(&a.mirror) {
                let s = show::show(&a.mirror)?;
                output(a.json, &s, || s.render())?;
            } else {
                let all = fleet::mirrors(&a.mirror)?
                    .iter()
                    .map(|m| show::show(m))
                    .collect::<Result<Vec<_>, _>>()?;
                output(a.json, &all, || {
                    all.iter()
                        .map(show::Show::render)
                        .collect::<Vec<_>>()
                        .join("\n\n")
                })?;
            }
        }
        Command::Ack(a) => {
            // Seals first, the mirror opened for writing only once they hold.
            let (dir, keys, bytes) = route(&a.mirror, &a.report)?;
            let inventory = match &a.inventory {
                Some(inv) => {
                    Some(std::fs::read(inv).with_context(|| format!("reading {}", inv.display()))?)
                }
                None => None,
            };
            let checked = ack::check(&keys, &bytes, inventory.as_deref())
                .with_context(|| format!("ground ack of {}", a.report.display()))?;
            let mirror = Mirror::open(&dir)?;
            let mut r = ack::ack(&mirror, &checked)
                .with_context(|| format!("ground ack of {}", a.report.display()))?;
            if let (false, Some(paths)) = (r.in_step, checked.inventory()) {
                let store = NixStore::new(a.store.as_deref());
                let rs = narlink::ground::resync::resync(&mirror, &store, paths, progress)
                    .context("rebuilding the mirror")?;
                r.in_step = rs.digest == r.device_digest;
                r.mirror_digest = rs.digest.clone();
                r.resync = Some(rs);
            }
            output(a.json, &r, || r.render())?;
            if !r.in_step {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Cancel(a) => {
            let mirror = Mirror::open(&a.mirror)?;
            let key = a.sign_key.as_deref().map(read_secret_key).transpose()?;
            let r = narlink::ground::bundles::cancel(&mirror, &a.bundle, key.as_ref())?;
            if let (Some(frame), Some(dest)) = (&r.withdrawal, &a.frames) {
                let mut sink = link::FrameSink::open(dest)
                    .with_context(|| format!("opening {}", dest.display()))?;
                sink.write(frame)
                    .and_then(|()| sink.finish())
                    .with_context(|| format!("writing {}", dest.display()))?;
            }
            let text = if a.json {
                serde_json::to_string(&r)?
            } else {
                let mut s = format!(
                    "bundle {} (sequence {}) cancelled: nothing of it is sent any more",
                    r.bundle, r.sequence
                );
                match (&r.withdrawal, &a.frames) {
                    (Some(_), Some(dest)) => s.push_str(&format!(
                        "\nits signed withdrawal is in {}: uplink it, and the device drops the bundle",
                        dest.display()
                    )),
                    _ => s.push_str(
                        "\nwithout --sign-key and --frames the device keeps what it has of it \
                         until the next bundle supersedes it",
                    ),
                }
                s
            };
            // With the frame on stdout, the summary goes to stderr.
            if a.frames.as_deref() == Some(std::path::Path::new("-")) {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
        }
        Command::DeviceKey(a) => {
            let secret = read_device_key(&a.file)?;
            let mirror = Mirror::open(&a.mirror)?;
            mirror.set_device_secret(&secret)?;
            let device = narlink_protocol::digest::hex(&narlink_protocol::seal::device_id(&secret));
            output(a.json, &serde_json::json!({ "device": device }), || {
                format!(
                    "mirror {} now takes messages of device {device}",
                    a.mirror.display()
                )
            })?;
        }
        Command::Resend(a) => {
            let (dir, keys, raw) = route(&a.mirror, &a.status)?;
            // The report may have been acknowledged already: not older than that one.
            let bare = |b: &[u8]| narlink_protocol::status::StatusReport::decode(b).is_ok();
            let sealed = narlink::ground::downlink::open(&keys, &raw, "status report", true, bare)
                .with_context(|| format!("status report {}", a.status.display()))?;
            let report = narlink_protocol::status::StatusReport::decode(sealed.payload)
                .with_context(|| format!("status report {}", a.status.display()))?;
            let mirror = Mirror::open(&dir)?;
            let confirmation = narlink::ground::confirm::due(
                &mirror,
                &report,
                Some(sealed.counter),
                keys.secret.as_ref(),
            )?;
            let mut sink = link::FrameSink::open(&a.frames)
                .with_context(|| format!("opening {}", a.frames.display()))?;
            let r = narlink::ground::resend::resend(
                &mirror,
                &report,
                confirmation,
                a.budget,
                a.max_loss * 10_000,
                &mut |f| sink.write(f),
            )?;
            sink.finish()
                .with_context(|| format!("writing {}", a.frames.display()))?;
            output(a.json, &r, || {
                let confirmed = r.confirmation.as_ref().map_or(String::new(), |c| {
                    format!(
                        "confirmation of generation {} (bundle {}, report {}) sent first\n",
                        c.generation, c.bundle, c.counter
                    )
                });
                if r.emitted.frames == 0 && r.confirmation.is_some() {
                    return confirmed.trim_end().to_owned();
                }
                if r.announced_only {
                    return format!(
                        "{confirmed}the report does not name bundle {} (in flight): sent its \
                         announcement ({} B), so the next report does",
                        r.bundle, r.emitted.bytes
                    );
                }
                let e = &r.emitted;
                format!(
                    "{confirmed}bundle {}: {} frames ({}), {} new parity; {} shards wait for the next pass",
                    r.bundle,
                    e.frames,
                    bytes(e.bytes),
                    e.parity_frames,
                    e.deferred
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
