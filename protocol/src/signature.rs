//! Manifest signatures: ed25519 with Nix's key files.
//!
//! Keys are in the format `nix-store --generate-binary-cache-key NAME SECRET PUBLIC` writes:
//! `NAME:BASE64`, the secret being libsodium's 64 bytes (seed then public key), the public key
//! 32 bytes. A signature signs `"narlink-manifest-v1\0" || BLAKE3(manifest as stored)`; the
//! manifest names every chunk id and narHash, so the signature covers the whole bundle.
//!
//! The signature block follows the manifest in a bundle:
//!
//! ```text
//! u8 count (at most MAX_SIGNATURES)
//! count times: 4-byte key id, 64-byte signature
//! ```
//!
//! The key id (the first 4 bytes of the BLAKE3 of the 32-byte public key) is not trusted for
//! anything: it lets the device say which key signed a bundle it refuses, and skip keys that
//! cannot have made a signature. Key names stay on the ground and on the device.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::wire::Reader;

/// Domain separation for what is signed.
const DOMAIN: &[u8] = b"narlink-manifest-v1\0";
pub const MAX_SIGNATURES: usize = 8;
pub const MAX_NAME: usize = 128;
/// Longest signature block: the cap a decoder checks before reading one.
pub const MAX_BLOCK: usize = 1 + MAX_SIGNATURES * (4 + 64);

/// The first 4 bytes of the BLAKE3 of a public key.
pub type KeyId = [u8; 4];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("key {0:?} is not NAME:BASE64")]
    KeyFormat(String),
    #[error("key {name:?}: {what}")]
    Key { name: String, what: &'static str },
    #[error("signature block is malformed: {0}")]
    Block(&'static str),
    #[error("the bundle is not signed; this device only accepts bundles signed by {0}")]
    Unsigned(String),
    #[error(
        "the bundle is signed by key {found}, none of which this device trusts (it trusts {trusted})"
    )]
    Untrusted { found: String, trusted: String },
    #[error("the signature by {0} does not match the manifest: the bundle was altered or forged")]
    Invalid(String),
}

/// A secret key that signs manifests.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

/// A public key a device trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

/// One signature of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub key: KeyId,
    pub bytes: [u8; 64],
}

fn key_id(key: &VerifyingKey) -> KeyId {
    let mut id = [0u8; 4];
    id.copy_from_slice(&blake3::hash(key.as_bytes()).as_bytes()[..4]);
    id
}

/// A key id as it is shown: 8 hex digits.
pub fn show_key_id(id: &KeyId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn split(s: &str) -> Result<(String, Vec<u8>), SignatureError> {
    let s = s.trim();
    let (name, b64) = s
        .split_once(':')
        .ok_or_else(|| SignatureError::KeyFormat(s.chars().take(40).collect()))?;
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(SignatureError::KeyFormat(name.chars().take(40).collect()));
    }
    let bytes = STANDARD.decode(b64).map_err(|_| SignatureError::Key {
        name: name.to_owned(),
        what: "not base64",
    })?;
    Ok((name.to_owned(), bytes))
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "SecretKey({:?})", self.name)
    }
}

impl SecretKey {
    /// Parse Nix's secret key file contents.
    pub fn from_nix(s: &str) -> Result<SecretKey, SignatureError> {
        let (name, bytes) = split(s)?;
        let Ok(pair) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return Err(SignatureError::Key {
                name,
                what: "a secret key is 64 bytes",
            });
        };
        let key = SigningKey::from_keypair_bytes(&pair).map_err(|_| SignatureError::Key {
            name: name.clone(),
            what: "public half does not match the seed",
        })?;
        Ok(SecretKey { name, key })
    }

    /// A key from a 32-byte seed (for simulations and tests; real keys come from
    /// `nix-store --generate-binary-cache-key`).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> SecretKey {
        SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// `NAME:BASE64` of the 64-byte secret, as Nix writes it.
    pub fn to_nix(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            STANDARD.encode(self.key.to_keypair_bytes())
        )
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Sign `message` (which starts with its own domain string, like [`DOMAIN`]): the key id
    /// and the signature.
    pub fn sign_message(&self, message: &[u8]) -> (KeyId, [u8; 64]) {
        (
            key_id(&self.key.verifying_key()),
            self.key.sign(message).to_bytes(),
        )
    }

    /// Sign the manifest whose encoded bytes hash (BLAKE3) to `manifest_hash`.
    pub fn sign(&self, manifest_hash: &[u8; 32]) -> Signature {
        Signature {
            key: key_id(&self.key.verifying_key()),
            bytes: self.key.sign(&message(manifest_hash)).to_bytes(),
        }
    }
}

impl PublicKey {
    /// Parse Nix's public key file contents (`NAME:BASE64`).
    pub fn from_nix(s: &str) -> Result<PublicKey, SignatureError> {
        let (name, bytes) = split(s)?;
        let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return Err(SignatureError::Key {
                name,
                what: "a public key is 32 bytes",
            });
        };
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| SignatureError::Key {
            name: name.clone(),
            what: "not a valid ed25519 point",
        })?;
        Ok(PublicKey { name, key })
    }

    /// `NAME:BASE64`, as Nix writes it.
    pub fn to_nix(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }

    /// The id signatures by this key carry.
    pub fn id(&self) -> KeyId {
        key_id(&self.key)
    }
}

fn message(manifest_hash: &[u8; 32]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(manifest_hash);
    m
}

/// Check that at least one signature is by a trusted key and that every signature whose key id
/// is a trusted key's is valid under it; returns that key's name. `trusted` empty means the
/// caller decided to accept unsigned bundles.
pub fn verify(
    manifest_hash: &[u8; 32],
    sigs: &[Signature],
    trusted: &[PublicKey],
) -> Result<Option<String>, SignatureError> {
    if trusted.is_empty() {
        return Ok(None);
    }
    let names = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
    if sigs.is_empty() {
        return Err(SignatureError::Unsigned(names(
            &mut trusted.iter().map(|k| k.name.clone()),
        )));
    }
    let mut good = None;
    for s in sigs {
        for k in trusted.iter().filter(|k| k.id() == s.key) {
            let sig = ed25519_dalek::Signature::from_bytes(&s.bytes);
            k.key
                .verify(&message(manifest_hash), &sig)
                .map_err(|_| SignatureError::Invalid(k.name.clone()))?;
            good = Some(k.name.clone());
        }
    }
    good.map(Some).ok_or_else(|| SignatureError::Untrusted {
        found: names(&mut sigs.iter().map(|s| show_key_id(&s.key))),
        trusted: names(
            &mut trusted
                .iter()
                .map(|k| format!("{} = {}", k.name, show_key_id(&k.id()))),
        ),
    })
}

/// Check one signature of `message` by the trusted key with id `key`; returns its name.
pub fn verify_message(
    message: &[u8],
    key: KeyId,
    signature: &[u8; 64],
    trusted: &[PublicKey],
) -> Result<String, SignatureError> {
    let names = || {
        trusted
            .iter()
            .map(|k| format!("{} = {}", k.name, show_key_id(&k.id())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let k = trusted
        .iter()
        .find(|k| k.id() == key)
        .ok_or_else(|| SignatureError::Untrusted {
            found: show_key_id(&key),
            trusted: names(),
        })?;
    k.key
        .verify(message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| SignatureError::Invalid(k.name.clone()))?;
    Ok(k.name.clone())
}

/// Encode a signature block.
pub fn encode_block(sigs: &[Signature]) -> Vec<u8> {
    let mut out = vec![sigs.len().min(MAX_SIGNATURES) as u8];
    for s in sigs.iter().take(MAX_SIGNATURES) {
        out.extend_from_slice(&s.key);
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// Decode a signature block; it must be exactly `bytes`.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<Signature>, SignatureError> {
    if bytes.len() > MAX_BLOCK {
        return Err(SignatureError::Block("longer than the cap"));
    }
    let mut r = Reader::new(bytes);
    let count = r.u8().map_err(|_| SignatureError::Block("empty"))? as usize;
    if count > MAX_SIGNATURES {
        return Err(SignatureError::Block("too many signatures"));
    }
    let mut sigs = Vec::with_capacity(count);
    for _ in 0..count {
        let key = r
            .take_array::<4>()
            .map_err(|_| SignatureError::Block("truncated"))?;
        let bytes = r
            .take_array::<64>()
            .map_err(|_| SignatureError::Block("truncated"))?;
        sigs.push(Signature { key, bytes });
    }
    r.expect_end()
        .map_err(|_| SignatureError::Block("trailing bytes"))?;
    Ok(sigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `nix-store --generate-binary-cache-key test-1 sk pk` (Nix 2.8) on 2026-11-26.
    const SK: &str = "test-1:TQusWoAi0vOHZ6XXLvlQ0xD4YbkSRer5Y1HXaGBKFzYIvMjZsUh02lqd/KxPBTfgopzfXVhE5PyKlO4P9vIXoQ==";
    const PK: &str = "test-1:CLzI2bFIdNpanfysTwU34KKc311YROT8ipTuD/byF6E=";

    #[test]
    fn nix_keys_sign_and_verify() {
        let sk = SecretKey::from_nix(SK).unwrap();
        let pk = PublicKey::from_nix(PK).unwrap();
        assert_eq!(sk.public(), pk);
        assert_eq!(sk.to_nix(), SK);
        assert_eq!(pk.to_nix(), PK);
        let h = [7u8; 32];
        let sig = sk.sign(&h);
        let (sigs, keys) = (std::slice::from_ref(&sig), std::slice::from_ref(&pk));
        assert_eq!(verify(&h, sigs, keys), Ok(Some("test-1".into())));
        assert!(matches!(
            verify(&[8; 32], sigs, keys),
            Err(SignatureError::Invalid(_))
        ));
        assert!(matches!(
            verify(&h, &[], keys),
            Err(SignatureError::Unsigned(_))
        ));
        let other = Signature {
            key: [1, 2, 3, 4],
            ..sig.clone()
        };
        assert!(matches!(
            verify(&h, &[other], &[pk]),
            Err(SignatureError::Untrusted { .. })
        ));
        let block = encode_block(std::slice::from_ref(&sig));
        assert_eq!(decode_block(&block).unwrap(), vec![sig]);
        for n in 0..block.len() {
            assert!(decode_block(&block[..n]).is_err());
        }
    }
}
