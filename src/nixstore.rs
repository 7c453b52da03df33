//! Access to a Nix store through the `nix-store` command: closures, path metadata, import,
//! deletion. Every call of Nix lives here.
//!
//! A store is named by a URI as Nix takes it (`local?root=/srv/device`, `daemon`, ...) or by
//! nothing for the environment's default store. File contents are read from the store's
//! real location on disk (`root` + store path).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::nar::NarHash;

/// The store directory narlink works with.
pub const STORE_DIR: &str = "/nix/store";

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

    /// Import an export stream written by `write`. Nix registers each path only once its
    /// NAR has been read completely.
    pub fn import(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), NixError> {
        let mut c = self.command();
        c.arg("--import")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let cmd = describe(&c);
        let mut child = c.spawn().map_err(|source| NixError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take().ok_or_else(|| NixError::Output {
            cmd: cmd.clone(),
            what: "no stdin".into(),
        })?;
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut s);
            }
            s
        });
        let written = {
            let mut w = io::BufWriter::with_capacity(1 << 20, &mut stdin);
            write(&mut w).and_then(|()| w.flush())
        };
        drop(stdin);
        let status = child.wait()?;
        let stderr = errors.join().unwrap_or_default();
        if !status.success() {
            return Err(NixError::Failed {
                cmd,
                status: status.to_string(),
                stderr: last_lines(&stderr),
            });
        }
        written?;
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

    /// Delete paths (used to undo a partial import). Paths that are not valid are skipped.
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
        self.nix_env(profile, &["--set", path])?;
        self.current_generation(profile)?
            .ok_or_else(|| NixError::Output {
                cmd: "nix-env --list-generations".into(),
                what: "no current generation after --set".into(),
            })
    }

    pub fn switch_generation(&self, profile: &Path, generation: u32) -> Result<(), NixError> {
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

/// Writer of Nix's export format (what `nix-store --export` prints and `--import` reads).
pub mod export {
    use std::io::{self, Write};

    const EXPORT_MAGIC: u64 = 0x4558_494e;

    fn write_u64(w: &mut dyn Write, v: u64) -> io::Result<()> {
        w.write_all(&v.to_le_bytes())
    }

    fn write_str(w: &mut dyn Write, s: &str) -> io::Result<()> {
        write_u64(w, s.len() as u64)?;
        w.write_all(s.as_bytes())?;
        let pad = (8 - s.len() % 8) % 8;
        w.write_all(&[0u8; 8][..pad])
    }

    /// Begin one path's record: the caller writes its NAR bytes next.
    pub fn begin_path(w: &mut dyn Write) -> io::Result<()> {
        write_u64(w, 1)
    }

    /// End one path's record, after its NAR.
    pub fn end_path(
        w: &mut dyn Write,
        path: &str,
        references: &[String],
        deriver: Option<&str>,
    ) -> io::Result<()> {
        write_u64(w, EXPORT_MAGIC)?;
        write_str(w, path)?;
        write_u64(w, references.len() as u64)?;
        for r in references {
            write_str(w, r)?;
        }
        write_str(w, deriver.unwrap_or(""))?;
        write_u64(w, 0) // no legacy signature
    }

    /// End of the stream.
    pub fn finish(w: &mut dyn Write) -> io::Result<()> {
        write_u64(w, 0)
    }
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
