//! Chunking frozen by test vectors (issue 20, item 4): the cut points and chunk ids of fixed
//! inputs, committed in `tests/fixtures/chunking-vectors.txt`. Every index on orbit holds
//! chunk ids computed this way; a fastcdc or BLAKE3 upgrade (or a parameter change) that moved
//! one cut would silently stop every device from deduplicating against what it holds. Such a
//! change must fail here and come with a new chunking algorithm number instead.
//!
//! The inputs are made by a generator written out below (not a crate's RNG, which may change
//! too): random bytes, runs of zeros and repeated text, at and around the minimum, average and
//! maximum chunk sizes and across the chunker's 4 MiB read window. Each is chunked through
//! `chunk_stream`, the production path, read in pieces of an awkward size.
//!
//! Regenerate only together with a new `PARAMS.algorithm`:
//! `NARLINK_BLESS=1 cargo test --release --test chunking_vectors`.

use std::path::PathBuf;

use narlink::chunking::{chunk_stream, PARAMS};

/// xorshift64*, written out so that the inputs can never change under the test.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    // The sizes of chunking algorithm 3, written out: the inputs must not follow PARAMS.
    let (min, avg, max) = (16 << 10, 64 << 10, 256 << 10);
    let mut v = Vec::new();
    for (what, n) in [
        ("empty", 0),
        ("one", 1),
        ("min-1", min - 1),
        ("min", min),
        ("min+1", min + 1),
        ("avg-1", avg - 1),
        ("avg", avg),
        ("avg+1", avg + 1),
        ("max-1", max - 1),
        ("max", max),
        ("max+1", max + 1),
        ("2max+17", 2 * max + 17),
        ("1MiB", 1 << 20),
        // Across the 4 MiB read window of chunk_stream.
        ("4MiB+3", (4 << 20) + 3),
    ] {
        v.push((format!("random-{what}"), bytes(n, n as u64 + 1)));
    }
    v.push(("zeros-3max".into(), vec![0u8; 3 * max]));
    let text: Vec<u8> =
        b"narlink ships Nix store updates to devices that cannot reach the internet\n"
            .iter()
            .copied()
            .cycle()
            .take(5 * avg + 11)
            .collect();
    v.push(("text-5avg+11".into(), text));
    // Random, with a run of zeros in the middle (a cut has to be found again after it).
    let mut mixed = bytes(3 * avg, 7);
    mixed.extend(vec![0u8; max + 5]);
    mixed.extend(bytes(3 * avg, 8));
    v.push(("mixed".into(), mixed));
    v
}

/// `name: offset+len:id ...` for every chunk of every input.
fn vectors() -> String {
    let mut out = String::from(
        "# Chunk cut points and ids (offset+length:BLAKE3-128) of tests/chunking_vectors.rs's inputs\n\
         # under narlink's chunking parameters. Regenerate only with a new PARAMS.algorithm.\n",
    );
    out.push_str(&format!("# {:?}\n", PARAMS));
    for (name, data) in inputs() {
        let mut line = format!("{name}:");
        // Read in pieces of an odd size: the cuts must not depend on how the bytes arrive.
        let reader = Pieces(&data, 0, 100_003);
        chunk_stream::<_, std::io::Error>(reader, &PARAMS, |offset, _, c| {
            let id: String = c.id.iter().map(|b| format!("{b:02x}")).collect();
            line.push_str(&format!(" {offset}+{}:{id}", c.len));
            Ok(())
        })
        .unwrap();
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A reader that yields at most `.2` bytes a call.
struct Pieces<'a>(&'a [u8], usize, usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.2).min(self.0.len() - self.1);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chunking-vectors.txt")
}

#[test]
fn chunk_cuts_and_ids_have_not_moved() {
    let made = vectors();
    if std::env::var_os("NARLINK_BLESS").is_some() {
        std::fs::write(fixture(), &made).unwrap();
    }
    let pinned = std::fs::read_to_string(fixture()).unwrap();
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let (pinned_body, made_body) = (body(&pinned), body(&made));
    for (p, m) in pinned_body.iter().zip(&made_body) {
        let name = m.split(':').next().unwrap_or("");
        assert_eq!(
            p, m,
            "chunking of input {name:?} moved: every index on orbit would stop matching. If \
             this is meant, it needs a new PARAMS.algorithm (then NARLINK_BLESS=1)"
        );
    }
    assert_eq!(pinned_body.len(), made_body.len());
    // The parameters line too: a parameter changed without moving a cut here still changes
    // what devices compute.
    assert_eq!(pinned, made, "the chunking parameters changed");
}
