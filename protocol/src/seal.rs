//! The authenticated downlink: every message a device sends down (status report, inventory)
//! is sealed with the device's key, so the ground knows which device sent it, that nobody
//! else wrote it, and that it is newer than the last one it took.
//!
//! # Layout (version 1)
//!
//! ```text
//!  offset   size field
//!  0        n    payload        the message (a status report, an inventory), unchanged
//!  n        4    device id      first 4 bytes of BLAKE3("narlink-device-id-v1\0" ‖ key)
//!  n+4      4    counter        u32 LE, strictly increasing per device
//!  n+8      12   tag            keyed BLAKE3(key, "narlink-downlink-v1\0" ‖ payload ‖ id ‖
//!                               counter), first 12 bytes
//!  n+20     4    check          CRC-32C over every byte before it, XOR 0x5ea1_5ea1
//! ```
//!
//! 24 bytes per message. Why a shared secret and not a signature: an ed25519 signature alone is
//! 64 bytes, and the downlink of a satellite carries a status report of 41 bytes plus its
//! runs every pass; the device is provisioned on the ground before launch, so a 32-byte secret
//! known to the device and to its mirror costs nothing to distribute. The ground can forge
//! reports of its own devices; it is trusted anyway (it signs what they import). A 96-bit tag
//! leaves an attacker one guess in 2^96 per message the ground looks at.
//!
//! The CRC comes last so that damage in transit (a flipped bit) reads as *damaged*, and only a
//! message that arrived intact but carries a wrong tag reads as *forged*. It is XORed with a
//! constant because a status report already ends in the CRC-32C of what precedes it: bare,
//! it would pass a plain CRC and read as sealed by a device that does not exist. A message whose CRC
//! fails may also be one that was never sealed (a report of an older narlink): the caller
//! tells those apart by trying to decode it bare.

use thiserror::Error;

use crate::frame::crc32c;

/// Bytes a seal adds to a message.
pub const SEAL_LEN: usize = 24;
/// A device's secret key.
pub type DeviceSecret = [u8; 32];
/// A device's identity on the downlink.
pub type DeviceId = [u8; 4];

const ID_DOMAIN: &[u8] = b"narlink-device-id-v1\0";
const TAG_DOMAIN: &[u8] = b"narlink-downlink-v1\0";
/// What the check value is XORed with (see the module doc).
const CHECK_XOR: u32 = 0x5ea1_5ea1;

fn check_value(body: &[u8]) -> [u8; 4] {
    (crc32c(body) ^ CHECK_XOR).to_le_bytes()
}

/// The identity a secret gives.
pub fn device_id(secret: &DeviceSecret) -> DeviceId {
    let mut h = blake3::Hasher::new();
    h.update(ID_DOMAIN);
    h.update(secret);
    let mut id = [0u8; 4];
    id.copy_from_slice(&h.finalize().as_bytes()[..4]);
    id
}

fn tag(secret: &DeviceSecret, payload: &[u8], id: &DeviceId, counter: u32) -> [u8; 12] {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(TAG_DOMAIN);
    h.update(payload);
    h.update(id);
    h.update(&counter.to_le_bytes());
    let mut t = [0u8; 12];
    t.copy_from_slice(&h.finalize().as_bytes()[..12]);
    t
}

/// `payload` sealed by the device holding `secret`, as message number `counter`.
pub fn seal(secret: &DeviceSecret, counter: u32, payload: &[u8]) -> Vec<u8> {
    let id = device_id(secret);
    let mut out = Vec::with_capacity(payload.len() + SEAL_LEN);
    out.extend_from_slice(payload);
    out.extend_from_slice(&id);
    out.extend_from_slice(&counter.to_le_bytes());
    out.extend_from_slice(&tag(secret, payload, &id, counter));
    let check = check_value(&out);
    out.extend_from_slice(&check);
    out
}

/// The first word of a provisioning file, which carries a device's secret from its `device
/// init` to its mirror on the ground: `narlink-device-key-v1 <64 hex digits>`.
pub const SECRET_FILE_TAG: &str = "narlink-device-key-v1";

/// A secret as a provisioning file's text.
pub fn encode_secret(secret: &DeviceSecret) -> String {
    format!("{SECRET_FILE_TAG} {}\n", crate::digest::hex(secret))
}

/// A secret from a provisioning file's text.
pub fn parse_secret(text: &str) -> Option<DeviceSecret> {
    let mut words = text.split_whitespace();
    if words.next() != Some(SECRET_FILE_TAG) {
        return None;
    }
    let hex = words.next()?;
    if hex.len() != 64 || words.next().is_some() {
        return None;
    }
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(secret)
}

/// A sealed message as it arrived, its seal not checked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub payload: &'a [u8],
    pub device: DeviceId,
    pub counter: u32,
    tag: [u8; 12],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("the message is damaged (its checksum fails) or was never sealed")]
    Damaged,
    #[error("the message is sealed by device {}, not by this one", crate::digest::hex(.0))]
    Foreign(DeviceId),
    #[error("the message carries device {}'s identity but not its key's seal: forged", crate::digest::hex(.0))]
    Forged(DeviceId),
}

impl<'a> Sealed<'a> {
    /// Split a sealed message and check its CRC; says nothing yet of who sealed it.
    pub fn parse(bytes: &'a [u8]) -> Result<Sealed<'a>, SealError> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(SealError::Damaged);
        };
        let (body, crc) = bytes.split_at(body_len);
        if body.len() < SEAL_LEN - 4 || check_value(body) != crc {
            return Err(SealError::Damaged);
        }
        let (payload, seal) = body.split_at(body.len() - (SEAL_LEN - 4));
        let mut device = [0u8; 4];
        device.copy_from_slice(&seal[..4]);
        let counter = u32::from_le_bytes([seal[4], seal[5], seal[6], seal[7]]);
        let mut tag = [0u8; 12];
        tag.copy_from_slice(&seal[8..20]);
        Ok(Sealed {
            payload,
            device,
            counter,
            tag,
        })
    }

    /// Check the seal against the secret of the device the receiver expects.
    pub fn verify(&self, secret: &DeviceSecret) -> Result<(), SealError> {
        let id = device_id(secret);
        if id != self.device {
            return Err(SealError::Foreign(self.device));
        }
        let expected = tag(secret, self.payload, &id, self.counter);
        // Not secret-dependent timing worth guarding: one guess per message looked at.
        if expected != self.tag {
            return Err(SealError::Forged(self.device));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: DeviceSecret = [7; 32];

    #[test]
    fn seal_then_open_gives_the_payload_back() {
        for payload in [&b""[..], b"nS", &[0xa5; 300]] {
            let m = seal(&KEY, 41, payload);
            assert_eq!(m.len(), payload.len() + SEAL_LEN);
            let s = Sealed::parse(&m).unwrap();
            assert_eq!(s.payload, payload);
            assert_eq!((s.device, s.counter), (device_id(&KEY), 41));
            s.verify(&KEY).unwrap();
        }
    }

    #[test]
    fn every_flipped_bit_is_damage_and_a_recomputed_crc_is_forgery() {
        let m = seal(&KEY, 3, b"a status report");
        for bit in 0..m.len() * 8 {
            let mut bad = m.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Sealed::parse(&bad), Err(SealError::Damaged), "bit {bit}");
            // The same change by someone who recomputes the CRC.
            let n = bad.len() - 4;
            let crc = check_value(&bad[..n]);
            bad[n..].copy_from_slice(&crc);
            if bit / 8 >= n {
                continue;
            }
            let s = Sealed::parse(&bad).unwrap();
            let id_byte = (m.len() - SEAL_LEN..m.len() - SEAL_LEN + 4).contains(&(bit / 8));
            let want = if id_byte {
                SealError::Foreign(s.device)
            } else {
                SealError::Forged(s.device)
            };
            assert_eq!(s.verify(&KEY), Err(want), "bit {bit}");
        }
    }

    #[test]
    fn secrets_round_trip_through_their_file_text() {
        let text = encode_secret(&KEY);
        assert_eq!(parse_secret(&text), Some(KEY));
        assert_eq!(parse_secret(&text.replace("v1", "v2")), None);
        assert_eq!(parse_secret(&text[..text.len() - 3]), None);
        assert_eq!(parse_secret(&format!("{text} extra")), None);
    }

    /// A bare message that ends in its own CRC-32C (a status report does) is not a seal.
    #[test]
    fn a_bare_message_ending_in_its_crc_is_not_sealed() {
        let mut m = vec![0x6e, 0x53, 1, 0, 0];
        m.extend_from_slice(&[9; 40]);
        let crc = crc32c(&m).to_le_bytes();
        m.extend_from_slice(&crc);
        assert_eq!(Sealed::parse(&m), Err(SealError::Damaged));
    }

    #[test]
    fn another_devices_seal_is_foreign() {
        let m = seal(&[8; 32], 1, b"x");
        let s = Sealed::parse(&m).unwrap();
        assert_eq!(s.verify(&KEY), Err(SealError::Foreign(device_id(&[8; 32]))));
    }

    /// Test vector: key [7; 32], counter 0x01020304, payload "nS" give these bytes (made by
    /// this code when the format was fixed; a change of the format must change this test).
    #[test]
    fn vector() {
        let m = seal(&KEY, 0x0102_0304, b"nS");
        // "nS", device id, counter 0x01020304 LE, tag, check.
        let want = [
            "6e53",
            "41251a8c",
            "04030201",
            "23d31f15e562f5335e451415",
            "2c6f3d77",
        ];
        assert_eq!(crate::digest::hex(&m), want.concat());
    }
}
