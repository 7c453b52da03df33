//! Shared helpers: real Nix, the ground is this machine's store, the device a second store
//! under a chroot directory (`local?root=DIR`). Tests fail, not skip, without Nix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const NARLINK: &str = env!("CARGO_BIN_EXE_narlink");

pub fn nix_env(c: &mut Command) -> &mut Command {
    c.env("NIX_REMOTE", "local")
}

pub fn sh(cmd: &str) -> String {
    let out = nix_env(
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail; {cmd}")),
    )
    .output()
    .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Build version `v` of examples/demo.nix (once per test process).
pub fn demo(v: u32) -> String {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<u32, String>>> =
        OnceLock::new();
    let m = BUILT.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    m.entry(v)
        .or_insert_with(|| {
            assert!(
                Command::new("nix-build").arg("--version").output().is_ok(),
                "nix-build is not on PATH: run scripts/setup.sh (Debian's nix-bin) first"
            );
            nix_fixture("examples/demo.nix", v)
        })
        .clone()
}

/// Build version `v` of the fixture `file` (relative to the repository) with the test
/// store's options; its output path.
pub fn nix_fixture(file: &str, v: u32) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    sh(&format!(
        "nix-build {root}/{file} --arg version {v} --no-out-link \
         --option sandbox false --option substituters '' 2>/dev/null"
    ))
    .trim()
    .to_owned()
}

/// A device: a chroot Nix store holding the closure of `holds`, plus its narlink state, and
/// a ground mirror that knows it.
pub struct Rig {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Rig {
    pub fn new(holds: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let rig = Rig { _tmp: tmp, dir };
        sh(&format!(
            "nix-store --export $(nix-store -qR {holds}) | nix-store --store '{}' --import >/dev/null",
            rig.store()
        ));
        sh(&format!(
            "nix-store --generate-binary-cache-key ground-1 {} {}",
            rig.p("sk"),
            rig.p("pk")
        ));
        rig.init_device();
        rig.ground_init("mirror", holds);
        rig
    }

    /// `ground init` of mirror `name` for the rig's device (its key exported to `devkey` on
    /// first use), saying it holds the closure of `holds`.
    pub fn ground_init(&self, name: &str, holds: &str) {
        if !self.dir.join("devkey").exists() {
            self.ok(&[
                "device",
                "identity",
                "--state",
                self.p("state"),
                "--export",
                self.p("devkey"),
            ]);
        }
        self.ok(&[
            "ground",
            "init",
            "--mirror",
            self.p(name),
            "--device-key",
            self.p("devkey"),
            holds,
        ]);
    }

    /// `device init` of the rig's state, trusting the rig's key.
    pub fn init_device(&self) {
        self.init_device_as("state");
    }

    /// `device init` of another device's state `name` on the same store, trusting the rig's
    /// key (it gets its own downlink key).
    pub fn init_device_as(&self, name: &str) {
        self.ok(&[
            "device",
            "init",
            "--state",
            self.p(name),
            "--store",
            &self.store(),
            "--trust",
            self.p("pk"),
        ]);
    }

    /// `narlink args` must fail, saying `why` on stderr; its stderr.
    pub fn fails_with(&self, args: &[&str], why: &str) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(why),
            "narlink {args:?} should fail saying {why:?}: {err}"
        );
        err
    }

    /// `narlink args` under GNU time: its output, and its peak RSS in KiB (`%M`: the largest
    /// of narlink and every process it waited for, Nix included).
    pub fn peak_rss(&self, args: &[&str]) -> (Output, u64) {
        assert!(
            Path::new("/usr/bin/time").exists(),
            "needs GNU time (/usr/bin/time): run scripts/setup.sh"
        );
        let mut a = vec!["-f", "%M", "-o", self.p("rss"), NARLINK, "--quiet"];
        a.extend_from_slice(args);
        let out = nix_env(Command::new("/usr/bin/time").args(&a))
            .output()
            .unwrap();
        let rss = std::fs::read_to_string(self.p("rss")).unwrap();
        let kib = rss.lines().last().unwrap().trim().parse().unwrap();
        (out, kib)
    }

    /// `device status` -> `ground ack`: the mirror learns what the device holds now.
    pub fn ack(&self) {
        self.status(&[]);
        self.ok(&[
            "ground",
            "ack",
            "--mirror",
            self.p("mirror"),
            self.p("status"),
        ]);
    }

    /// A device running `holds` from its narlink profile (generation 1, set by hand: no
    /// activation ran).
    pub fn running(holds: &str) -> Rig {
        let rig = Rig::new(holds);
        sh(&format!(
            "nix-env --store '{}' -p {} --set {holds}",
            rig.store(),
            rig.profile()
        ));
        rig
    }

    /// The device's narlink profile, in its chroot store.
    pub fn profile(&self) -> String {
        self.dir
            .join("device/nix/var/nix/profiles/narlink")
            .to_string_lossy()
            .into_owned()
    }

    /// The profile's live generation and the store path it holds, if there is a profile.
    pub fn live(&self) -> Option<(u32, String)> {
        let p = self.profile();
        let link = std::fs::read_link(&p).ok()?;
        let generation = link.to_string_lossy().rsplit('-').nth(1)?.parse().ok()?;
        let root = std::fs::read_link(Path::new(&p).with_file_name(link)).ok()?;
        Some((generation, root.to_string_lossy().into_owned()))
    }

    pub fn store(&self) -> String {
        format!("local?root={}", self.dir.join("device").display())
    }

    pub fn p(&self, name: &str) -> &str {
        Box::leak(
            self.dir
                .join(name)
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        )
    }

    pub fn run(&self, args: &[&str]) -> Output {
        nix_env(Command::new(NARLINK).arg("--quiet").args(args))
            .output()
            .unwrap()
    }

    /// `ground pack` of the rig's mirror signed with the rig's key, then `args`.
    fn pack_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "ground",
            "pack",
            "--mirror",
            self.p("mirror"),
            "--sign-key",
            self.p("sk"),
        ];
        a.extend_from_slice(args);
        a
    }

    /// [`Rig::pack_args`], its report (it must succeed).
    pub fn pack(&self, args: &[&str]) -> serde_json::Value {
        self.json(&self.pack_args(args))
    }

    /// [`Rig::pack_args`], whatever comes of it.
    pub fn pack_output(&self, args: &[&str]) -> Output {
        self.run(&self.pack_args(args))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "narlink {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// What the device store holds: its whole registration database.
    pub fn device_db(&self) -> String {
        sh(&format!("nix-store --store '{}' --dump-db", self.store()))
    }

    /// `device receive` of `what` (bundles or frames) into the rig's device.
    pub fn receive(&self, what: &str) -> String {
        self.ok(&["device", "receive", "--state", self.p("state"), what])
    }

    /// `device receive --import` of `what`.
    pub fn receive_import(&self, what: &str) -> String {
        self.ok(&[
            "device",
            "receive",
            "--state",
            self.p("state"),
            "--import",
            what,
        ])
    }

    /// `device status` written to `status` in the rig, then `extra`; what it reports.
    pub fn status(&self, extra: &[&str]) -> serde_json::Value {
        let mut a = vec![
            "device",
            "status",
            "--state",
            self.p("state"),
            "--out",
            self.p("status"),
        ];
        a.extend_from_slice(extra);
        self.json(&a)
    }

    /// Receive the frames in `first` (a file of the first pass, as lossy as the caller made
    /// it), then status report → `ground resend` → receive until the bundle is complete; the
    /// number of passes it took. Each status report must stay small: the status budget (64 +
    /// 2 per unfinished group, 6 per other bundle, 5 per removed path) plus its seal.
    pub fn receive_with_resend(&self, first: &str) -> u32 {
        let mut frames = first.to_owned();
        let mut pass = 1;
        loop {
            self.receive(&frames);
            self.status(&[]);
            let st = self.json(&["inspect", self.p("status")]);
            let listed = |k: &str| st[k].as_array().unwrap().len() as u64;
            assert!(
                std::fs::metadata(self.p("status")).unwrap().len()
                    <= 64
                        + 2 * listed("needs")
                        + 6 * listed("others")
                        + 5 * listed("removed")
                        + narlink_protocol::seal::SEAL_LEN as u64
            );
            if st["phase"] != "receiving" {
                return pass;
            }
            pass += 1;
            assert!(pass < 10, "no progress: {st}");
            frames = self.p(&format!("pass{pass}")).to_owned();
            self.ok(&[
                "ground",
                "resend",
                "--mirror",
                self.p("mirror"),
                "--status",
                self.p("status"),
                "--frames",
                &frames,
            ]);
        }
    }

    pub fn assert_holds(&self, root: &str) {
        let closure = sh(&format!("nix-store -qR {root}"));
        let paths: Vec<&str> = closure.lines().collect();
        sh(&format!(
            "nix-store --store '{}' --verify-path {}",
            self.store(),
            paths.join(" ")
        ));
        let on_device = sh(&format!("nix-store --store '{}' -qR {root}", self.store()));
        assert_eq!(
            on_device, closure,
            "device closure differs from the ground's"
        );
    }
}

pub fn flip(file: &Path, offset: u64) {
    let mut b = std::fs::read(file).unwrap();
    b[offset as usize] ^= 0x01;
    std::fs::write(file, b).unwrap();
}

/// Give a bundle file the id its head hashes to now (after a test changed the head): what an
/// adversary who forges a whole bundle does.
pub fn rehead(file: &Path) {
    use narlink_protocol::bundle::{BundleHeader, HEADER_LEN};
    let mut b = std::fs::read(file).unwrap();
    let h = BundleHeader::decode(&b).unwrap();
    let m_end = HEADER_LEN + h.manifest_len as usize;
    let s_end = m_end + usize::from(h.signatures_len);
    let fixed = BundleHeader::for_head(
        &b[HEADER_LEN..m_end],
        h.manifest_encoding,
        h.manifest_raw_len,
        h.payload_len,
        &b[m_end..s_end],
    );
    b[..HEADER_LEN].copy_from_slice(&fixed.encode());
    std::fs::write(file, b).unwrap();
}

/// A store path holding `mib` MiB of random bytes (built once per size and test process).
pub fn blob(mib: u64) -> String {
    sh(&format!(
        "nix-build --no-out-link --option sandbox false --option substituters '' -E '
        derivation {{
          name = \"blob-{mib}m\"; system = builtins.currentSystem; builder = \"/bin/sh\";
          args = [ \"-c\" \"/bin/mkdir $out && /usr/bin/head -c {mib}M /dev/urandom > $out/blob\" ];
        }}' 2>/dev/null"
    ))
    .trim()
    .to_owned()
}
