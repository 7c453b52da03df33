//! Access to a Nix store through the `nix-store` command: closures, path metadata, import,
//! deletion. Every call of Nix lives here.
//!
//! A store is named by a URI as Nix takes it (`local?root=/srv/device`, `daemon`, ...) or by
//! nothing for the environment's default store. File contents are read from the store's
//! real location on disk (`root` + store path).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use crate::nar::NarHash;

/// The store directory narlink works with (one definition, in the protocol crate).
pub use narlink_protocol::storepath::STORE_DIR;

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("could not run `{cmd}`: {source} (is Nix installed and on PATH?)")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from `{cmd}`: {what}")]
    Output { cmd: String, what: String },
    #[error("{0} is not a store path under {STORE_DIR}")]
    NotStorePath(String),
    #[error("I/O error talking to nix-store: {0}")]
    Io(#[from] io::Error),
    #[error("store {uri} names no Nix store: {why}")]
    NoStore { uri: String, why: String },
}

/// What Nix records about a valid store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub deriver: Option<String>,
    pub references: Vec<String>,
}

/// A Nix store, reached through `nix-store [--store URI]`.
#[derive(Clone, Debug)]
pub struct NixStore {
    uri: Option<String>,
    root: PathBuf,
}

impl NixStore {
    /// The store named by `uri`, or the default store when `None`.
    pub fn new(uri: Option<&str>) -> NixStore {
        let root = uri
            .and_then(root_of_uri)
            .unwrap_or_else(|| PathBuf::from("/"));
        NixStore {
            uri: uri.map(str::to_owned),
            root,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Whether the store URI names a store that exists, before Nix is asked: Nix makes an
    /// empty store at a chroot root that does not hold one, and ignores query parameters it
    /// does not know (`local?roo=DIR` would be the machine's own store).
    pub fn check_exists(&self) -> Result<(), NixError> {
        let Some(uri) = &self.uri else {
            return Ok(());
        };
        let Some((scheme, query)) = uri.split_once('?') else {
            return Ok(());
        };
        if scheme != "local" {
            return Ok(());
        }
        let Some(root) = root_of_uri(uri) else {
            return Err(NixError::NoStore {
                uri: uri.clone(),
                why: format!("a local store URI with parameters ({query}) but no root=DIR"),
            });
        };
        let db = root.join("nix/var/nix/db/db.sqlite");
        if !db.exists() {
            return Err(NixError::NoStore {
                uri: uri.clone(),
                why: format!("{} does not exist", db.display()),
            });
        }
        Ok(())
    }

    /// Where the bytes of `store_path` live on this machine's filesystem.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.root.join(store_path.trim_start_matches('/'))
    }

    fn command(&self) -> Command {
        let mut c = Command::new("nix-store");
        if let Some(uri) = &self.uri {
            c.arg("--store").arg(uri);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, NixError> {
        let mut c = self.command();
        c.args(args);
        let (cmd, out) = output(c)?;
        String::from_utf8(out.stdout).map_err(|_| NixError::Output {
            cmd,
            what: "not UTF-8".into(),
        })
    }

    /// Resolve roots given on the command line (store paths or symlinks to them, like
    /// `./result`) to store paths.
    pub fn resolve_roots(&self, roots: &[String]) -> Result<Vec<String>, NixError> {
        roots
            .iter()
            .map(|r| {
                if let Some(p) = as_store_path(r) {
                    return Ok(p);
                }
                let target = std::fs::canonicalize(r)?;
                let t = target.to_string_lossy();
                as_store_path(&t).ok_or_else(|| NixError::NotStorePath(r.clone()))
            })
            .collect()
    }

    /// The closure of `roots`, sorted.
    pub fn closure(&self, roots: &[String]) -> Result<Vec<String>, NixError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["--query", "--requisites"];
        args.extend(roots.iter().map(String::as_str));
        let mut v: Vec<String> = self.run(&args)?.lines().map(str::to_owned).collect();
        v.sort();
        Ok(v)
    }

    /// Metadata of the given paths, or of every valid path when `paths` is `None`.
    pub fn path_infos(&self, paths: Option<&[String]>) -> Result<Vec<PathInfo>, NixError> {
        let mut args = vec!["--dump-db"];
        if let Some(p) = paths {
            if p.is_empty() {
                return Ok(Vec::new());
            }
            args.extend(p.iter().map(String::as_str));
        }
        let out = self.run(&args)?;
        parse_dump_db(&out).map_err(|what| NixError::Output {
            cmd: "nix-store --dump-db".into(),
            what,
        })
    }

    /// Import an export stream written by `write` (`nix-store --import`). Nix registers each
    /// path only once its NAR has been read completely, but Nix 2.8 holds every NAR whole in
    /// memory first (`Store::importPaths`), so this is for small closures (test and simulator
    /// set-up); the device imports with [`NixStore::add_nars`].
    pub fn import(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), NixError> {
        let mut c = self.command();
        c.arg("--import").stdout(Stdio::null()); // it lists the paths it imported
        self.session(c, |stdin, _| {
            let mut w = io::BufWriter::with_capacity(1 << 20, stdin);
            write(&mut w).and_then(|()| w.flush())
        })
    }

    /// Add paths to the store from their NARs, streamed: `add` hands each path to
    /// [`NarAdder::add`] in dependency order. One `nix-store --serve --write` session (Nix's
    /// serve protocol, `cmdAddToStoreNar`, what `nix copy --to ssh://` uses) runs
    /// `LocalStore::addToStore` per path: it restores the NAR into the store as it arrives,
    /// under the path's lock, and registers the path only once the whole NAR has arrived and
    /// its SHA-256 and size equal the given narHash and narSize. Nix's memory stays flat
    /// whatever the NAR's size, unlike `--import`.
    pub fn add_nars(
        &self,
        add: impl FnOnce(&mut NarAdder) -> io::Result<()>,
    ) -> Result<(), NixError> {
        let mut c = self.command();
        c.arg("--serve").arg("--write").stdout(Stdio::piped());
        self.session(c, |stdin, stdout| {
            let mut adder = NarAdder {
                to: io::BufWriter::with_capacity(1 << 20, stdin),
                from: stdout.ok_or_else(|| io::Error::other("no stdout"))?,
            };
            adder.handshake()?;
            add(&mut adder)?;
            adder.to.flush()
        })
    }

    /// Run `c` with piped stdin (and stdout if `c` says so), `talk` to it, then close its
    /// stdin and wait; a failure of Nix wins over the I/O error it caused on our side.
    fn session(
        &self,
        mut c: Command,
        talk: impl FnOnce(&mut ChildStdin, Option<&mut ChildStdout>) -> io::Result<()>,
    ) -> Result<(), NixError> {
        c.stdin(Stdio::piped()).stderr(Stdio::piped());
        let cmd = describe(&c);
        let mut child = c.spawn().map_err(|source| NixError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        let Some(mut stdin) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NixError::Output {
                cmd,
                what: "no stdin".into(),
            });
        };
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut s);
            }
            s
        });
        let talked = talk(&mut stdin, stdout.as_mut());
        // EOF: `--import` ends, `--serve` ends between commands and fails within a NAR.
        drop(stdin);
        drop(stdout);
        let status = child.wait()?;
        let stderr = errors.join().unwrap_or_default();
        // Nix may report a failure (a full disk, say) on stderr and end with status 0 while
        // we get a broken pipe: its own words are the error either way.
        if !status.success() || (talked.is_err() && !stderr.is_empty()) {
            return Err(NixError::Failed {
                cmd,
                status: status.to_string(),
                stderr: last_lines(&stderr),
            });
        }
        talked?;
        Ok(())
    }

    /// Which of `paths` are valid in this store.
    pub fn valid_paths(
        &self,
        paths: &[String],
    ) -> Result<std::collections::HashSet<String>, NixError> {
        if paths.is_empty() {
            return Ok(Default::default());
        }
        let mut args = vec!["--check-validity", "--print-invalid"];
        args.extend(paths.iter().map(String::as_str));
        let out = self.run(&args)?;
        let invalid: std::collections::HashSet<&str> = out.lines().collect();
        Ok(paths
            .iter()
            .filter(|p| !invalid.contains(p.as_str()))
            .cloned()
            .collect())
    }

    /// Copy `paths` (a closure) into `dest` with `nix-store --export | nix-store --import`:
    /// used to set up a device store for tests and the simulator.
    pub fn copy_to(&self, dest: &NixStore, paths: &[String]) -> Result<(), NixError> {
        let mut export = self.command();
        export
            .arg("--export")
            .args(paths)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cmd = describe(&export);
        let mut child = export.spawn().map_err(|source| NixError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        let mut out = child.stdout.take().ok_or_else(|| NixError::Output {
            cmd: cmd.clone(),
            what: "no stdout".into(),
        })?;
        dest.import(|w| io::copy(&mut out, w).map(drop))?;
        let status = child.wait()?;
        if !status.success() {
            return Err(NixError::Failed {
                cmd,
                status: status.to_string(),
                stderr: String::new(),
            });
        }
        Ok(())
    }

    /// Delete paths (used to undo a partial import). Of a path that is not valid, whatever is
    /// on disk (a NAR restored halfway) is removed.
    pub fn delete(&self, paths: &[String]) -> Result<(), NixError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut args = vec!["--delete"];
        args.extend(paths.iter().map(String::as_str));
        self.run(&args).map(drop)
    }

    /// `nix-store --verify-path`: recompute the NAR hashes of `paths` and compare.
    pub fn verify_paths(&self, paths: &[String]) -> Result<(), NixError> {
        let mut args = vec!["--verify-path"];
        args.extend(paths.iter().map(String::as_str));
        self.run(&args).map(drop)
    }
}

/// Profiles: `nix-env --profile`, in the same store.
impl NixStore {
    /// Where narlink keeps its profile in this store, unless told otherwise.
    pub fn default_profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/narlink")
    }

    fn nix_env(&self, profile: &Path, args: &[&str]) -> Result<String, NixError> {
        let mut c = Command::new("nix-env");
        if let Some(uri) = &self.uri {
            c.arg("--store").arg(uri);
        }
        c.arg("--profile").arg(profile).args(args);
        let (_, out) = output(c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The generation `profile` points at and the store path it holds, read from the
    /// profile's links without running Nix (`None`: no profile, or not a Nix profile).
    pub fn live(&self, profile: &Path) -> Option<(u32, String)> {
        let link = std::fs::read_link(profile).ok()?;
        let name = link.file_name()?.to_str()?;
        let stem = profile.file_name()?.to_str()?;
        let generation = name
            .strip_prefix(stem)?
            .strip_prefix('-')?
            .strip_suffix("-link")?
            .parse()
            .ok()?;
        let target = std::fs::read_link(profile.parent()?.join(&link)).ok()?;
        Some((generation, target.to_str()?.to_owned()))
    }

    /// The profile's generations, oldest first, and which one is current.
    pub fn generations(&self, profile: &Path) -> Result<Vec<(u32, bool)>, NixError> {
        if std::fs::symlink_metadata(profile).is_err() {
            return Ok(Vec::new());
        }
        let out = self.nix_env(profile, &["--list-generations"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let n = l.split_whitespace().next()?.parse().ok()?;
                Some((n, l.contains("(current)")))
            })
            .collect())
    }

    pub fn current_generation(&self, profile: &Path) -> Result<Option<u32>, NixError> {
        Ok(self
            .generations(profile)?
            .into_iter()
            .find(|(_, c)| *c)
            .map(|(n, _)| n))
    }

    /// Make `path` the profile's new generation; returns its number.
    pub fn set_profile(&self, profile: &Path, path: &str) -> Result<u32, NixError> {
        if let Some(dir) = profile.parent() {
            std::fs::create_dir_all(dir)?;
        }
        remove_stray_links(profile)?;
        self.nix_env(profile, &["--set", path])?;
        self.current_generation(profile)?
            .ok_or_else(|| NixError::Output {
                cmd: "nix-env --list-generations".into(),
                what: "no current generation after --set".into(),
            })
    }

    pub fn switch_generation(&self, profile: &Path, generation: u32) -> Result<(), NixError> {
        remove_stray_links(profile)?;
        self.nix_env(profile, &["--switch-generation", &generation.to_string()])
            .map(drop)
    }

    /// Delete all but the newest `keep` generations (the current one always stays).
    pub fn delete_old_generations(&self, profile: &Path, keep: u32) -> Result<(), NixError> {
        if std::fs::symlink_metadata(profile).is_err() {
            return Ok(());
        }
        self.nix_env(
            profile,
            &["--delete-generations", &format!("+{}", keep.max(1))],
        )
        .map(drop)
    }

    /// `nix-store --gc`: delete every path no root keeps alive. Returns Nix's summary line.
    pub fn collect_garbage(&self) -> Result<String, NixError> {
        let mut c = self.command();
        c.arg("--gc");
        let (_, out) = output(c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok(text
            .lines()
            .rfind(|l| l.contains("freed"))
            .unwrap_or("")
            .trim()
            .to_owned())
    }
}

/// `root=` of a `local?root=DIR` URI.
fn root_of_uri(uri: &str) -> Option<PathBuf> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("root="))
        .map(PathBuf::from)
}

/// `/nix/store/<hash>-name[/sub/path]` → `/nix/store/<hash>-name`.
pub fn as_store_path(p: &str) -> Option<String> {
    let rest = p.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
    let name = rest.split('/').next()?;
    if name.len() < 34 || name.as_bytes()[32] != b'-' {
        return None;
    }
    Some(format!("{STORE_DIR}/{name}"))
}

/// The 32-character hash part of a store path's name.
pub fn hash_part(store_path: &str) -> Option<&str> {
    let name = Path::new(store_path).file_name()?.to_str()?;
    name.get(..32)
}

/// Run a Nix command to completion; a failure carries the last lines of its stderr.
fn output(mut c: Command) -> Result<(String, std::process::Output), NixError> {
    let cmd = describe(&c);
    let out = c.output().map_err(|source| NixError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(NixError::Failed {
            cmd,
            status: out.status.to_string(),
            stderr: last_lines(&out.stderr),
        });
    }
    Ok((cmd, out))
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args().take(6) {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if c.get_args().len() > 6 {
        s.push_str(" ...");
    }
    s
}

fn last_lines(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Parse `nix-store --dump-db` output: per path, lines of path, narHash (base16), narSize,
/// deriver (empty if none), reference count, references.
fn parse_dump_db(out: &str) -> Result<Vec<PathInfo>, String> {
    let mut lines = BufReader::new(out.as_bytes()).lines().map_while(Result::ok);
    let mut infos = Vec::new();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| format!("{path}: missing {what}"))
        };
        let hash = next("narHash")?;
        let nar_hash: NarHash = if hash.contains(':') {
            hash.parse()
        } else {
            format!("sha256:{hash}").parse()
        }
        .map_err(|e| format!("{path}: narHash {hash:?}: {e}"))?;
        let nar_size = next("narSize")?
            .parse()
            .map_err(|e| format!("{path}: narSize: {e}"))?;
        let deriver = Some(next("deriver")?).filter(|d| !d.is_empty());
        let n: usize = next("reference count")?
            .parse()
            .map_err(|e| format!("{path}: reference count: {e}"))?;
        let references = (0..n)
            .map(|_| next("reference"))
            .collect::<Result<Vec<_>, _>>()?;
        infos.push(PathInfo {
            path,
            nar_hash,
            nar_size,
            deriver,
            references,
        });
    }
    Ok(infos)
}

/// What Nix is told about a path added with [`NarAdder::add`].
#[derive(Clone, Copy, Debug)]
pub struct NarMeta<'a> {
    pub path: &'a str,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub references: &'a [String],
    pub deriver: Option<&'a str>,
}

/// One `nix-store --serve --write` session (see [`NixStore::add_nars`]).
pub struct NarAdder<'a> {
    to: io::BufWriter<&'a mut ChildStdin>,
    from: &'a mut ChildStdout,
}

/// Nix's serve protocol (`serve-protocol.hh`): greeting magics, and `cmdAddToStoreNar`,
/// understood since protocol 2.5 (every Nix since 2.0).
const SERVE_MAGIC_1: u64 = 0x390c_9deb;
const SERVE_MAGIC_2: u64 = 0x5452_eecb;
const SERVE_CLIENT_VERSION: u64 = 0x205;
const CMD_ADD_TO_STORE_NAR: u64 = 9;

impl NarAdder<'_> {
    fn handshake(&mut self) -> io::Result<()> {
        self.u64(SERVE_MAGIC_1)?;
        self.u64(SERVE_CLIENT_VERSION)?;
        self.to.flush()?;
        let magic = self.read_u64()?;
        let version = self.read_u64()?;
        if magic != SERVE_MAGIC_2 || version >> 8 != 2 || version & 0xff < 5 {
            return Err(io::Error::other(format!(
                "nix-store --serve: unexpected greeting {magic:#x}, protocol {version:#x} (need 2.5 or later)"
            )));
        }
        Ok(())
    }

    /// Add one path: its metadata, then exactly `meta.nar_size` bytes of NAR from `write`.
    /// Nix registers the path only if those bytes hash to `meta.nar_hash`; returns once it has.
    /// An error from `write` (or a wrong byte count) leaves the NAR unfinished: the session
    /// must then end (drop the adder), and Nix fails without registering the path.
    pub fn add(
        &mut self,
        meta: &NarMeta,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.u64(CMD_ADD_TO_STORE_NAR)?;
        self.str(meta.path)?;
        self.str(meta.deriver.unwrap_or(""))?;
        self.str(&format!("sha256:{}", meta.nar_hash.to_hex()))?;
        self.u64(meta.references.len() as u64)?;
        for r in meta.references {
            self.str(r)?;
        }
        self.u64(0)?; // registration time: now
        self.u64(meta.nar_size)?;
        self.u64(0)?; // not ultimate (built elsewhere)
        self.u64(0)?; // no signatures
        self.str("")?; // not content-addressed
        let mut nar = Exact {
            to: &mut self.to,
            left: meta.nar_size,
        };
        write(&mut nar)?;
        if nar.left != 0 {
            return Err(io::Error::other(format!(
                "{}: NAR ended {} bytes short of its narSize",
                meta.path, nar.left
            )));
        }
        self.to.flush()?;
        match self.read_u64()? {
            1 => Ok(()),
            n => Err(io::Error::other(format!(
                "{}: nix-store --serve answered {n}, not 1",
                meta.path
            ))),
        }
    }

    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.to.write_all(&v.to_le_bytes())
    }

    fn str(&mut self, s: &str) -> io::Result<()> {
        self.u64(s.len() as u64)?;
        self.to.write_all(s.as_bytes())?;
        self.to.write_all(&[0u8; 8][..(8 - s.len() % 8) % 8])
    }

    fn read_u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.from.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// A writer that takes at most `left` more bytes: a NAR longer than announced is an error
/// here, before Nix would read its tail as the next command.
struct Exact<'a, W: Write> {
    to: &'a mut W,
    left: u64,
}

impl<W: Write> Write for Exact<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other("NAR longer than its narSize"));
        }
        let n = self.to.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.to.flush()
    }
}

/// Remove the links a killed `nix-env` left beside `profile`: Nix's `makeSymlink` makes a
/// generation's link as `PROFILE-N-link.tmp-PID-RANDOM`, then renames it. Nix reads such a
/// leftover as generation N, and a `--set` of the path it holds then points the profile at it
/// (`tests/it/landing.rs`, `a_killed_nix_env_leaves_no_stray_generation_link`). One the profile
/// points at already stays: removing it would leave the profile dangling.
fn remove_stray_links(profile: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(stem)) = (profile.parent(), profile.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}-", stem.to_string_lossy());
    let live = std::fs::read_link(profile).ok();
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let stray = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once("-link.tmp-"))
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        if stray && live.as_deref().and_then(Path::file_name) != Some(name.as_os_str()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_path_parsing() {
        let p = "/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1";
        assert_eq!(as_store_path(p).as_deref(), Some(p));
        assert_eq!(as_store_path(&format!("{p}/lib/x.txt")).as_deref(), Some(p));
        assert_eq!(as_store_path("/nix/store/short-x"), None);
        assert_eq!(as_store_path("/usr/bin/ls"), None);
        assert_eq!(hash_part(p), Some("81xl50rg2nv1bisviqjjx3qsy2kvcrzi"));
        assert_eq!(
            root_of_uri("local?root=/tmp/dev"),
            Some(PathBuf::from("/tmp/dev"))
        );
        assert_eq!(root_of_uri("daemon"), None);
    }

    #[test]
    fn dump_db_parses() {
        let out = "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-app-1\n\
9f22213a5e380d8e25ef428230066d96ad0928d96512677a899a96144f73bbb3\n792\n\
/nix/store/pkzr4ql99pcxvicghg4x7amvvvkflzpl-app-1.drv\n1\n\
/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1\n";
        let v = parse_dump_db(out).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].nar_size, 792);
        assert_eq!(v[0].references.len(), 1);
        assert!(parse_dump_db("/nix/store/x\nzz\n").is_err());
    }
}
