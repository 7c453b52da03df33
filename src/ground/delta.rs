//! Choosing what a new chunk is compressed against: the same place in the previous version of
//! the same package, which the device holds. The device reads the reference from its own
//! store, so a delta costs no uplink beyond its payload and a few bytes of manifest.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::nar::NarLayout;

/// Bytes of context on each side of a chunk's counterpart in the reference.
pub const MARGIN: u64 = 64 << 10;
/// Largest reference: the whole counterpart file when it fits (code moves around within a
/// rebuilt binary), else this much around the chunk's counterpart.
const WINDOW: u64 = narlink_protocol::manifest::MAX_REFERENCE as u64;

/// Windows into a large counterpart file start at multiples of this.
const QUANTUM: u64 = 1 << 20;

/// Output names Nix appends to a path's name.
const OUTPUTS: [&str; 9] = [
    "bin", "dev", "lib", "man", "doc", "info", "out", "debug", "static",
];

/// The package name of a store path: its name up to the version, plus the output name if
/// any (`<hash>-openssl-3.0.13-dev` → `openssl-dev`, `<hash>-zlib-1.2.13-p1` → `zlib`).
pub fn pname(store_path: &str) -> String {
    let name = store_path.rsplit('/').next().unwrap_or("");
    let parts: Vec<&str> = name.get(33..).unwrap_or("").split('-').collect();
    let version = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(parts.len());
    let mut out = parts[..version].join("-");
    if let Some(last) = parts
        .last()
        .filter(|l| version < parts.len() && OUTPUTS.contains(l))
    {
        out.push('-');
        out.push_str(last);
    }
    out
}

/// The name of a store path without its hash.
fn name(store_path: &str) -> &str {
    store_path
        .rsplit('/')
        .next()
        .unwrap_or("")
        .get(33..)
        .unwrap_or("")
}

/// Which on-board path a new path is made a delta of: one with the very same name (a rebuild
/// with new dependencies), else one with the same package name (a version bump; the greatest
/// name, as a stand-in for the newest version).
pub struct Predecessors {
    by_name: HashMap<String, String>,
    by_pname: HashMap<String, String>,
}

impl Predecessors {
    pub fn new<'a>(on_board: impl IntoIterator<Item = &'a str>) -> Predecessors {
        let mut by_name = HashMap::new();
        let mut best: BTreeMap<String, String> = BTreeMap::new();
        for p in on_board {
            by_name.insert(name(p).to_owned(), p.to_owned());
            let e = best.entry(pname(p)).or_default();
            if name(e) < name(p) {
                *e = p.to_owned();
            }
        }
        Predecessors {
            by_name,
            by_pname: best.into_iter().collect(),
        }
    }

    pub fn of(&self, new: &str) -> Option<&String> {
        self.by_name
            .get(name(new))
            .or_else(|| self.by_pname.get(&pname(new)))
            .filter(|q| q.as_str() != new)
    }
}

/// Maps byte ranges of a new NAR to ranges of its predecessor's NAR.
pub struct Counterpart {
    /// Regular files of the new NAR: (offset, len, relative path), sorted by offset.
    files: Vec<(u64, u64, PathBuf)>,
    /// Regular files of the predecessor by relative path: (offset, len).
    old: HashMap<PathBuf, (u64, u64)>,
    old_size: u64,
}

/// A relative path with its version numbers masked (`scipy-1.11.4.dist-info/RECORD` →
/// `scipy-#.dist-info/RECORD`), to find a file's counterpart when a version is part of
/// its path.
fn masked(p: &std::path::Path) -> String {
    let mut out = String::new();
    let mut in_number = false;
    let s = p.to_string_lossy();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let numeric = c.is_ascii_digit()
            || (in_number && c == '.' && chars.peek().is_some_and(|n| n.is_ascii_digit()));
        if !numeric {
            out.push(c);
        } else if !in_number {
            out.push('#');
        }
        in_number = numeric;
    }
    out
}

impl Counterpart {
    pub fn new(new: &NarLayout, old: &NarLayout) -> Counterpart {
        let mut old_files: HashMap<PathBuf, (u64, u64)> = old
            .files()
            .map(|f| (f.path.to_owned(), (f.offset, f.len)))
            .collect();
        // Files whose exact path is gone: match them by their path with versions masked,
        // when that names one old file only.
        let mut by_mask: HashMap<String, Option<(u64, u64)>> = HashMap::new();
        for (p, at) in &old_files {
            by_mask
                .entry(masked(p))
                .and_modify(|e| *e = None)
                .or_insert(Some(*at));
        }
        let files: Vec<(u64, u64, PathBuf)> = new
            .files()
            .map(|f| (f.offset, f.len, f.path.to_owned()))
            .collect();
        for (_, _, p) in &files {
            if !old_files.contains_key(p) {
                if let Some(Some(at)) = by_mask.get(&masked(p)) {
                    old_files.insert(p.clone(), *at);
                }
            }
        }
        Counterpart {
            files,
            old: old_files,
            old_size: old.size(),
        }
    }

    /// Candidate reference ranges for `len` bytes at `offset` of the new NAR: around the
    /// same position of the same file in the old NAR (or around the same NAR offset); around
    /// where its content was `located`, if elsewhere; and, when the files it overlaps have
    /// counterparts, those whole old files up to 4 MiB (code moves around within a rebuilt
    /// binary, members within an archive). The packer keeps whichever gives the smallest delta.
    pub fn references(&self, offset: u64, len: u32, located: Option<u64>) -> Vec<(u64, u32)> {
        let i = self.files.partition_point(|(o, _, _)| *o <= offset);
        let same_file = i
            .checked_sub(1)
            .and_then(|i| self.files.get(i))
            .filter(|(o, l, _)| offset < o + l.max(&1))
            .and_then(|(o, _, p)| {
                self.old
                    .get(p)
                    .map(|(qo, ql)| (qo + (offset - o).min(*ql), *qo, *ql))
            });
        let centre = same_file.map_or(offset, |(c, _, _)| c);
        let mut ranges = vec![(
            centre.saturating_sub(MARGIN),
            centre + u64::from(len) + MARGIN,
        )];
        // Where its content was found, if that is elsewhere.
        if let Some(l) = located.filter(|l| l.abs_diff(centre) > MARGIN / 2) {
            ranges.push((l.saturating_sub(MARGIN), l + u64::from(len) + MARGIN));
        }
        // The old counterparts of every file the chunk overlaps, as one span.
        let end = offset + u64::from(len);
        let span = self.files[i.saturating_sub(1)..]
            .iter()
            .take_while(|(o, _, _)| *o < end)
            .filter(|(o, l, _)| o + l > offset)
            .filter_map(|(_, _, p)| self.old.get(p))
            .fold(None, |acc: Option<(u64, u64)>, (qo, ql)| {
                let (s, e) = acc.unwrap_or((*qo, qo + ql));
                Some((s.min(*qo), e.max(qo + ql)))
            });
        if let Some((qs, qe)) = span {
            let (mut s, mut e) = (qs.saturating_sub(MARGIN), qe + MARGIN);
            if e - s > WINDOW {
                // Aligned, so that neighbouring chunks share one window (prepared once).
                s = (centre.saturating_sub(WINDOW / 2) / QUANTUM * QUANTUM).max(s);
                e = s + WINDOW;
            }
            if e - s > ranges[0].1 - ranges[0].0 {
                // A window that holds where the content was found makes that one redundant.
                if ranges.len() == 2 && s <= ranges[1].0 && ranges[1].1 <= e {
                    ranges.pop();
                }
                ranges.push((s, e));
            }
        }
        ranges
            .into_iter()
            .filter_map(|(s, e)| {
                let (s, e) = (s.min(self.old_size), e.min(self.old_size));
                let n = e.checked_sub(s)?;
                (n > 0).then_some((s, n.min(WINDOW) as u32))
            })
            .collect()
    }
}

/// Where the bytes of a new chunk sit in the predecessor's NAR, wherever they moved: a
/// sample of content-defined anchors (a gear rolling hash, as FastCDC uses, hitting a mask)
/// of the predecessor, and a vote over the anchors a chunk shares with it.
pub struct Anchors {
    at: HashMap<u64, u64>,
}

/// One anchor per 512 bytes on average.
const ANCHOR_MASK: u64 = (1 << 9) - 1;

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    while i < 256 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear_table();

/// Calls `f(position after the anchor, anchor hash)` for every anchor of `data`, continuing
/// the rolling hash `h` (which covers the last 64 bytes).
fn anchors(data: &[u8], h: &mut u64, mut f: impl FnMut(usize, u64)) {
    for (i, &b) in data.iter().enumerate() {
        *h = (*h << 1).wrapping_add(GEAR[b as usize]);
        if *h & ANCHOR_MASK == 0 {
            f(i + 1, *h);
        }
    }
}

impl Anchors {
    /// Sample the `size` bytes that `read(offset, buf)` gives.
    pub fn build<E>(
        size: u64,
        mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<Anchors, E> {
        let mut at = HashMap::new();
        let mut buf = vec![0u8; 4 << 20];
        let (mut offset, mut h) = (0u64, 0u64);
        while offset < size {
            let n = (size - offset).min(buf.len() as u64) as usize;
            read(offset, &mut buf[..n])?;
            anchors(&buf[..n], &mut h, |i, a| {
                at.entry(a).or_insert(offset + i as u64);
            });
            offset += n as u64;
        }
        Ok(Anchors { at })
    }

    /// The predecessor offset where `chunk` most likely starts, if any anchor matches.
    pub fn locate(&self, chunk: &[u8]) -> Option<u64> {
        let mut votes: HashMap<i64, u32> = HashMap::new();
        let mut h = 0u64;
        anchors(chunk, &mut h, |i, a| {
            // The first 64 bytes' anchors depend on the bytes before the chunk.
            if i < 64 {
                return;
            }
            if let Some(&o) = self.at.get(&a) {
                *votes.entry(o as i64 - i as i64).or_default() += 1;
            }
        });
        votes
            .into_iter()
            .max_by_key(|&(start, n)| (n, std::cmp::Reverse(start)))
            .map(|(start, _)| start.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_masked() {
        use std::path::Path;
        assert_eq!(
            masked(Path::new("lib/scipy-1.11.4.dist-info/RECORD")),
            "lib/scipy-#.dist-info/RECORD"
        );
        assert_eq!(masked(Path::new("lib/libfoo.so.1.2")), "lib/libfoo.so.#");
        assert_eq!(masked(Path::new("python3.11/x")), "python#/x");
    }

    #[test]
    fn package_names() {
        assert_eq!(
            pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-openssl-3.0.13-dev"),
            "openssl-dev"
        );
        assert_eq!(
            pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-zlib-1.2.13-p1"),
            "zlib"
        );
        assert_eq!(
            pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-hello"),
            "hello"
        );
        assert_eq!(
            pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-demo-app-2"),
            "demo-app"
        );
        let p = Predecessors::new([
            "/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-demo-app-1",
            "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-demo-app-2",
            "/nix/store/0cqgd6x17rc0prfrprldh1yhs9ibvln5-part-21",
            "/nix/store/19zbaaizysb2fl1g3rl2fyywagn0ic5f-part-9",
        ]);
        let new = |n: &str| format!("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-{n}");
        assert_eq!(
            p.of(&new("demo-app-3")).unwrap(),
            "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-demo-app-2"
        );
        assert_eq!(
            p.of(&new("part-21")).unwrap(),
            "/nix/store/0cqgd6x17rc0prfrprldh1yhs9ibvln5-part-21"
        );
    }
}
