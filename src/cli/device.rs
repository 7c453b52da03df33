//! `narlink device ...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use narlink::device::{activate, gc, import, init, intake, listen, status};
use narlink::nixstore::NixStore;
use narlink::progress::bytes;
use narlink::state::device::DeviceState;
use narlink::state::probation::Window;

use super::output;

#[derive(Subcommand)]
pub enum Command {
    /// Create the device state for a Nix store and index what it holds.
    Init(InitArgs),
    /// Stage a bundle (a file, or - for standard input).
    Receive(ReceiveArgs),
    /// Verify and import every complete bundle into the Nix store.
    Import(ImportArgs),
    /// Write a status report for the ground.
    Status(StatusArgs),
    /// Receive frames from a socket, unattended.
    Listen(ListenArgs),
    /// Run `device listen` from the profile's live generation and fall back to the previous
    /// generation when its narlink does not start or its probation runs out (the unit
    /// contrib/systemd ships runs this).
    Supervise(SuperviseArgs),
    /// Trust more signing keys (public keys in Nix's format).
    Trust(TrustArgs),
    /// The device's identity on the downlink; `--export` writes its provisioning file for
    /// the ground (`ground init --device-key`).
    Identity(IdentityArgs),
    /// Collect garbage in step: Nix's GC (keeping the profile's newest generations), then
    /// bring the index in line with the store.
    Gc(GcArgs),
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long)]
    state: PathBuf,
    /// Do not collect; only follow a garbage collection the operator ran.
    #[arg(long)]
    no_collect: bool,
    /// The profile narlink manages (default: <store root>/nix/var/nix/profiles/narlink).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Generations of the profile to keep (at least 1: the live one).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    keep_generations: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TrustArgs {
    #[arg(long)]
    state: PathBuf,
    /// Public key files to trust (`NAME:BASE64`, as `nix-store --generate-binary-cache-key`
    /// writes).
    keys: Vec<PathBuf>,
    /// Stop trusting the key of this name (repeatable). Rotating a key: give the new key
    /// file and --remove the old name in one command.
    #[arg(long = "remove", value_name = "NAME")]
    remove: Vec<String>,
    /// Accept unsigned bundles too. For tests only: anything that reaches the link could
    /// then be imported.
    #[arg(long)]
    allow_unsigned: bool,
    #[arg(long)]
    json: bool,
}

fn read_keys(files: &[PathBuf]) -> anyhow::Result<Vec<narlink_protocol::signature::PublicKey>> {
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading public key {}", p.display()))?;
            narlink_protocol::signature::PublicKey::from_nix(&text)
                .with_context(|| format!("public key {}", p.display()))
        })
        .collect()
}

#[derive(Args)]
#[group(id = "endpoint", required = true, multiple = false)]
pub struct Endpoint {
    /// UDP address: one frame per datagram.
    #[arg(long, group = "endpoint")]
    udp: Option<std::net::SocketAddr>,
    /// TCP address: a stream of frames per connection.
    #[arg(long, group = "endpoint")]
    tcp: Option<std::net::SocketAddr>,
    /// Unix-domain socket path: a stream of frames per connection.
    #[arg(long, group = "endpoint")]
    unix: Option<PathBuf>,
}

#[derive(Args)]
pub struct ListenArgs {
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    endpoint: Endpoint,
    /// Import every path as soon as its data is all here.
    #[arg(long)]
    import: bool,
    /// Exit once a bundle is imported (with --import) or complete.
    #[arg(long)]
    exit_when_done: bool,
    /// Keep the latest status report in this file.
    #[arg(long)]
    status_out: Option<PathBuf>,
    /// Rewrite the status report at least this often, in seconds.
    #[arg(long, default_value_t = 60)]
    status_every: u64,
    #[command(flatten)]
    activation: ActivationArgs,
    #[command(flatten)]
    probation: ProbationArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SuperviseArgs {
    #[arg(long)]
    state: PathBuf,
    /// The device's Nix store, as given to `device init` (default: the environment's).
    #[arg(long)]
    store: Option<String>,
    /// The profile whose live generation's bin/narlink runs (default: the store's narlink
    /// profile); the same profile `device listen --profile` switches.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Seconds between counts of the running time during probation (each is a durable write
    /// of the probation record; a power cut loses at most one).
    #[arg(long, default_value_t = 30)]
    tick: u64,
    /// Seconds to wait before starting the daemon again after it exited.
    #[arg(long, default_value_t = 1)]
    restart_delay: u64,
    /// The arguments of `device listen` (after --state), e.g. `-- --udp 0.0.0.0:7000
    /// --import --profile P --activate CMD`.
    #[arg(last = true, required = true)]
    listen: Vec<String>,
}

/// How a generation the daemon lands is put on probation (docs/operations.md, "Probation").
#[derive(Args)]
pub struct ProbationArgs {
    /// Commit each generation at once, without waiting for the ground's confirmation.
    #[arg(long)]
    no_probation: bool,
    /// Seconds of running time a generation waits for the ground's confirmation before it is
    /// reverted (the device counts the time narlink runs: there is no clock across boots).
    #[arg(long, default_value_t = Window::default().seconds)]
    probation_seconds: u64,
    /// Reports a generation may write without a confirmation; the next one reverts it (0: no
    /// limit).
    #[arg(long, default_value_t = Window::default().reports)]
    probation_reports: u32,
    /// Starts in a row that may fail to prove healthy; the next one reverts the generation.
    #[arg(long, default_value_t = Window::default().starts)]
    probation_starts: u32,
    /// Required health checks: every executable in this directory runs after the
    /// activation and at each start during probation; one failing reverts at once.
    #[arg(long)]
    health_checks: Option<PathBuf>,
}

impl ProbationArgs {
    fn window(&self) -> Option<Window> {
        (!self.no_probation).then(|| Window {
            seconds: self.probation_seconds,
            reports: self.probation_reports,
            starts: self.probation_starts,
            checks: self.health_checks.clone(),
        })
    }
}

impl ActivationArgs {
    /// The landing plan these flags ask for: `--activate` alone uses the store's default
    /// profile.
    fn plan(&self, store: &NixStore) -> Option<activate::Plan> {
        activate::Plan::new(
            store,
            self.profile.as_deref(),
            self.activate.as_deref(),
            std::time::Duration::from_secs(self.activate_timeout),
        )
    }
}

/// What to do with an imported root: switch a profile, run an activation command.
#[derive(Args)]
pub struct ActivationArgs {
    /// Make the imported root the new generation of this profile.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Then run this command (`sh -c`, with NARLINK_ROOT, NARLINK_PROFILE,
    /// NARLINK_GENERATION); if it fails, switch back to the previous generation.
    #[arg(long)]
    activate: Option<String>,
    /// Seconds the activation command may take.
    #[arg(long, default_value_t = 300)]
    activate_timeout: u64,
}

#[derive(Args)]
pub struct InitArgs {
    /// State directory (created).
    #[arg(long)]
    state: PathBuf,
    /// The device's Nix store, e.g. `local?root=/srv/device` (default: the environment's).
    #[arg(long)]
    store: Option<String>,
    /// Public key files of the ground keys whose bundles this device accepts.
    #[arg(long = "trust")]
    trust: Vec<PathBuf>,
    /// Accept unsigned bundles. For tests only.
    #[arg(long)]
    allow_unsigned: bool,
    /// Largest bundle accepted, in bytes.
    #[arg(long)]
    max_bundle_bytes: Option<u64>,
    /// Disk for frames and decoded groups of all bundles in flight, in bytes.
    #[arg(long)]
    link_quota_bytes: Option<u64>,
    /// Disk for a bundle whose signature is not yet verified, in bytes.
    #[arg(long)]
    unverified_bytes: Option<u64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReceiveArgs {
    #[arg(long)]
    state: PathBuf,
    /// Bundle files, frame files, directories of frame files, or - for standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Import every path whose data is all here, at once (even while the rest of its
    /// bundle is still missing).
    #[arg(long)]
    import: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    activation: ActivationArgs,
    /// Also import, from bundles still being received, the paths whose data is all here (in
    /// bundles of more than one FEC group, which carry a narHash per path). Without it an
    /// incomplete bundle is refused and the store is left as it is.
    #[arg(long)]
    partial: bool,
    /// Override the store recorded at init.
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IdentityArgs {
    #[arg(long)]
    state: PathBuf,
    /// Write the provisioning file (the device's secret key: keep it as secret as a signing
    /// key) here, for `ground init --device-key`.
    #[arg(long)]
    export: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    state: PathBuf,
    /// Where to write the report for the downlink.
    #[arg(long)]
    out: PathBuf,
    /// Also write the inventory (every store path name), for the ground to rebuild a stale
    /// mirror.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Write the full report: every bundle and refusal the device remembers and every path
    /// garbage collection removed (a regular report carries the newest few).
    #[arg(long)]
    full: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(c: Command, progress: bool) -> anyhow::Result<ExitCode> {
    match c {
        Command::Init(a) => {
            let keys = read_keys(&a.trust)?;
            if keys.is_empty() && !a.allow_unsigned {
                anyhow::bail!("give the ground's public key with --trust KEYFILE (or --allow-unsigned, for tests only)");
            }
            let d = narlink::state::device::DeviceLimits::default();
            let limits = narlink::state::device::DeviceLimits {
                max_bundle_bytes: a.max_bundle_bytes.unwrap_or(d.max_bundle_bytes),
                link_quota_bytes: a.link_quota_bytes.unwrap_or(d.link_quota_bytes),
                unverified_bytes: a.unverified_bytes.unwrap_or(d.unverified_bytes),
                ..d
            };
            let r = init::init(&a.state, a.store.as_deref(), progress, |state| {
                state.set_trust(&keys, &[], a.allow_unsigned)?;
                state.set_limits(&limits)
            })
            .with_context(|| format!("device init of {}", a.state.display()))?;
            if a.allow_unsigned {
                eprintln!(
                    "narlink: WARNING: {} accepts UNSIGNED bundles",
                    a.state.display()
                );
            }
            output(a.json, &r, || {
                let mut s = format!(
                    "device state {}: {} paths indexed ({}, {} chunks)",
                    a.state.display(),
                    r.paths,
                    bytes(r.nar_bytes),
                    r.chunks
                );
                for d in &r.damaged {
                    s.push_str(&format!(
                        "\nwarning: {d} does not match its narHash; left out of the index"
                    ));
                }
                s
            })?;
        }
        Command::Receive(a) => {
            let state = DeviceState::open(&a.state)?;
            let r = intake::receive_paths(&state, &a.files, progress).context("device receive")?;
            output(a.json, &r, || r.render())?;
            if a.import {
                let store = NixStore::new(state.store_uri()?.as_deref());
                let imp = import::import_all(&state, &store, progress, true, None)
                    .context("device import")?;
                if !a.json {
                    println!("{}", render_import(&imp));
                }
            }
            if let Some(p) = r.unrecognized.first() {
                anyhow::bail!("{p} is neither a narlink bundle nor a stream of narlink frames");
            }
            if !r.rejected().is_empty() {
                anyhow::bail!(
                    "{} payloads failed verification and were dropped; the bundle is incomplete",
                    r.rejected().len()
                );
            }
        }
        Command::Import(a) => {
            let state = DeviceState::open(&a.state)?;
            let uri = match a.store {
                Some(s) => Some(s),
                None => state.store_uri()?,
            };
            let store = NixStore::new(uri.as_deref());
            // An update a kill interrupted between its import and its activation is finished
            // (or rolled back) first.
            let resumed = activate::land(&state, &store).context("finishing the last update")?;
            let plan = a.activation.plan(&store);
            if plan.is_some() {
                // Landing over a generation on trial would leave its revert pointing at the
                // wrong generation.
                if let Some(p) =
                    narlink::state::probation::read(&a.state)?.filter(|p| p.on_probation())
                {
                    anyhow::bail!(
                        "device import: generation {} (bundle {}) is on probation, waiting for \
                         the ground's confirmation; nothing was imported. Let the daemon finish \
                         the trial (docs/operations.md, section 9)",
                        p.generation,
                        p.bundle
                    );
                }
            }
            let r = import::import_all(&state, &store, progress, a.partial, plan.as_ref())
                .context("device import")?;
            if r.bundles.is_empty() && r.refused.is_empty() {
                // Nothing recorded to import; a bundle still arriving over the link is not
                // "nothing": say what it lacks.
                if let Some(rx) = narlink::device::link::status_report(&state)? {
                    let shards: u64 = rx.needs().map(|(_, n)| u64::from(n)).sum();
                    anyhow::bail!(
                        "device import: bundle {} is still being received: {} groups lack {} \
                         shards{}; receive the rest first",
                        narlink_protocol::digest::hex(&rx.bundle_id),
                        rx.listed_groups(),
                        shards,
                        if rx.is_truncated() { " or more" } else { "" }
                    );
                }
            }
            let mut activation = activate::land(&state, &store)
                .context("activation")?
                .or(resumed);
            if activation.is_none() && r.bundles.is_empty() {
                // Nothing new: the last update's outcome stands (a failed activation stays a
                // failure until a newer update lands).
                activation = activate::last(&state)?.filter(|a| !a.activated);
            }
            #[derive(serde::Serialize)]
            struct Out<'a> {
                #[serde(flatten)]
                import: &'a import::ImportReport,
                activation: &'a Option<activate::ActivationReport>,
            }
            output(
                a.json,
                &Out {
                    import: &r,
                    activation: &activation,
                },
                || {
                    let mut s = render_import(&r);
                    if let Some(act) = &activation {
                        s.push_str(&format!(
                            "\nprofile {}: generation {} -> {}",
                            act.profile.display(),
                            act.generation,
                            act.root
                        ));
                        if let Some(f) = &act.failure {
                            s.push_str(&format!("\nACTIVATION FAILED: {f}"));
                        }
                        s.push_str(&format!(
                            "\nlive generation: {}{}",
                            act.live_generation.map_or("none".into(), |g| g.to_string()),
                            if act.rolled_back {
                                " (rolled back)"
                            } else {
                                ""
                            }
                        ));
                    }
                    s
                },
            )?;
            if let Some(act) = activation.filter(|a| !a.activated) {
                anyhow::bail!(
                    "activation of generation {} failed; generation {} is live: {}",
                    act.generation,
                    act.live_generation.map_or("none".into(), |g| g.to_string()),
                    act.failure.as_deref().unwrap_or("")
                );
            }
        }
        Command::Gc(a) => {
            let state = DeviceState::open(&a.state)?;
            let store = NixStore::new(state.store_uri()?.as_deref());
            if let Some(p) = &a.profile {
                // A mistyped profile would keep no generation of the real one from the GC.
                if !a.no_collect && p.symlink_metadata().is_err() {
                    anyhow::bail!(
                        "device gc: there is no profile {}: name the profile narlink switches (nothing was collected)",
                        p.display()
                    );
                }
            }
            let profile = a.profile.clone().unwrap_or_else(|| store.default_profile());
            let opts = gc::GcOptions {
                collect: !a.no_collect,
                profile: Some(profile),
                keep_generations: a.keep_generations,
                progress,
            };
            let r = gc::gc(&state, &store, &opts).context("device gc")?;
            output(a.json, &r, || {
                format!(
                    "{}{} paths left the index, {} joined it; state {} -> {}",
                    if r.nix.is_empty() {
                        String::new()
                    } else {
                        format!("nix: {}\n", r.nix)
                    },
                    r.removed_from_index.len(),
                    r.added_to_index,
                    r.digest_before,
                    r.digest_after
                )
            })?;
        }
        Command::Trust(a) => {
            let state = DeviceState::open(&a.state)?;
            let keys = read_keys(&a.keys)?;
            let (now, _) = state.trust()?;
            let unknown: Vec<&str> = a
                .remove
                .iter()
                .filter(|n| !now.iter().any(|k| &k.name == *n))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                anyhow::bail!(
                    "no trusted key is named {}: nothing changed",
                    unknown.join(", ")
                );
            }
            let left = now.iter().filter(|k| !a.remove.contains(&k.name)).count() + keys.len();
            if left == 0 && !a.allow_unsigned {
                // A device that trusts no key can never take an update again.
                anyhow::bail!(
                    "refusing to remove the last trusted key: the device could never take an \
                     update again; give the new key in the same command to rotate"
                );
            }
            state.set_trust(&keys, &a.remove, a.allow_unsigned)?;
            let (all, allow) = state.trust()?;
            let names: Vec<String> = all.iter().map(|k| k.name.clone()).collect();
            output(a.json, &names, || {
                format!(
                    "trusted keys: {}{}",
                    names.join(", "),
                    if allow {
                        "; UNSIGNED bundles accepted"
                    } else {
                        ""
                    }
                )
            })?;
        }
        Command::Listen(a) => {
            let endpoint = match (a.endpoint.udp, a.endpoint.tcp, a.endpoint.unix.clone()) {
                (Some(u), _, _) => listen::Endpoint::Udp(u),
                (_, Some(t), _) => listen::Endpoint::Tcp(t),
                (_, _, Some(p)) => listen::Endpoint::Unix(p),
                _ => anyhow::bail!("give one of --udp, --tcp, --unix"),
            };
            let opts = listen::ListenOptions {
                endpoint,
                import: a.import,
                exit_when_done: a.exit_when_done,
                status_out: a.status_out.clone(),
                status_every: std::time::Duration::from_secs(a.status_every.max(1)),
                profile: a.activation.profile.clone(),
                activate: a.activation.activate.clone(),
                activate_timeout: std::time::Duration::from_secs(a.activation.activate_timeout),
                probation: a.probation.window(),
                progress,
            };
            let json = a.json;
            let r = listen::listen(&a.state, &opts, |addr| {
                // With --json, stdout carries JSON only: one object a line, this one first.
                if json {
                    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
                } else {
                    println!("listening on {addr}");
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
            })
            .context("device listen")?;
            output(a.json, &r, || {
                format!(
                    "{} frames; bundles completed: {}; imported: {}",
                    r.frames,
                    r.bundles_completed.join(" "),
                    r.bundles_imported.join(" ")
                )
            })?;
        }
        Command::Supervise(a) => {
            let store = NixStore::new(a.store.as_deref());
            let opts = narlink::device::supervise::SuperviseOptions {
                profile: a.profile.unwrap_or_else(|| store.default_profile()),
                state_dir: a.state,
                store: a.store,
                listen_args: a.listen,
                tick: std::time::Duration::from_secs(a.tick.max(1)),
                restart_delay: std::time::Duration::from_secs(a.restart_delay),
            };
            narlink::device::supervise::supervise(&opts)
        }
        Command::Identity(a) => {
            let state = DeviceState::open(&a.state)?;
            let secret = state.device_secret()?;
            let id = narlink_protocol::digest::hex(&narlink_protocol::seal::device_id(&secret));
            if let Some(path) = &a.export {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut f| {
                        use std::io::Write;
                        f.write_all(narlink_protocol::seal::encode_secret(&secret).as_bytes())
                    })
                    .with_context(|| {
                        format!("writing {} (it must not exist yet)", path.display())
                    })?;
            }
            #[derive(serde::Serialize)]
            struct Identity {
                device: String,
                exported: Option<PathBuf>,
            }
            let r = Identity {
                device: id,
                exported: a.export.clone(),
            };
            output(a.json, &r, || match &r.exported {
                Some(p) => format!(
                    "device {}; its key is in {} (give it to the ground: ground init --device-key)",
                    r.device,
                    p.display()
                ),
                None => format!("device {}", r.device),
            })?;
        }
        Command::Status(a) => {
            let state = DeviceState::open(&a.state)?;
            let detail = if a.full {
                status::Detail::Full
            } else {
                status::Detail::Regular
            };
            let (report, encoded) = status::report(&state, detail)?;
            std::fs::write(&a.out, &encoded)
                .with_context(|| format!("writing {}", a.out.display()))?;
            if let Some(inv) = &a.inventory {
                let bytes = state.seal(&narlink::inventory::encode(&state.db.paths()?))?;
                std::fs::write(inv, &bytes)
                    .with_context(|| format!("writing {}", inv.display()))?;
                if !a.json {
                    println!(
                        "inventory ({} bytes) written to {}",
                        bytes.len(),
                        inv.display()
                    );
                }
            }
            output(a.json, &report, || {
                format!(
                    "{} ({} bytes) written to {}",
                    report.summary(),
                    encoded.len(),
                    a.out.display()
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render_import(r: &import::ImportReport) -> String {
    if r.bundles.is_empty() {
        return "nothing to import".into();
    }
    let refused = r
        .refused
        .iter()
        .map(|e| format!("\nrefused: {e}"))
        .collect::<String>();
    r.bundles
        .iter()
        .map(|b| {
            format!(
                "bundle {}: imported {} paths ({} of NAR), {} were already valid{}; roots: {}",
                b.bundle,
                b.paths_imported,
                bytes(b.nar_bytes),
                b.paths_already_valid,
                if b.complete {
                    ""
                } else {
                    " (partial: the bundle is still arriving)"
                },
                b.roots.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + &refused
}
