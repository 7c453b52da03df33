//! The confirmation (issue 19, probation): the ground tells a device that a report sent
//! under its newly switched generation came down, so the generation may be committed. It is
//! bound to the device (keyed with the device's downlink secret, see [`crate::seal`]), to the
//! bundle, to the generation and to the report it answers.
//!
//! It travels as one frame in the announcement's place (group [`ANNOUNCE_GROUP`], shard 0)
//! under the confirmed bundle's id, with parameters of its own that fit it exactly (RS16,
//! `S` = 28, `K` = 1, `P` = 1, `L` = 28): 72 bytes on the uplink. Its payload:
//!
//! ```text
//! offset size field
//!  0      2   magic "nC"
//!  2      1   version 1
//!  3      4   device id          (crate::seal::device_id)
//!  7      4   generation         u32 LE, the generation on probation
//! 11      4   report counter     u32 LE, the sealed report that came down under it
//! 15      12  tag                keyed BLAKE3(device secret, "narlink-confirm-v1\0" ||
//!                                bundle id (16) || device id || generation || counter)[..12]
//! 27      1   zero padding
//! ```
//!
//! Why a tag under the device's secret and not a signature by the ground's key: only the
//! device and its mirror hold that secret, so the confirmation is bound to the device by
//! construction, and 12 bytes of tag cost less than 68 of key id and signature. A confirmation
//! never makes anything live: it only commits a generation the device switched to from a
//! signed bundle, so the worst a stolen mirror secret buys is keeping such a generation.
//! Whether a verified confirmation is *current* (the generation on probation, a report the
//! device sent during it) is the device's decision.

use crate::announce::ANNOUNCE_GROUP;
use crate::frame::FrameHeader;
use crate::params::{CodecId, LinkParams};
use crate::seal::{device_id, DeviceId, DeviceSecret};
use crate::wire::Reader;

const MAGIC: [u8; 2] = *b"nC";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"narlink-confirm-v1\0";
/// Bytes of a confirmation's payload (its shard size).
pub const CONFIRM_LEN: usize = 28;

/// The link parameters a confirmation frame carries.
pub const PARAMS: LinkParams = LinkParams {
    codec: CodecId::RsSimd16,
    shard_size: CONFIRM_LEN as u16,
    group_k: 1,
    parity: 1,
    bundle_len: CONFIRM_LEN as u64,
};

/// A generation confirmed, for one device and one bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub bundle_id: [u8; 16],
    pub device: DeviceId,
    pub generation: u32,
    pub counter: u32,
    pub tag: [u8; 12],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    #[error("not a confirmation frame")]
    NotConfirmation,
    #[error("confirmation is malformed: {0}")]
    Malformed(&'static str),
    #[error("the confirmation is for device {0:02x?}, not this one")]
    Foreign(DeviceId),
    #[error("the confirmation's tag does not match: forged or altered")]
    Forged,
}

/// Whether an announcement-position frame's payload is a confirmation (by its magic).
pub fn is_confirmation(payload: &[u8]) -> bool {
    payload.starts_with(&MAGIC)
}

fn tag(
    secret: &DeviceSecret,
    bundle_id: &[u8; 16],
    device: &DeviceId,
    generation: u32,
    counter: u32,
) -> [u8; 12] {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(DOMAIN);
    h.update(bundle_id);
    h.update(device);
    h.update(&generation.to_le_bytes());
    h.update(&counter.to_le_bytes());
    let mut t = [0u8; 12];
    t.copy_from_slice(&h.finalize().as_bytes()[..12]);
    t
}

impl Confirmation {
    /// Confirm `generation` of the device holding `secret`, landed from bundle `bundle_id`,
    /// answering its report number `counter`.
    pub fn new(
        secret: &DeviceSecret,
        bundle_id: [u8; 16],
        generation: u32,
        counter: u32,
    ) -> Confirmation {
        let device = device_id(secret);
        Confirmation {
            bundle_id,
            device,
            generation,
            counter,
            tag: tag(secret, &bundle_id, &device, generation, counter),
        }
    }

    /// The frame header and payload that carry it.
    pub fn to_frame(&self) -> (FrameHeader, Vec<u8>) {
        let mut p = Vec::with_capacity(CONFIRM_LEN);
        p.extend_from_slice(&MAGIC);
        p.push(VERSION);
        p.extend_from_slice(&self.device);
        p.extend_from_slice(&self.generation.to_le_bytes());
        p.extend_from_slice(&self.counter.to_le_bytes());
        p.extend_from_slice(&self.tag);
        p.resize(CONFIRM_LEN, 0);
        let header = FrameHeader {
            bundle_id: self.bundle_id,
            params: PARAMS,
            group: ANNOUNCE_GROUP,
            shard: 0,
        };
        (header, p)
    }

    /// Read a confirmation from a frame's header and payload (not yet verified).
    pub fn from_frame(header: &FrameHeader, payload: &[u8]) -> Result<Confirmation, ConfirmError> {
        if header.group != ANNOUNCE_GROUP || header.shard != 0 || header.params != PARAMS {
            return Err(ConfirmError::NotConfirmation);
        }
        if payload.len() != CONFIRM_LEN {
            return Err(ConfirmError::Malformed("wrong length"));
        }
        let mut r = Reader::new(payload);
        let bad = |_| ConfirmError::Malformed("truncated");
        if r.take_array::<2>().map_err(bad)? != MAGIC {
            return Err(ConfirmError::Malformed("bad magic"));
        }
        if r.u8().map_err(bad)? != VERSION {
            return Err(ConfirmError::Malformed("unknown version"));
        }
        let c = Confirmation {
            bundle_id: header.bundle_id,
            device: r.take_array().map_err(bad)?,
            generation: r.u32_le().map_err(bad)?,
            counter: r.u32_le().map_err(bad)?,
            tag: r.take_array().map_err(bad)?,
        };
        if r.take_rest().iter().any(|b| *b != 0) {
            return Err(ConfirmError::Malformed("non-zero padding"));
        }
        Ok(c)
    }

    /// Check it against this device's secret: another device's confirmation is *foreign*,
    /// one whose tag does not match is *forged*.
    pub fn verify(&self, secret: &DeviceSecret) -> Result<(), ConfirmError> {
        if self.device != device_id(secret) {
            return Err(ConfirmError::Foreign(self.device));
        }
        let want = tag(
            secret,
            &self.bundle_id,
            &self.device,
            self.generation,
            self.counter,
        );
        // Constant time: the tag is a secret-derived value.
        if !constant_eq(&want, &self.tag) {
            return Err(ConfirmError::Forged);
        }
        Ok(())
    }
}

fn constant_eq(a: &[u8; 12], b: &[u8; 12]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameRef;

    #[test]
    fn binds_device_bundle_generation_and_report() {
        let secret = [5u8; 32];
        let c = Confirmation::new(&secret, [7; 16], 3, 1000);
        let (h, p) = c.to_frame();
        assert_eq!(h.validate(), Ok(0));
        assert!(is_confirmation(&p));
        let mut frame = Vec::new();
        FrameRef::new(h, &p).unwrap().encode(&mut frame);
        assert_eq!(frame.len(), 72, "bytes on the uplink");
        let back = Confirmation::from_frame(&h, &p).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.verify(&secret), Ok(()));
        // Another device: foreign. Any field changed: forged.
        let other = [6u8; 32];
        assert_eq!(
            c.verify(&other),
            Err(ConfirmError::Foreign(device_id(&secret)))
        );
        for changed in [
            Confirmation {
                bundle_id: [8; 16],
                ..c.clone()
            },
            Confirmation {
                generation: 4,
                ..c.clone()
            },
            Confirmation {
                counter: 1001,
                ..c.clone()
            },
        ] {
            assert_eq!(changed.verify(&secret), Err(ConfirmError::Forged));
        }
        // Truncated, padded wrongly, or under other parameters: not read.
        for n in 0..CONFIRM_LEN {
            assert!(Confirmation::from_frame(&h, &p[..n]).is_err());
        }
        let mut bad = p.clone();
        bad[CONFIRM_LEN - 1] = 1;
        assert!(Confirmation::from_frame(&h, &bad).is_err());
        let other_params = FrameHeader {
            params: LinkParams {
                bundle_len: 29,
                ..PARAMS
            },
            ..h
        };
        assert_eq!(
            Confirmation::from_frame(&other_params, &p),
            Err(ConfirmError::NotConfirmation)
        );
    }

    /// Pinned bytes, so that the format cannot drift unnoticed.
    #[test]
    fn vector() {
        let c = Confirmation::new(&[1u8; 32], *b"narlink-vector-1", 2, 3);
        let (_, p) = c.to_frame();
        let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.len(), 2 * CONFIRM_LEN);
        assert_eq!(&hex[..6], "6e4301");
        assert_eq!(&hex[14..30], "0200000003000000");
        // The tag over these inputs (computed once, pinned).
        assert_eq!(hex, VECTOR);
    }

    const VECTOR: &str = "6e43015f8f614b0200000003000000f9d743e2ab1c7c782e972d3000";
}
