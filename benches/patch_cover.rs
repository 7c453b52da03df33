//! How well the patch coder covers a real update: every changed file of a new tree patched
//! against the file of the same path in the old tree (new files as all new bytes), the
//! patches coded as solid groups of up to 16 MiB of new bytes, as the pack does.
//!
//! `cargo bench --bench patch_cover -- OLD_DIR NEW_DIR` prints the controls, difference and
//! new-byte totals, the coded bytes and the time. Unlike a pack it patches against whole old
//! files of any size (the pack's references stop at 4 MiB) and finds no renamed files, so it
//! measures the covering alone, in seconds instead of minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use narlink::ground::bsdiff::Reference;
use narlink::solid;
use narlink_protocol::manifest::MAX_SOLID;
use narlink_protocol::patch::{apply, Control, Patch};

fn files(root: &Path) -> BTreeMap<PathBuf, PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(root, &p, out);
            } else if t.is_file() {
                out.insert(p.strip_prefix(root).unwrap().to_owned(), p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [old, new] = &args[..] else {
        eprintln!("usage: cargo bench --bench patch_cover -- OLD_DIR NEW_DIR");
        return;
    };
    let (old, new) = (files(Path::new(old)), files(Path::new(new)));
    let work: Vec<(Option<PathBuf>, PathBuf)> = new
        .iter()
        .filter_map(|(rel, p)| {
            let o = old.get(rel);
            let same = o.is_some_and(|o| std::fs::read(o).ok() == std::fs::read(p).ok());
            (!same).then(|| (o.cloned(), p.clone()))
        })
        .collect();
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = work.len().div_ceil(threads).max(1);
    let patches: Vec<(usize, Patch)> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(o, n)| {
                            let new = std::fs::read(n).unwrap();
                            let old = o.as_ref().map_or(Vec::new(), |o| std::fs::read(o).unwrap());
                            let patch = Reference::new(&old).diff(&new).unwrap_or_else(|| Patch {
                                controls: vec![Control {
                                    add: 0,
                                    copy: new.len() as u64,
                                    seek: 0,
                                }],
                                diff: Vec::new(),
                                extra: new.clone(),
                            });
                            assert_eq!(apply(&old, &patch.to_bytes(), new.len()).unwrap(), new);
                            (new.len(), patch)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let diffed = started.elapsed();
    let (mut coded, mut group, mut raw) = (0usize, Vec::new(), 0usize);
    let mut flush = |group: &mut Vec<&Patch>| {
        if !group.is_empty() {
            coded += solid::encode(group).unwrap().len();
            group.clear();
        }
    };
    for (len, p) in &patches {
        if raw + len > MAX_SOLID as usize {
            flush(&mut group);
            raw = 0;
        }
        group.push(p);
        raw += len;
    }
    flush(&mut group);
    let sum = |f: &dyn Fn(&Patch) -> usize| patches.iter().map(|(_, p)| f(p)).sum::<usize>();
    println!(
        "{} files, {} B new: {} controls, {} B differences, {} B new bytes; coded {} B; diff {:.1} s, all {:.1} s",
        patches.len(),
        sum(&|p| p.diff.len() + p.extra.len()),
        sum(&|p| p.controls.len()),
        sum(&|p| p.diff.len()),
        sum(&|p| p.extra.len()),
        coded,
        diffed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
