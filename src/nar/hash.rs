//! Nix base32 and [`NarHash`], the sha256 of a NAR in Nix's textual forms.
//!
//! Nix base32 is not RFC 4648: it uses the alphabet [`NIX_BASE32_ALPHABET`] (no `e o t u`) and
//! emits the 5-bit groups of the input, read as one little-endian number, most significant group
//! first (`printHash32` / `parseHash32` in Nix's `libutil/hash.cc`).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::error::NarError;

/// The 32 characters of Nix base32, in digit order (one definition, in the protocol crate).
pub use narlink_protocol::storepath::NIX_BASE32_ALPHABET;

/// Length of the Nix base32 encoding of `n` bytes (52 for sha256, 32 for a store path hash).
pub const fn base32_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Encode bytes in Nix base32.
pub fn encode_base32(bytes: &[u8]) -> String {
    let len = base32_len(bytes.len());
    let mut s = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = bytes.get(i).map_or(0, |&x| u16::from(x) >> j);
        let hi = bytes.get(i + 1).map_or(0, |&x| u16::from(x) << (8 - j));
        let c = ((lo | hi) & 0x1f) as usize;
        s.push(char::from(NIX_BASE32_ALPHABET[c]));
    }
    s
}

fn base32_digit(c: u8) -> Option<u8> {
    NIX_BASE32_ALPHABET
        .iter()
        .position(|&a| a == c)
        .map(|p| p as u8)
}

/// Decode Nix base32. The length of the input determines the length of the output; inputs whose
/// length is not that of an encoding, with a character outside the alphabet, or encoding bits
/// beyond the output length are rejected.
pub fn decode_base32(s: &str) -> Result<Vec<u8>, NarError> {
    let bad = |reason: String| NarError::InvalidHash {
        input: clip(s),
        reason,
    };
    let len = s.len() * 5 / 8;
    if base32_len(len) != s.len() {
        return Err(bad(format!(
            "{} characters is not the length of any Nix base32 string",
            s.len()
        )));
    }
    let mut out = vec![0u8; len];
    for (n, &c) in s.as_bytes().iter().rev().enumerate() {
        let digit = base32_digit(c).ok_or_else(|| {
            bad(format!(
                "{:?} is not a Nix base32 character (alphabet: {})",
                char::from(c),
                String::from_utf8_lossy(NIX_BASE32_ALPHABET)
            ))
        })?;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let wide = u16::from(digit) << j;
        // `base32_len(len) == s.len()` guarantees i < len.
        if let Some(slot) = out.get_mut(i) {
            *slot |= wide as u8;
        }
        let carry = (wide >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(slot) => *slot |= carry,
            None if carry != 0 => {
                return Err(bad("encodes more bits than the hash holds".to_string()))
            }
            None => {}
        }
    }
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode_base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(char::from(B64[((v >> (18 - 6 * k)) & 0x3f) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode canonical standard base64 (padding optional) into exactly `N` bytes.
fn decode_base64<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let unpadded = s.trim_end_matches('=');
    let want = (N * 8).div_ceil(6);
    if unpadded.len() != want
        || s.len() - unpadded.len() > 2
        || (s.len() != want && !s.len().is_multiple_of(4))
    {
        return Err(format!(
            "base64 part must be {want} characters plus padding, got {}",
            s.len()
        ));
    }
    let mut out = [0u8; N];
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut pos = 0;
    for c in unpadded.bytes() {
        let v = B64
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| format!("{:?} is not a base64 character", char::from(c)))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if let Some(slot) = out.get_mut(pos) {
                *slot = (acc >> bits) as u8;
            }
            pos += 1;
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return Err("base64 part has non-zero trailing bits".to_string());
    }
    Ok(out)
}

fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!("hex part must be {} characters", 2 * N));
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(hi), Some(lo)) => *slot = (hi * 16 + lo) as u8,
            _ => {
                return Err(format!(
                    "{:?} is not a hex byte",
                    String::from_utf8_lossy(pair)
                ))
            }
        }
    }
    Ok(out)
}

/// Shorten untrusted input for error messages.
fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// sha256 of a NAR: `narHash` in Nix's database and in narinfo files.
///
/// `Display` gives Nix's default form `sha256:<52 chars of Nix base32>` (what
/// `nix-store -q --hash` prints). `FromStr` accepts that, `sha256:<64 hex digits>` and SRI
/// `sha256-<base64>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// sha256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        NarHash(Sha256::digest(data).into())
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Nix base32 without the `sha256:` prefix (52 characters).
    pub fn to_base32(&self) -> String {
        encode_base32(&self.0)
    }

    /// Lowercase hex without prefix (64 characters), as `sha256sum` prints it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SRI form, `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", encode_base64(&self.0))
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_base32())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({self})")
    }
}

impl FromStr for NarHash {
    type Err = NarError;

    fn from_str(s: &str) -> Result<Self, NarError> {
        let bad = |reason: String| NarError::InvalidHash {
            input: clip(s),
            reason,
        };
        if let Some(rest) = s.strip_prefix("sha256:") {
            match rest.len() {
                52 => {
                    let v = decode_base32(rest)?;
                    let arr: [u8; 32] = v
                        .try_into()
                        .map_err(|_| bad("base32 part does not decode to 32 bytes".into()))?;
                    Ok(NarHash(arr))
                }
                64 => decode_hex(rest).map(NarHash).map_err(bad),
                n => Err(bad(format!(
                    "after \"sha256:\" expected 52 Nix base32 or 64 hex characters, got {n}"
                ))),
            }
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            decode_base64(rest).map(NarHash).map_err(bad)
        } else {
            Err(bad(
                "expected \"sha256:<nix-base32>\", \"sha256:<hex>\" or SRI \"sha256-<base64>\""
                    .into(),
            ))
        }
    }
}

impl serde::Serialize for NarHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NarHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        decode_hex(s).unwrap()
    }

    // Pinned with Nix 2.8:
    //   nix-hash --type sha256 --to-base32 <hex>
    //   nix hash to-sri --type sha256 <hex>   (with --extra-experimental-features nix-command)
    // The hex inputs are `printf '' | sha256sum` and `printf abc | sha256sum`.
    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_B32: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const ABC_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_B32: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
    const ABC_SRI: &str = "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

    // A real store path: `nix-store -q --hash /nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1`
    // printed the base32 form, `nix-store --dump <same path> | sha256sum` the hex form, and
    // `nix hash to-sri --type sha256 <hex>` the SRI form.
    const STORE_B32: &str = "sha256:0pq2a1bpr5wkdn7ldr73hml7xikhiy6lv41ny8g3q0nb078ki22b";
    const STORE_HEX: &str = "4b8838d101cb023c1ef236904d8d8f70c67e6885e3e4468f6d93977c5750025f";
    const STORE_SRI: &str = "sha256-S4g40QHLAjwe8jaQTY2PcMZ+aIXj5EaPbZOXfFdQAl8=";

    #[test]
    fn base32_known_values() {
        assert_eq!(encode_base32(&hex32(EMPTY_HEX)), EMPTY_B32);
        assert_eq!(encode_base32(&hex32(ABC_HEX)), ABC_B32);
        assert_eq!(decode_base32(EMPTY_B32).unwrap(), hex32(EMPTY_HEX));
        assert_eq!(decode_base32(ABC_B32).unwrap(), hex32(ABC_HEX));
        // Bit order: `nix-hash --type sha256 --to-base32 00..01` = "0080…0" and
        // `--to-base32 0100..00` = "0…01": the first byte is the least significant.
        let mut one_first = [0u8; 32];
        one_first[0] = 1;
        assert_eq!(encode_base32(&one_first), format!("{}1", "0".repeat(51)));
        let mut one_last = [0u8; 32];
        one_last[31] = 1;
        assert_eq!(encode_base32(&one_last), format!("008{}", "0".repeat(49)));
        // 20-byte store path hash: `nix-hash --type sha1 --to-base32 0123456789abcdef0123456789abcdef01234567`.
        let sha1: [u8; 20] = decode_hex("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(encode_base32(&sha1), "cx2j60ggrnmqjrs54c0yzkdbi5kla8q1");
        assert_eq!(
            decode_base32("cx2j60ggrnmqjrs54c0yzkdbi5kla8q1").unwrap(),
            sha1
        );
    }

    #[test]
    fn base32_round_trips_all_lengths() {
        for n in 0..70usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + n * 11 + 5) as u8).collect();
            let s = encode_base32(&data);
            assert_eq!(s.len(), base32_len(n));
            assert_eq!(decode_base32(&s).unwrap(), data, "length {n}");
            let ff = vec![0xffu8; n];
            assert_eq!(decode_base32(&encode_base32(&ff)).unwrap(), ff);
        }
    }

    #[test]
    fn base32_rejects() {
        // 'e' is not in the alphabet.
        assert!(decode_base32(&format!("e{}", &EMPTY_B32[1..])).is_err());
        // Wrong length.
        assert!(decode_base32(&EMPTY_B32[1..]).is_err());
        assert!(decode_base32("000").is_err());
        // 52 characters carry 260 bits; the top one holds only bit 255, so it must be '0' or '1'.
        assert!(decode_base32(&format!("2{}", &EMPTY_B32[1..])).is_err());
        assert!(decode_base32(&format!("z{}", &EMPTY_B32[1..])).is_err());
        assert!(decode_base32(&format!("1{}", &EMPTY_B32[1..])).is_ok());
    }

    #[test]
    fn nar_hash_forms() {
        let h: NarHash = STORE_B32.parse().unwrap();
        assert_eq!(h.to_string(), STORE_B32);
        assert_eq!(h.to_hex(), STORE_HEX);
        assert_eq!(h.to_sri(), STORE_SRI);
        assert_eq!(format!("sha256:{STORE_HEX}").parse::<NarHash>().unwrap(), h);
        assert_eq!(
            format!("sha256:{}", STORE_HEX.to_uppercase())
                .parse::<NarHash>()
                .unwrap(),
            h
        );
        assert_eq!(STORE_SRI.parse::<NarHash>().unwrap(), h);
        assert_eq!(
            STORE_SRI.trim_end_matches('=').parse::<NarHash>().unwrap(),
            h
        );

        let abc = NarHash::of(b"abc");
        assert_eq!(abc.to_hex(), ABC_HEX);
        assert_eq!(abc.to_string(), format!("sha256:{ABC_B32}"));
        assert_eq!(abc.to_sri(), ABC_SRI);
        assert_eq!(ABC_SRI.parse::<NarHash>().unwrap(), abc);
        let json = serde_json::to_string(&abc).unwrap();
        assert_eq!(json, format!("\"sha256:{ABC_B32}\""));
        assert_eq!(serde_json::from_str::<NarHash>(&json).unwrap(), abc);
    }

    #[test]
    fn nar_hash_rejects() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0==",
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=",
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa=",
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=",
            "sha256:€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
        ] {
            let e = bad.parse::<NarHash>().unwrap_err();
            assert!(matches!(e, NarError::InvalidHash { .. }), "{bad}: {e}");
        }
    }
}
