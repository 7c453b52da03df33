//! narlink's NAR writer and parser against real Nix.
//!
//! Every case scans a path with [`NarLayout`] and checks, against `nix-store --dump` of the same
//! path, byte for byte: the sequential reader (large and odd-sized reads), `dump()`, random and
//! boundary `read_at` slices, `hash_path()`, the file index, `validate()` of Nix's bytes, and
//! `restore()` of Nix's bytes followed by another `nix-store --dump` of the restored tree.
//! Store paths are also checked against the narHash/narSize in Nix's database.
//!
//! These tests need `nix-store` on PATH and fail (they do not skip) without it. The per-path
//! report is printed (see it with `-- --nocapture`) and written to
//! `$CARGO_TARGET_TMPDIR/nar_dump_report.txt`.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use narlink::nar::{self, NarError, NarHash, NarLayout, NarSummary};
use sha2::{Digest, Sha256};

/// NARs up to this size are held in memory once; larger ones are streamed from `nix-store`.
const MEM_LIMIT: u64 = 32 << 20;
const BUF: usize = 1 << 20;

static REPORT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn report(line: String) {
    println!("{line}");
    let mut r = REPORT.lock().unwrap_or_else(|p| p.into_inner());
    r.push(line);
    let mut all = r.clone();
    all.sort();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nar_dump_report.txt");
    let _ = fs::write(file, all.join("\n") + "\n");
}

/// Panics with instructions if `nix-store` cannot be run.
fn require_nix() {
    match Command::new("nix-store").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`nix-store --version` failed ({}): {}. These tests compare against real Nix; \
             fix the Nix installation.",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `nix-store` ({e}). These tests compare narlink's NAR code byte for byte \
             with `nix-store --dump` and cannot run without it: install Nix (2.8 or later) and \
             put nix-store on PATH."
        ),
    }
}

fn nix_command() -> Command {
    let mut c = Command::new("nix-store");
    c.env("NIX_REMOTE", "local");
    c
}

/// Streaming stdout of `nix-store --dump PATH`; reports a non-zero exit as an error at EOF.
struct NixDump {
    path: PathBuf,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    finished: bool,
}

impl NixDump {
    fn spawn(path: &Path) -> Result<NixDump, String> {
        let mut child = nix_command()
            .arg("--dump")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nix-store --dump {}: {e}", path.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr = child.stderr.take();
        Ok(NixDump {
            path: path.to_path_buf(),
            child,
            stdout,
            stderr,
            finished: false,
        })
    }
}

impl Read for NixDump {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.finished {
            self.finished = true;
            let mut err = String::new();
            if let Some(mut e) = self.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "nix-store --dump {} failed ({status}): {}",
                    self.path.display(),
                    err.trim()
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for NixDump {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where Nix's NAR of a path comes from: held in memory, or a fresh `nix-store --dump` each time.
enum Source {
    Mem(Vec<u8>),
    Spawn(PathBuf),
}

impl Source {
    fn open(&self) -> Result<Box<dyn Read + '_>, String> {
        Ok(match self {
            Source::Mem(v) => Box::new(&v[..]),
            Source::Spawn(p) => Box::new(NixDump::spawn(p)?),
        })
    }
}

/// A `Write` that checks everything written against the bytes of a reader (Nix's dump), hashes
/// them and captures chosen windows of them.
struct Expect<R> {
    nix: R,
    pos: u64,
    hasher: Sha256,
    scratch: Vec<u8>,
    windows: Vec<(u64, usize)>,
    captured: Vec<Vec<u8>>,
}

impl<R: Read> Expect<R> {
    fn new(nix: R, windows: &[(u64, usize)]) -> Self {
        Expect {
            nix,
            pos: 0,
            hasher: Sha256::new(),
            scratch: vec![0u8; BUF],
            windows: windows.to_vec(),
            captured: windows
                .iter()
                .map(|&(_, l)| Vec::with_capacity(l))
                .collect(),
        }
    }

    /// Checks that Nix's dump ends where ours did; returns (length, sha256, captured windows).
    fn finish(mut self) -> Result<(u64, NarHash, Vec<Vec<u8>>), String> {
        let mut one = [0u8; 1];
        match fill(&mut self.nix, &mut one) {
            Ok(0) => {}
            Ok(_) => {
                return Err(format!(
                    "ours ends at byte {} but nix's dump is longer",
                    self.pos
                ))
            }
            Err(e) => return Err(format!("reading nix's dump: {e}")),
        }
        Ok((
            self.pos,
            NarHash(self.hasher.finalize().into()),
            self.captured,
        ))
    }
}

impl<R: Read> Write for Expect<R> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        for ours in data.chunks(BUF) {
            let theirs = &mut self.scratch[..ours.len()];
            let n = fill(&mut self.nix, theirs)?;
            let common = n.min(ours.len());
            if let Some(i) = (0..common).find(|&i| ours[i] != theirs[i]) {
                return Err(io::Error::other(format!(
                    "first difference at NAR byte {}: ours {:#04x}, nix {:#04x}",
                    self.pos + i as u64,
                    ours[i],
                    theirs[i]
                )));
            }
            if n < ours.len() {
                return Err(io::Error::other(format!(
                    "nix's dump ends at byte {} but ours goes on",
                    self.pos + n as u64
                )));
            }
            self.hasher.update(ours);
            let (start, end) = (self.pos, self.pos + ours.len() as u64);
            for (&(off, len), cap) in self.windows.iter().zip(&mut self.captured) {
                let (ws, we) = (off, off + len as u64);
                if ws < end && we > start {
                    let a = ws.max(start) - start;
                    let b = we.min(end) - start;
                    cap.extend_from_slice(&ours[a as usize..b as usize]);
                }
            }
            self.pos = end;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// splitmix64: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: &[u8]) -> Rng {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for &b in seed {
            s = (s ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(s)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `read_at` probes: random slices plus slices across the start and end of files.
fn windows(layout: &NarLayout, rng: &mut Rng) -> Vec<(u64, usize)> {
    let size = layout.size();
    let mut w = vec![
        (0, size.min(100) as usize),
        (size, 0),
        (size - size.min(100), size.min(100) as usize),
    ];
    for _ in 0..32 {
        let off = rng.below(size + 1);
        let len = rng.below(70_000).min(size - off);
        w.push((off, len as usize));
    }
    for f in layout.files().take(40) {
        let a = f.offset.saturating_sub(40);
        let b = (f.offset + f.len + 40).min(size);
        if b - a <= 70_000 {
            w.push((a, (b - a) as usize));
        } else {
            w.push((a, 70_000));
            w.push((b - 70_000, 70_000));
        }
    }
    w
}

fn stream_reader(
    mut r: impl Read,
    out: &mut impl Write,
    rng: Option<&mut Rng>,
) -> Result<(), String> {
    let mut buf = vec![0u8; BUF];
    let mut rng = rng;
    loop {
        let want = match rng.as_mut() {
            Some(rng) => 1 + rng.below(9000) as usize,
            None => BUF,
        };
        let n = r
            .read(&mut buf[..want])
            .map_err(|e| format!("reader: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])
            .map_err(|e| format!("reader output differs: {e}"))?;
    }
}

/// Compare everything about one path with Nix; returns the report line.
fn check_path(label: &str, path: &Path, scratch: &Path) -> Result<String, String> {
    let t0 = Instant::now();
    let layout = NarLayout::scan(path).map_err(|e| format!("scan: {e}"))?;
    let size = layout.size();
    let src = if size <= MEM_LIMIT {
        let mut v = Vec::new();
        NixDump::spawn(path)?
            .read_to_end(&mut v)
            .map_err(|e| e.to_string())?;
        if v.len() as u64 != size {
            return Err(format!("narSize: ours {size}, nix {}", v.len()));
        }
        Source::Mem(v)
    } else {
        Source::Spawn(path.to_path_buf())
    };
    let mut rng = Rng::new(path.as_os_str().as_bytes());
    let probes = windows(&layout, &mut rng);

    // Sequential reader, 1 MiB reads.
    let mut exp = Expect::new(src.open()?, &probes);
    stream_reader(layout.reader(), &mut exp, None)?;
    let (nix_len, nix_hash, captured) = exp.finish()?;
    if nix_len != size {
        return Err(format!("narSize: ours {size}, nix {nix_len}"));
    }
    let want = NarSummary {
        nar_hash: nix_hash,
        nar_size: nix_len,
    };

    // Sequential reader, odd small reads.
    if size <= MEM_LIMIT {
        let mut exp = Expect::new(src.open()?, &[]);
        stream_reader(layout.reader(), &mut exp, Some(&mut rng))?;
        exp.finish()?;
    }

    // dump() and hash_path().
    let mut exp = Expect::new(src.open()?, &[]);
    let got = nar::dump(path, &mut exp).map_err(|e| format!("dump: {e}"))?;
    exp.finish()?;
    if got != want {
        return Err(format!("dump summary {got:?}, nix {want:?}"));
    }
    let got = nar::hash_path(path).map_err(|e| format!("hash_path: {e}"))?;
    if got != want {
        return Err(format!("hash_path {got:?}, nix {want:?}"));
    }

    // read_at against the windows captured from nix's bytes.
    for (&(off, len), expected) in probes.iter().zip(&captured) {
        let mut buf = vec![0u8; len];
        layout
            .read_at(off, &mut buf)
            .map_err(|e| format!("read_at({off}, {len}): {e}"))?;
        if &buf != expected {
            return Err(format!("read_at({off}, {len}) differs from nix"));
        }
    }

    // The file index points at the right bytes.
    for (i, f) in layout.files().enumerate() {
        let mut len_le = [0u8; 8];
        layout
            .read_at(f.offset - 8, &mut len_le)
            .map_err(|e| e.to_string())?;
        if u64::from_le_bytes(len_le) != f.len {
            return Err(format!(
                "files(): {} length field mismatch",
                f.path.display()
            ));
        }
        if i < 20 && f.len <= 1 << 20 {
            let on_disk = if f.path.as_os_str().is_empty() {
                path.to_path_buf()
            } else {
                path.join(f.path)
            };
            let disk = fs::read(&on_disk).map_err(|e| format!("{}: {e}", on_disk.display()))?;
            let mut ours = vec![0u8; f.len as usize];
            layout
                .read_at(f.offset, &mut ours)
                .map_err(|e| e.to_string())?;
            if disk != ours {
                return Err(format!("files(): contents of {} differ", f.path.display()));
            }
            let exec = fs::symlink_metadata(&on_disk)
                .map_err(|e| e.to_string())?
                .permissions()
                .mode()
                & 0o100
                != 0;
            if exec != f.executable {
                return Err(format!("files(): executable flag of {}", f.path.display()));
            }
        }
    }

    // validate() accepts nix's bytes.
    let got = nar::validate(src.open()?).map_err(|e| format!("validate(nix dump): {e}"))?;
    if got != want {
        return Err(format!("validate summary {got:?}, nix {want:?}"));
    }

    // restore() nix's bytes, then nix dumps the restored tree identically.
    let dest = scratch.join("restored");
    let got = nar::restore(src.open()?, &dest).map_err(|e| format!("restore: {e}"))?;
    if got != want {
        return Err(format!("restore summary {got:?}, nix {want:?}"));
    }
    let mut exp = Expect::new(src.open()?, &[]);
    stream_reader(NixDump::spawn(&dest)?, &mut exp, None)
        .map_err(|e| format!("nix dump of restored tree: {e}"))?;
    exp.finish()
        .map_err(|e| format!("nix dump of restored tree: {e}"))?;
    remove(&dest);

    // Store paths: Nix's database agrees.
    let mut db = "";
    if path.starts_with("/nix/store") {
        let q = |what: &str| {
            nix_command()
                .args(["-q", what])
                .arg(path)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        if let (Some(h), Some(s)) = (q("--hash"), q("--size")) {
            if h != want.nar_hash.to_string() || s != want.nar_size.to_string() {
                return Err(format!(
                    "nix db says {h} {s}, we say {} {}",
                    want.nar_hash, want.nar_size
                ));
            }
            if h.parse::<NarHash>().map_err(|e| e.to_string())? != want.nar_hash {
                return Err("NarHash::from_str of nix's hash".into());
            }
            db = " (= nix db narHash)";
        }
    }

    Ok(format!(
        "ok  {label:<12} {:<60} {size:>10} B {:>5} files {:>6} ms  {}{db}",
        path.display(),
        layout.files().len(),
        t0.elapsed().as_millis(),
        want.nar_hash,
    ))
}

fn remove(p: &Path) {
    if let Ok(m) = fs::symlink_metadata(p) {
        if m.is_dir() {
            let _ = fs::remove_dir_all(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
}

/// Check all cases, report each, and fail listing every mismatch.
fn run(cases: &[(String, PathBuf)], min: usize) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (label, path) in cases {
        match check_path(label, path, scratch.path()) {
            Ok(line) => report(line),
            Err(e) => {
                report(format!("FAIL {label:<12} {}: {e}", path.display()));
                failures.push(format!("{}: {e}", path.display()));
            }
        }
        remove(&scratch.path().join("restored"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} paths differ from nix-store --dump:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        cases.len() >= min,
        "only {} paths were compared, want at least {min} (are the Debian paths missing?)",
        cases.len()
    );
}

/// Every `step`-th entry (in byte order) of `dir` that passes `keep`.
fn every_nth(dir: &str, step: usize, keep: impl Fn(&fs::Metadata) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    names
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| keep(&m)))
        .step_by(step)
        .collect()
}

#[test]
fn system_paths_match_nix() {
    require_nix();
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    let mut add = |label: &str, p: PathBuf| {
        if fs::symlink_metadata(&p).is_ok() && !cases.iter().any(|(_, q)| *q == p) {
            cases.push((label.to_string(), p));
        }
    };
    for p in [
        "/usr/bin/ls",
        "/usr/bin/env",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libz.so",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
    ] {
        add("debian", PathBuf::from(p));
    }
    let small = |m: &fs::Metadata| !m.is_dir() && m.len() < 16 << 20;
    for p in every_nth("/usr/bin", 67, small) {
        add("usr/bin", p);
    }
    for p in every_nth("/usr/lib/x86_64-linux-gnu", 61, |m| {
        m.is_file() && m.len() < 16 << 20
    }) {
        add("usr/lib", p);
    }
    for p in every_nth("/usr/lib/x86_64-linux-gnu", 97, |m| {
        m.file_type().is_symlink()
    }) {
        add("usr/lib", p);
    }
    for d in [
        "engines-3",
        "ossl-modules",
        "sasl2",
        "ldscripts",
        "gconv",
        "pkgconfig",
    ] {
        add(
            "usr/lib dir",
            Path::new("/usr/lib/x86_64-linux-gnu").join(d),
        );
    }
    for d in [
        "json",
        "email",
        "importlib",
        "xml",
        "urllib",
        "logging",
        "concurrent",
        "unittest",
        "asyncio",
        "encodings",
        "http",
        "html",
        "collections",
        "sqlite3",
        "wsgiref",
        "zoneinfo",
        "tomllib",
        "re",
        "ctypes",
    ] {
        add("python", Path::new("/usr/lib/python3.11").join(d));
    }
    // The whole standard library: ~1500 entries, larger than MEM_LIMIT, so streamed.
    add("python all", PathBuf::from("/usr/lib/python3.11"));
    if let Ok(rd) = fs::read_dir("/nix/store") {
        let mut store: Vec<_> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(".lock") && !p.ends_with(".links"))
            .collect();
        store.sort();
        for p in store.into_iter().take(10) {
            add("nix store", p);
        }
    }
    run(&cases, 50);
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A tree with every corner case we could think of.
fn build_crafted(root: &Path) {
    let mut rng = Rng::new(b"crafted");
    let mkdir = |p: &Path| fs::create_dir_all(p).unwrap();
    mkdir(root);

    write(&root.join("empty-file"), b"", 0o644);
    mkdir(&root.join("empty-dir"));
    mkdir(&root.join("nested-empty/a/b/c"));

    let lengths = root.join("lengths");
    mkdir(&lengths);
    for len in (0..=17).chain([4095, 4096, 4097, 65_539, (1 << 20) + 1, (3 << 20) + 5]) {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        write(&lengths.join(format!("len-{len}")), &data, 0o644);
    }

    let perms = root.join("perms");
    mkdir(&perms);
    for (n, mode) in [
        ("exec-755", 0o755),
        ("owner-x-700", 0o700),
        ("owner-x-only-100", 0o100),
        ("group-x-only-654", 0o654),
        ("other-x-only-601", 0o601),
        ("read-only-444", 0o444),
        ("setuid-4755", 0o4755),
        ("sticky-1644", 0o1644),
        ("no-perms-000", 0o000),
    ] {
        write(
            &perms.join(n),
            format!("#!/bin/sh\necho {n}\n").as_bytes(),
            mode,
        );
    }
    mkdir(&perms.join("ro-dir"));
    write(&perms.join("ro-dir/inside"), b"x", 0o644);
    fs::set_permissions(perms.join("ro-dir"), fs::Permissions::from_mode(0o555)).unwrap();

    let links = root.join("links");
    mkdir(&links);
    symlink("../lengths/len-3", links.join("rel")).unwrap();
    symlink("/usr/bin/ls", links.join("abs")).unwrap();
    symlink("does/not/exist", links.join("dangling")).unwrap();
    symlink("../lengths", links.join("dirlink")).unwrap();
    symlink("loop", links.join("loop")).unwrap();
    symlink("..", links.join("dotdot")).unwrap();
    symlink("lengths/", links.join("trailing-slash")).unwrap();
    symlink("café/日本/\u{1f980}", links.join("unicode-target")).unwrap();
    symlink(name(b"bad-\xff-utf8"), links.join("binary-target")).unwrap();
    symlink("a/".repeat(2000), links.join("long-target")).unwrap();

    let names = root.join("names");
    mkdir(&names);
    let long = vec![b'x'; 255];
    for n in [
        "café".as_bytes(),
        "cafe\u{301}".as_bytes(),
        "日本語".as_bytes(),
        "\u{1f980} crab".as_bytes(),
        b"invalid-\xff\xfe-utf8",
        b"latin1-caf\xe9",
        b"\x01control",
        b"line\nbreak",
        b"tab\there",
        b"back\\slash",
        b"quote\"'",
        b" leading space",
        b"trailing space ",
        b"-dash",
        b".hidden",
        b"..dots",
        &long,
    ] {
        write(&names.join(name(n)), n, 0o644);
    }

    // Byte order differs from any locale's collation: upper case first, punctuation scattered,
    // "10" before "9", multi-byte UTF-8 after ASCII.
    let sorting = root.join("sorting");
    mkdir(&sorting);
    for n in [
        "B", "a", "Z", "A", "b", "_under", "~tilde", "a-b", "a_b", "ab", "a.b", "aB", "Ab", "10",
        "9", "1", "ä", "z", "é", "Éclair", "eclair", "e\u{301}", "ß", "ss", "Ω", "ω",
    ] {
        write(&sorting.join(n), n.as_bytes(), 0o644);
    }
    mkdir(&sorting.join("a.dir"));
    write(&sorting.join("a.dir/x"), b"x", 0o644);

    let hard = root.join("hardlinks");
    mkdir(&hard);
    write(&hard.join("one"), b"shared inode", 0o755);
    fs::hard_link(hard.join("one"), hard.join("two")).unwrap();

    let mut deep = root.join("deep");
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    mkdir(&deep);
    write(&deep.join("bottom"), b"deep down", 0o644);
}

#[test]
fn crafted_tree_matches_nix() {
    require_nix();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("crafted");
    build_crafted(&root);
    let mut cases: Vec<(String, PathBuf)> = vec![("crafted".into(), root.clone())];
    for (label, rel) in [
        ("empty file", "empty-file"),
        ("empty dir", "empty-dir"),
        ("empty dirs", "nested-empty"),
        ("lengths", "lengths"),
        ("zero len", "lengths/len-0"),
        ("perms", "perms"),
        ("exec", "perms/exec-755"),
        ("not exec", "perms/group-x-only-654"),
        ("links", "links"),
        ("rel link", "links/rel"),
        ("abs link", "links/abs"),
        ("dangling", "links/dangling"),
        ("dir link", "links/dirlink"),
        // A trailing slash makes lstat follow the link; nix-store does the same.
        ("dir link/", "links/dirlink/"),
        ("names", "names"),
        ("sorting", "sorting"),
        ("hardlinks", "hardlinks"),
        ("deep", "deep"),
    ] {
        cases.push((label.into(), root.join(rel)));
    }
    run(&cases, 18);

    // Concurrent read_at on one layout from two threads.
    let layout = NarLayout::scan(&root).unwrap();
    let mut whole = Vec::new();
    layout.reader().read_to_end(&mut whole).unwrap();
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let (layout, whole) = (&layout, &whole);
            s.spawn(move || {
                let mut rng = Rng::new(&[t]);
                for _ in 0..2000 {
                    let off = rng.below(whole.len() as u64) as usize;
                    let len = (rng.below(20_000) as usize).min(whole.len() - off);
                    let mut buf = vec![0u8; len];
                    layout.read_at(off as u64, &mut buf).unwrap();
                    assert_eq!(buf, &whole[off..off + len], "read_at({off}, {len})");
                }
            });
        }
    });
}

#[test]
fn file_over_100_mib_matches_nix() {
    require_nix();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("big");
    fs::create_dir(&root).unwrap();
    {
        let mut rng = Rng::new(b"big");
        let mut f = io::BufWriter::new(fs::File::create(root.join("payload.bin")).unwrap());
        let mut chunk = vec![0u8; BUF];
        for _ in 0..110 {
            rng.fill(&mut chunk);
            f.write_all(&chunk).unwrap();
        }
        // Not a multiple of 8, so the contents are followed by padding.
        f.write_all(b"tail").unwrap();
        f.flush().unwrap();
    }
    write(&root.join("zz-after"), b"after the big one", 0o755);
    let layout = NarLayout::scan(&root).unwrap();
    assert!(layout.size() > 110 << 20);
    assert!(
        layout.size() > MEM_LIMIT,
        "the big case must take the streaming path"
    );
    run(&[("110 MiB".into(), root)], 1);
}

#[test]
fn unsupported_file_types_fail_like_nix() {
    require_nix();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("with-fifo");
    fs::create_dir(&root).unwrap();
    write(&root.join("a"), b"a", 0o644);
    let fifo = root.join("pipe");
    let st = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo failed");
    let nix = nix_command().arg("--dump").arg(&root).output().unwrap();
    assert!(!nix.status.success(), "nix-store --dump accepted a FIFO");
    let err = NarLayout::scan(&root).unwrap_err();
    assert!(
        matches!(err, NarError::UnsupportedFileType { kind: "FIFO", ref path } if *path == fifo),
        "{err}"
    );
    assert!(nar::dump(&root, io::sink()).is_err());
    report(format!(
        "ok  {:<12} {:<60} both reject: {err}",
        "fifo",
        root.display()
    ));
}
