//! Choosing what a new chunk is compressed against: the same place in the previous version of
//! the same package, which the device holds. The device reads the reference from its own
//! store, so a delta costs no uplink beyond its payload and a few bytes of manifest.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::nar::NarLayout;

/// Bytes of context on each side of a chunk's counterpart in the reference.
pub const MARGIN: u64 = 64 << 10;

/// Output names Nix appends to a path's name.
const OUTPUTS: [&str; 9] = ["bin", "dev", "lib", "man", "doc", "info", "out", "debug", "static"];

/// The package name of a store path: its name up to the version, plus the output name if
/// any (`<hash>-openssl-3.0.13-dev` → `openssl-dev`, `<hash>-zlib-1.2.13-p1` → `zlib`).
pub fn pname(store_path: &str) -> String {
    let name = store_path.rsplit('/').next().unwrap_or("");
    let parts: Vec<&str> = name.get(33..).unwrap_or("").split('-').collect();
    let version = parts.iter().position(|p| p.starts_with(|c: char| c.is_ascii_digit())).unwrap_or(parts.len());
    let mut out = parts[..version].join("-");
    if let Some(last) = parts.last().filter(|l| version < parts.len() && OUTPUTS.contains(l)) {
        out.push('-');
        out.push_str(last);
    }
    out
}

/// For each package name, the on-board path to make deltas against (the greatest name, as a
/// stand-in for the newest version).
pub fn predecessors<'a>(on_board: impl IntoIterator<Item = &'a str>) -> HashMap<String, String> {
    let mut best: BTreeMap<String, String> = BTreeMap::new();
    for p in on_board {
        let name = p.rsplit('/').next().unwrap_or("").get(33..).unwrap_or("").to_owned();
        let e = best.entry(pname(p)).or_default();
        if e.rsplit('/').next().unwrap_or("").get(33..).unwrap_or("") < name.as_str() {
            *e = p.to_owned();
        }
    }
    best.into_iter().collect()
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
            files: new.files().map(|f| (f.offset, f.len, f.path.to_owned())).collect(),
            old: old.files().map(|f| (f.path.to_owned(), (f.offset, f.len))).collect(),
            old_size: old.size(),
        }
    }

    /// The reference range for `len` bytes at `offset` of the new NAR: around the same
    /// position of the same file in the old NAR, or around the same NAR offset.
    pub fn reference(&self, offset: u64, len: u32) -> Option<(u64, u32)> {
        let i = self.files.partition_point(|(o, _, _)| *o <= offset);
        let same_file = i
            .checked_sub(1)
            .and_then(|i| self.files.get(i))
            .filter(|(o, l, _)| offset < o + l.max(&1))
            .and_then(|(o, _, p)| self.old.get(p).map(|(qo, _)| qo + (offset - o)));
        let centre = same_file.unwrap_or(offset);
        let start = centre.saturating_sub(MARGIN).min(self.old_size);
        let end = (centre + u64::from(len) + MARGIN).min(self.old_size);
        let n = end.checked_sub(start)?;
        (n > 0).then_some((start, n.min(u64::from(narlink_protocol::manifest::MAX_REFERENCE)) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        assert_eq!(pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-openssl-3.0.13-dev"), "openssl-dev");
        assert_eq!(pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-zlib-1.2.13-p1"), "zlib");
        assert_eq!(pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-hello"), "hello");
        assert_eq!(pname("/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-demo-app-2"), "demo-app");
        let p = predecessors([
            "/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-demo-app-1",
            "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-demo-app-2",
        ]);
        assert_eq!(p["demo-app"], "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-demo-app-2");
    }
}
