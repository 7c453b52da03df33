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

impl Counterpart {
    pub fn new(new: &NarLayout, old: &NarLayout) -> Counterpart {
        Counterpart {
            files: new
                .files()
                .map(|f| (f.offset, f.len, f.path.to_owned()))
                .collect(),
            old: old
                .files()
                .map(|f| (f.path.to_owned(), (f.offset, f.len)))
                .collect(),
            old_size: old.size(),
        }
    }

    /// Candidate reference ranges for `len` bytes at `offset` of the new NAR: around the
    /// same position of the same file in the old NAR (or around the same NAR offset), and, when
    /// the file has a counterpart, the whole old file up to 4 MiB (code moves around within a
    /// rebuilt binary). The packer keeps whichever gives the smaller delta.
    pub fn references(&self, offset: u64, len: u32) -> Vec<(u64, u32)> {
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
        if let Some((centre, qo, ql)) = same_file {
            let (mut s, mut e) = (qo.saturating_sub(MARGIN), qo + ql + MARGIN);
            if e - s > WINDOW {
                s = centre.saturating_sub(WINDOW / 2).max(s);
                e = s + WINDOW;
            }
            if e - s > ranges[0].1 - ranges[0].0 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
