//! Store paths in few bytes: the 32 Nix-base32 characters of a path's hash part packed into 20
//! bytes, and on-board paths named by the shortest prefix of those bytes that is unique on the
//! device.
//!
//! The packing is narlink's own (not the byte order Nix's base32 decodes to): character `i`
//! of the hash part is the 5-bit digit at bits `5i .. 5i + 5` of the 160-bit big-endian
//! string, so a prefix of the packed bytes is a prefix of the characters and paths sorted by
//! packed hash are sorted by hash part.

/// Where store paths live (the logical store directory; a chroot store keeps it).
pub const STORE_DIR: &str = "/nix/store";

/// Characters of a store path's hash part.
pub const HASH_CHARS: usize = 32;

/// Bytes of a packed hash part.
pub const HASH_BYTES: usize = 20;

/// Shortest prefix a manifest names an on-board path by: 24 bits, so a device whose state
/// has drifted from the ground's mirror by a path or two still resolves names unambiguously
/// and is refused by the state digest, with a clear reason, rather than by a name.
pub const MIN_PREFIX: usize = 3;

/// Longest store path name (the part after `<hash>-`) Nix accepts.
pub const MAX_NAME: usize = 211;

/// The 32 characters of Nix base32, in digit order (no `e o t u`).
pub const NIX_BASE32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A packed hash part.
pub type PackedHash = [u8; HASH_BYTES];

fn digit(c: u8) -> Option<u8> {
    NIX_BASE32_ALPHABET
        .iter()
        .position(|&a| a == c)
        .map(|d| d as u8)
}

/// Pack a 32-character hash part; `None` if it is not one.
pub fn pack(hash_part: &str) -> Option<PackedHash> {
    let s = hash_part.as_bytes();
    if s.len() != HASH_CHARS {
        return None;
    }
    let mut out = [0u8; HASH_BYTES];
    for (i, &c) in s.iter().enumerate() {
        let d = digit(c)?;
        for b in 0..5 {
            if d & (0x10 >> b) != 0 {
                let bit = 5 * i + b;
                out[bit / 8] |= 0x80 >> (bit % 8);
            }
        }
    }
    Some(out)
}

/// The characters a packed prefix of `bytes.len()` bytes fixes (all 32 for a whole hash).
pub fn unpack(bytes: &[u8]) -> String {
    let chars = (bytes.len() * 8 / 5).min(HASH_CHARS);
    (0..chars)
        .map(|i| {
            let mut d = 0u8;
            for b in 0..5 {
                let bit = 5 * i + b;
                d = (d << 1) | ((bytes[bit / 8] >> (7 - bit % 8)) & 1);
            }
            char::from(NIX_BASE32_ALPHABET[usize::from(d)])
        })
        .collect()
}

/// Whether `name` is a store path name Nix accepts: 1 to 211 characters of
/// `[A-Za-z0-9+-._?=]`, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
}

/// Split `/nix/store/<hash>-<name>` into its packed hash and name.
pub fn split(path: &str) -> Option<(PackedHash, &str)> {
    let rest = path.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
    let (hash, name) = (rest.get(..HASH_CHARS)?, rest.get(HASH_CHARS..)?);
    let name = name.strip_prefix('-')?;
    valid_name(name).then_some(())?;
    Some((pack(hash)?, name))
}

/// `/nix/store/<hash>-<name>` from its parts.
pub fn join(hash: &PackedHash, name: &str) -> String {
    format!("{STORE_DIR}/{}-{name}", unpack(hash))
}

/// How `prefix` fares against a [`PathSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Unique(&'a str),
    Missing,
    Ambiguous,
}

/// A set of store paths ordered by packed hash, to name them by prefix and to resolve names.
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    paths: Vec<(PackedHash, String)>,
}

impl PathSet {
    /// The set of `paths`; entries that are not store paths are left out.
    pub fn new<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> PathSet {
        let mut paths: Vec<(PackedHash, String)> = paths
            .into_iter()
            .filter_map(|p| {
                let p = p.as_ref();
                split(p).map(|(h, _)| (h, p.to_owned()))
            })
            .collect();
        paths.sort();
        paths.dedup();
        PathSet { paths }
    }

    /// The path whose packed hash begins with `prefix`, if exactly one does.
    pub fn lookup(&self, prefix: &[u8]) -> Lookup<'_> {
        let start = self.paths.partition_point(|(h, _)| &h[..] < prefix);
        let matching = |i: usize| {
            self.paths
                .get(i)
                .filter(|(h, _)| h.starts_with(prefix))
                .map(|(_, p)| p.as_str())
        };
        match (matching(start), matching(start + 1)) {
            (Some(p), None) => Lookup::Unique(p),
            (Some(_), Some(_)) => Lookup::Ambiguous,
            (None, _) => Lookup::Missing,
        }
    }

    /// Bytes of `hash` that name it unambiguously in this set: one more than it shares with
    /// its nearest neighbour, at least [`MIN_PREFIX`].
    pub fn prefix_len(&self, hash: &PackedHash) -> usize {
        let at = self.paths.partition_point(|(h, _)| h < hash);
        let shared = |i: usize| {
            self.paths
                .get(i)
                .filter(|(h, _)| h != hash)
                .map_or(0, |(h, _)| {
                    h.iter().zip(hash).take_while(|(a, b)| a == b).count()
                })
        };
        let mut n = shared(at).max(shared(at + 1));
        if let Some(i) = at.checked_sub(1) {
            n = n.max(shared(i));
        }
        (n + 1).clamp(MIN_PREFIX, HASH_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &str = "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-bash-5.2.15";

    #[test]
    fn pack_round_trips_and_prefixes_are_character_prefixes() {
        let (h, name) = split(BASH).unwrap();
        assert_eq!(name, "bash-5.2.15");
        assert_eq!(join(&h, name), BASH);
        assert_eq!(unpack(&h[..5]), "4gzm0877");
        assert_eq!(unpack(&h[..3]), "4gzm");
        assert_eq!(pack("4gzm0877y0a50n95y4i8ky3m1fyg8x5e"), None);
        assert_eq!(pack("short"), None);
        // Order of packed hashes is the order of hash parts.
        let a = pack("00000000000000000000000000000001").unwrap();
        let b = pack("10000000000000000000000000000000").unwrap();
        assert!(a < b);
    }

    #[test]
    fn splits_only_store_paths() {
        for bad in [
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55",
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-",
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-.hidden",
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-a/b",
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55xbash",
            "/usr/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-bash",
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8xé-bash",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_name_paths_uniquely() {
        let paths = [
            BASH,
            "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x56-other",
            "/nix/store/7fx6vp3nbn2hhm2lfbxm0h2kwv224nrn-coreutils-9.1",
        ];
        let set = PathSet::new(paths);
        for p in paths {
            let (h, _) = split(p).unwrap();
            let n = set.prefix_len(&h);
            assert_eq!(set.lookup(&h[..n]), Lookup::Unique(p));
            assert!(n >= MIN_PREFIX);
        }
        let (h, _) = split(BASH).unwrap();
        assert_eq!(set.prefix_len(&h), HASH_BYTES);
        assert_eq!(set.lookup(&h[..5]), Lookup::Ambiguous);
        assert_eq!(set.lookup(&[0xff; 3]), Lookup::Missing);
        assert_eq!(PathSet::default().lookup(&h[..3]), Lookup::Missing);
    }
}
