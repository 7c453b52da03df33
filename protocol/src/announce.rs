//! The announcement: a signed frame that tells a device which bundle the ground is sending,
//! cut with which link parameters, and its sequence, before the bundle's head can be decoded.
//!
//! Without it a device cannot tell a genuine bundle whose head has not arrived yet from junk
//! under a random id, or from forged frames that carry the genuine id with other parameters:
//! all are unverified. An announcement verified under a trusted key lets the device keep the
//! announced session out of reach of unverified ones, name it in its status report, drop
//! sessions it supersedes, and refuse frames of its id under other parameters.
//!
//! An announcement travels as a frame of the bundle (same id, same parameters) with group
//! index [`ANNOUNCE_GROUP`] and shard 0; its payload (`S` bytes) holds:
//!
//! ```text
//! offset size field
//!  0      2   magic "nA"
//!  2      1   version 1
//!  3      8   sequence, u64 LE (the manifest's)
//! 11      4   key id (see crate::signature)
//! 15     64   ed25519 signature of "narlink-announce-v1\0" || bundle id (16) || codec (1)
//!             || S (2, LE) || K (2, LE) || P (2, LE) || L (8, LE) || sequence (8, LE)
//! 79      -   zero padding to S
//! ```
//!
//! Frames of `S` < [`ANNOUNCE_LEN`] bytes cannot carry one; such bundles are not announced.
//! Replaying an announcement only re-announces the same session; an announcement not newer
//! than the device's last import is ignored.
//!
//! A **withdrawal** travels the same way (group [`ANNOUNCE_GROUP`], shard 0) and says that
//! the ground cancelled the bundle: the device drops what it holds of it and never imports
//! it (unless it already did). Its payload:
//!
//! ```text
//! offset size field
//!  0      2   magic "nW"
//!  2      1   version 1
//!  3      4   key id
//!  7      64  ed25519 signature of "narlink-withdraw-v1\0" || bundle id (16) || codec (1)
//!             || S (2, LE) || K (2, LE) || P (2, LE) || L (8, LE)
//! 71      -   zero padding to S
//! ```
//!
//! Replaying a withdrawal withdraws the same bundle again: nothing more.

use crate::frame::FrameHeader;
use crate::params::LinkParams;
use crate::signature::{self, KeyId, PublicKey, SecretKey, SignatureError};
use crate::wire::Reader;

/// The group index that marks an announcement frame.
pub const ANNOUNCE_GROUP: u32 = u32::MAX;
/// Bytes of an announcement before its padding: the smallest shard size that carries one.
pub const ANNOUNCE_LEN: usize = 79;
const MAGIC: [u8; 2] = *b"nA";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"narlink-announce-v1\0";

/// A bundle, its link parameters and its sequence, signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub bundle_id: [u8; 16],
    pub params: LinkParams,
    pub sequence: u64,
    pub key: KeyId,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("not an announcement frame")]
    NotAnnouncement,
    #[error("announcement is malformed: {0}")]
    Malformed(&'static str),
    #[error("announcement: {0}")]
    Signature(#[from] SignatureError),
}

/// What the signature covers.
fn message(bundle_id: &[u8; 16], p: &LinkParams, sequence: u64) -> Vec<u8> {
    let mut m = bundle_message(DOMAIN, bundle_id, p);
    m.extend_from_slice(&sequence.to_le_bytes());
    m
}

/// `domain` || bundle id || codec || S || K || P || L.
fn bundle_message(domain: &[u8], bundle_id: &[u8; 16], p: &LinkParams) -> Vec<u8> {
    let mut m = domain.to_vec();
    m.extend_from_slice(bundle_id);
    m.push(p.codec.to_u8());
    m.extend_from_slice(&p.shard_size.to_le_bytes());
    m.extend_from_slice(&p.group_k.to_le_bytes());
    m.extend_from_slice(&p.parity.to_le_bytes());
    m.extend_from_slice(&p.bundle_len.to_le_bytes());
    m
}

impl Announcement {
    /// Sign an announcement of bundle `bundle_id` cut with `params`.
    pub fn sign(
        key: &SecretKey,
        bundle_id: [u8; 16],
        params: LinkParams,
        sequence: u64,
    ) -> Announcement {
        let (key, signature) = key.sign_message(&message(&bundle_id, &params, sequence));
        Announcement {
            bundle_id,
            params,
            sequence,
            key,
            signature,
        }
    }

    /// The frame header and payload that carry it; `None` if the shard size is too small.
    pub fn to_frame(&self) -> Option<(FrameHeader, Vec<u8>)> {
        let mut body = self.sequence.to_le_bytes().to_vec();
        body.extend_from_slice(&self.key);
        body.extend_from_slice(&self.signature);
        frame_of(self.bundle_id, self.params, MAGIC, &body)
    }

    /// Read an announcement from a frame's header and payload (not yet verified).
    pub fn from_frame(header: &FrameHeader, payload: &[u8]) -> Result<Announcement, AnnounceError> {
        let (sequence, key, signature) = read_frame(header, payload, MAGIC, |r| {
            Ok((r.u64_le()?, r.take_array::<4>()?, r.take_array::<64>()?))
        })?;
        Ok(Announcement {
            bundle_id: header.bundle_id,
            params: header.params,
            sequence,
            key,
            signature,
        })
    }

    /// Check the signature against `trusted`; returns the key's name.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<String, AnnounceError> {
        let m = message(&self.bundle_id, &self.params, self.sequence);
        Ok(signature::verify_message(
            &m,
            self.key,
            &self.signature,
            trusted,
        )?)
    }
}

/// The frame of bundle `bundle_id` in the announcement's place: `magic`, the version,
/// `body`, zero padding to the shard size (`None` if it does not fit).
fn frame_of(
    bundle_id: [u8; 16],
    params: LinkParams,
    magic: [u8; 2],
    body: &[u8],
) -> Option<(FrameHeader, Vec<u8>)> {
    let s = usize::from(params.shard_size);
    if s < 3 + body.len() {
        return None;
    }
    let mut p = Vec::with_capacity(s);
    p.extend_from_slice(&magic);
    p.push(VERSION);
    p.extend_from_slice(body);
    p.resize(s, 0);
    let header = FrameHeader {
        bundle_id,
        params,
        group: ANNOUNCE_GROUP,
        shard: 0,
    };
    Some((header, p))
}

/// The body of a frame in the announcement's place after `magic` and the version, read by
/// `body`; what follows must be zero padding.
fn read_frame<T>(
    header: &FrameHeader,
    payload: &[u8],
    magic: [u8; 2],
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, crate::wire::WireError>,
) -> Result<T, AnnounceError> {
    if header.group != ANNOUNCE_GROUP || header.shard != 0 {
        return Err(AnnounceError::NotAnnouncement);
    }
    let mut r = Reader::new(payload);
    let bad = |_| AnnounceError::Malformed("truncated");
    if r.take_array::<2>().map_err(bad)? != magic {
        return Err(AnnounceError::Malformed("bad magic"));
    }
    if r.u8().map_err(bad)? != VERSION {
        return Err(AnnounceError::Malformed("unknown version"));
    }
    let t = body(&mut r).map_err(bad)?;
    if r.take_rest().iter().any(|b| *b != 0) {
        return Err(AnnounceError::Malformed("non-zero padding"));
    }
    Ok(t)
}

const WITHDRAW_MAGIC: [u8; 2] = *b"nW";
const WITHDRAW_DOMAIN: &[u8] = b"narlink-withdraw-v1\0";
/// Bytes of a withdrawal before its padding.
pub const WITHDRAW_LEN: usize = 71;

/// A bundle the ground cancelled, signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub bundle_id: [u8; 16],
    pub params: LinkParams,
    pub key: KeyId,
    pub signature: [u8; 64],
}

/// Whether an announcement frame's payload is a withdrawal (by its magic; unverified).
pub fn is_withdrawal(payload: &[u8]) -> bool {
    payload.starts_with(&WITHDRAW_MAGIC)
}

impl Withdrawal {
    /// Sign the withdrawal of bundle `bundle_id`, sent with `params`.
    pub fn sign(key: &SecretKey, bundle_id: [u8; 16], params: LinkParams) -> Withdrawal {
        let m = bundle_message(WITHDRAW_DOMAIN, &bundle_id, &params);
        let (key, signature) = key.sign_message(&m);
        Withdrawal {
            bundle_id,
            params,
            key,
            signature,
        }
    }

    /// The frame header and payload that carry it; `None` if the shard size is too small.
    pub fn to_frame(&self) -> Option<(FrameHeader, Vec<u8>)> {
        let mut body = self.key.to_vec();
        body.extend_from_slice(&self.signature);
        frame_of(self.bundle_id, self.params, WITHDRAW_MAGIC, &body)
    }

    /// Read a withdrawal from a frame's header and payload (not yet verified).
    pub fn from_frame(header: &FrameHeader, payload: &[u8]) -> Result<Withdrawal, AnnounceError> {
        let (key, signature) = read_frame(header, payload, WITHDRAW_MAGIC, |r| {
            Ok((r.take_array::<4>()?, r.take_array::<64>()?))
        })?;
        Ok(Withdrawal {
            bundle_id: header.bundle_id,
            params: header.params,
            key,
            signature,
        })
    }

    /// Check the signature against `trusted`; returns the key's name.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<String, AnnounceError> {
        let m = bundle_message(WITHDRAW_DOMAIN, &self.bundle_id, &self.params);
        Ok(signature::verify_message(
            &m,
            self.key,
            &self.signature,
            trusted,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CodecId;

    fn params(s: u16) -> LinkParams {
        LinkParams {
            codec: CodecId::RsSimd16,
            shard_size: s,
            group_k: 4,
            parity: 4,
            bundle_len: 1000,
        }
    }

    #[test]
    fn signs_round_trips_and_binds_every_field() {
        let sk = SecretKey::from_seed("ground-1", [3; 32]);
        let pk = sk.public();
        let a = Announcement::sign(&sk, [7; 16], params(128), 42);
        let (h, p) = a.to_frame().unwrap();
        assert_eq!(h.validate(), Ok(0));
        let back = Announcement::from_frame(&h, &p).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            back.verify(std::slice::from_ref(&pk)),
            Ok("ground-1".into())
        );
        // Another id, other parameters, another sequence: the signature no longer holds.
        for changed in [
            Announcement {
                bundle_id: [8; 16],
                ..a.clone()
            },
            Announcement {
                params: params(129),
                ..a.clone()
            },
            Announcement {
                sequence: 43,
                ..a.clone()
            },
        ] {
            assert!(changed.verify(std::slice::from_ref(&pk)).is_err());
        }
        let other = SecretKey::from_seed("other", [4; 32]).public();
        assert!(a.verify(&[other]).is_err());
        // Too small a shard carries none; padding must be zero.
        assert!(Announcement::sign(&sk, [7; 16], params(78), 1)
            .to_frame()
            .is_none());
        let mut bad = p.clone();
        bad[100] = 1;
        assert!(Announcement::from_frame(&h, &bad).is_err());
        for n in 0..ANNOUNCE_LEN {
            assert!(Announcement::from_frame(&h, &p[..n]).is_err());
        }
    }

    #[test]
    fn withdrawals_sign_round_trip_and_are_told_apart() {
        let sk = SecretKey::from_seed("ground-1", [3; 32]);
        let pk = sk.public();
        let w = Withdrawal::sign(&sk, [7; 16], params(128));
        let (h, p) = w.to_frame().unwrap();
        assert!(h.is_announcement() && is_withdrawal(&p));
        assert_eq!(Withdrawal::from_frame(&h, &p).unwrap(), w);
        assert_eq!(w.verify(std::slice::from_ref(&pk)), Ok("ground-1".into()));
        // Neither parses as the other; another id or key does not verify.
        assert!(Announcement::from_frame(&h, &p).is_err());
        let a = Announcement::sign(&sk, [7; 16], params(128), 1)
            .to_frame()
            .unwrap();
        assert!(!is_withdrawal(&a.1) && Withdrawal::from_frame(&a.0, &a.1).is_err());
        let moved = Withdrawal {
            bundle_id: [8; 16],
            ..w.clone()
        };
        assert!(moved.verify(std::slice::from_ref(&pk)).is_err());
        let other = SecretKey::from_seed("other", [4; 32]).public();
        assert!(w.verify(&[other]).is_err());
        for n in 0..WITHDRAW_LEN {
            assert!(Withdrawal::from_frame(&h, &p[..n]).is_err());
        }
    }
}
