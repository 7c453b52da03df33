//! The device section of a status report (format version 2): what is live, how the last
//! activation went, the newest bundle sequence the device took, what happened to its other
//! bundles, and which store paths left it (garbage collection).
//!
//! ```text
//!  varint  live generation      0: no generation live (and no root follows)
//!  5       live root tag        only if generation > 0: see [`PathTag`]
//!  1       activation           see [`Activation`]
//!  varint  sequence             the newest bundle sequence the device took (0: none)
//!  1       reason               why the report's own bundle failed (see [`Reason`]), 0 if not
//!  varint  n                    bundles noted, then n × (4 id prefix, 1 phase, 1 reason)
//!  varint  m                    store paths removed, then m × 5-byte tags
//!  ..      probation            only when the report's flag bit 3 is set: see [`Probation`]
//! ```

use crate::storepath::split;
use crate::wire::{put_varint, varint_len, Reader, WireError};

use super::Phase;

/// The first 40 bits of a store path's packed hash: its first 8 hash characters. The ground
/// matches tags against the paths it knows; a wrong or ambiguous match cannot go unnoticed,
/// because the state digest of the result must equal the one the device reported.
pub type PathTag = [u8; 5];

/// Bytes of a [`BundleNote`].
pub const NOTE_LEN: usize = 6;

/// The tag of `store_path` (`None` if it is not a store path).
pub fn path_tag(store_path: &str) -> Option<PathTag> {
    let (h, _) = split(store_path)?;
    let mut t = [0; 5];
    t.copy_from_slice(&h[..5]);
    Some(t)
}

/// How the device's last landing (profile switch and activation) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// No landing recorded.
    #[default]
    None,
    /// Switched and activated.
    Passed,
    /// The activation failed; the previous generation is live again.
    RolledBack,
    /// A landing is under way (switch or activation not finished).
    Landing,
    /// Switched and activated, on probation: the ground's confirmation has not come yet
    /// (issue 19; the report's probation block says which bundle and how far).
    Probation,
    /// Switched, activated, then switched back to the previous generation, which is live and
    /// activated again: not confirmed in time, a health check failed, or the new generation
    /// did not start (the probation block says why).
    Reverted,
    /// Switched, activated, and confirmed by the ground after its probation.
    Committed,
    /// A value this build does not know.
    Unknown(u8),
}

impl Activation {
    pub fn from_u8(b: u8) -> Activation {
        match b {
            0 => Activation::None,
            1 => Activation::Passed,
            2 => Activation::RolledBack,
            3 => Activation::Landing,
            4 => Activation::Probation,
            5 => Activation::Reverted,
            6 => Activation::Committed,
            n => Activation::Unknown(n),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Activation::None => 0,
            Activation::Passed => 1,
            Activation::RolledBack => 2,
            Activation::Landing => 3,
            Activation::Probation => 4,
            Activation::Reverted => 5,
            Activation::Committed => 6,
            Activation::Unknown(n) => n,
        }
    }
}

/// Why a bundle was refused, failed or will not be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reason {
    /// Nothing went wrong (or the phase says it all).
    #[default]
    None,
    /// The bundle carries no signature and the device requires one.
    Unsigned,
    /// Signed, but by no key the device trusts.
    Untrusted,
    /// A signature by a trusted key does not verify.
    BadSignature,
    /// Its sequence is not newer than the last bundle imported: a replay.
    Replayed,
    /// A newer bundle superseded it before it was imported.
    Superseded,
    /// Planned against another device state than the one the device is in.
    StaleBase,
    /// A chunk or a NAR did not verify on reassembly.
    Verify,
    /// Nix refused the import.
    Nix,
    /// Over the device's limits (size, storage).
    Limits,
    /// The activation failed and was rolled back.
    Activation,
    /// Withdrawn by the ground.
    Cancelled,
    /// The head or manifest is malformed.
    Malformed,
    /// Landed, then reverted: no confirmation came within the probation window.
    NotConfirmed,
    /// Landed, then reverted: a required health check failed.
    HealthCheck,
    /// Landed, then reverted: the new generation's narlink failed to start too often.
    FailedStarts,
    /// Anything else (the device's log says what).
    Other,
    /// A value this build does not know.
    Unknown(u8),
}

impl Reason {
    pub fn from_u8(b: u8) -> Reason {
        use Reason::*;
        match b {
            0 => None,
            1 => Unsigned,
            2 => Untrusted,
            3 => BadSignature,
            4 => Replayed,
            5 => Superseded,
            6 => StaleBase,
            7 => Verify,
            8 => Nix,
            9 => Limits,
            10 => Activation,
            11 => Cancelled,
            12 => Malformed,
            13 => NotConfirmed,
            14 => HealthCheck,
            15 => FailedStarts,
            255 => Other,
            n => Unknown(n),
        }
    }

    pub fn to_u8(self) -> u8 {
        use Reason::*;
        match self {
            None => 0,
            Unsigned => 1,
            Untrusted => 2,
            BadSignature => 3,
            Replayed => 4,
            Superseded => 5,
            StaleBase => 6,
            Verify => 7,
            Nix => 8,
            Limits => 9,
            Activation => 10,
            Cancelled => 11,
            Malformed => 12,
            NotConfirmed => 13,
            HealthCheck => 14,
            FailedStarts => 15,
            Other => 255,
            Unknown(n) => n,
        }
    }

    /// A short name for people and scripts.
    pub fn name(self) -> String {
        use Reason::*;
        match self {
            None => "none".into(),
            Unsigned => "unsigned".into(),
            Untrusted => "untrusted signer".into(),
            BadSignature => "bad signature".into(),
            Replayed => "replayed".into(),
            Superseded => "superseded".into(),
            StaleBase => "planned against another state".into(),
            Verify => "does not verify".into(),
            Nix => "nix import failed".into(),
            Limits => "over the device's limits".into(),
            Activation => "activation failed, rolled back".into(),
            Cancelled => "cancelled".into(),
            Malformed => "malformed".into(),
            NotConfirmed => "reverted: not confirmed".into(),
            HealthCheck => "reverted: a health check failed".into(),
            FailedStarts => "reverted: did not start".into(),
            Other => "other (see the device log)".into(),
            Unknown(n) => format!("unknown reason {n}"),
        }
    }
}

/// Another bundle the device holds or refused: the first 4 bytes of its id, its phase, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BundleNote {
    pub id_prefix: [u8; 4],
    pub phase: Phase,
    pub reason: Reason,
}

/// The live generation of the device's profile and the tag of the path it points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Live {
    /// At least 1.
    pub generation: u32,
    pub root: PathTag,
}

/// The longest health-check name a report carries (longer names are cut).
pub const MAX_CHECK_NAME: usize = 32;

/// Where the generation on probation stands, while it is on probation and after it was
/// reverted (until the next landing). Committed generations have none.
///
/// ```text
///  4       bundle id prefix    the bundle that landed the generation
///  1       reason              0 on probation; why it was reverted ([`Reason`])
///  varint  reports             reports the device sent under the generation
///  varint  minutes             minutes the device counted under it (its running time)
///  1       starts              starts in a row that did not prove healthy
///  1       n                   length of the failed health check's name, at most 32 (a
///                              report with more is refused: not canonical)
///  n       name
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Probation {
    pub bundle_prefix: [u8; 4],
    pub reason: Reason,
    pub reports: u32,
    pub minutes: u32,
    pub starts: u8,
    pub check: Vec<u8>,
}

impl Probation {
    pub fn encoded_len(&self) -> usize {
        4 + 1
            + varint_len(u64::from(self.reports))
            + varint_len(u64::from(self.minutes))
            + 2
            + self.check.len().min(MAX_CHECK_NAME)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bundle_prefix);
        out.push(self.reason.to_u8());
        put_varint(out, u64::from(self.reports));
        put_varint(out, u64::from(self.minutes));
        out.push(self.starts);
        let name = &self.check[..self.check.len().min(MAX_CHECK_NAME)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Probation, WireError> {
        let bundle_prefix = r.take_array()?;
        let reason = Reason::from_u8(r.u8()?);
        let reports = r.varint_u32()?;
        let minutes = r.varint_u32()?;
        let starts = r.u8()?;
        let n = usize::from(r.u8()?);
        Ok(Probation {
            bundle_prefix,
            reason,
            reports,
            minutes,
            starts,
            check: r.take(n)?.to_vec(),
        })
    }
}

/// What a device says about itself in every report (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DeviceSection {
    pub live: Option<Live>,
    pub activation: Activation,
    pub sequence: u64,
    /// Why the report's bundle failed or was refused.
    pub reason: Reason,
    /// Other bundles, newest first.
    pub others: Vec<BundleNote>,
    /// Store paths that left the device (garbage collection) and that the device has not
    /// seen the ground plan against yet.
    pub removed: Vec<PathTag>,
    /// Present while a generation is on probation or after it was reverted.
    pub probation: Option<Probation>,
}

impl DeviceSection {
    pub fn encoded_len(&self) -> usize {
        let live = self
            .live
            .map_or(1, |l| varint_len(u64::from(l.generation)) + 5);
        live + 1
            + varint_len(self.sequence)
            + 1
            + varint_len(self.others.len() as u64)
            + NOTE_LEN * self.others.len()
            + varint_len(self.removed.len() as u64)
            + 5 * self.removed.len()
            + self.probation.as_ref().map_or(0, Probation::encoded_len)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.live {
            Some(l) => {
                put_varint(out, u64::from(l.generation));
                out.extend_from_slice(&l.root);
            }
            None => out.push(0),
        }
        out.push(self.activation.to_u8());
        put_varint(out, self.sequence);
        out.push(self.reason.to_u8());
        put_varint(out, self.others.len() as u64);
        for n in &self.others {
            out.extend_from_slice(&n.id_prefix);
            out.push(n.phase.to_u8());
            out.push(n.reason.to_u8());
        }
        put_varint(out, self.removed.len() as u64);
        for t in &self.removed {
            out.extend_from_slice(t);
        }
        if let Some(p) = &self.probation {
            p.encode(out);
        }
    }

    /// Decodes the section (with a probation block if the report's flag says one follows);
    /// counts are checked against the bytes left before anything is allocated.
    pub fn decode(r: &mut Reader<'_>, probation: bool) -> Result<DeviceSection, WireError> {
        let generation = r.varint_u32()?;
        let live = if generation == 0 {
            None
        } else {
            Some(Live {
                generation,
                root: r.take_array()?,
            })
        };
        let activation = Activation::from_u8(r.u8()?);
        let sequence = r.varint_u64()?;
        let reason = Reason::from_u8(r.u8()?);
        let n = counted(r, NOTE_LEN)?;
        let mut others = Vec::with_capacity(n);
        for _ in 0..n {
            others.push(BundleNote {
                id_prefix: r.take_array()?,
                phase: Phase::from_u8(r.u8()?),
                reason: Reason::from_u8(r.u8()?),
            });
        }
        let m = counted(r, 5)?;
        let mut removed = Vec::with_capacity(m);
        for _ in 0..m {
            removed.push(r.take_array()?);
        }
        let probation = if probation {
            Some(Probation::decode(r)?)
        } else {
            None
        };
        Ok(DeviceSection {
            live,
            activation,
            sequence,
            reason,
            others,
            removed,
            probation,
        })
    }
}

/// A count of `each`-byte entries that the bytes left can hold.
fn counted(r: &mut Reader<'_>, each: usize) -> Result<usize, WireError> {
    let n = r.varint_u64()?;
    let needed = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(each))
        .unwrap_or(usize::MAX);
    if needed > r.remaining() {
        return Err(WireError::Truncated {
            needed,
            remaining: r.remaining(),
        });
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What probation adds to a report (protocol/SPEC.md): 9 bytes while reports and
    /// minutes stay below 128, plus the failed check's name, cut at 32 bytes.
    #[test]
    fn the_probation_block_costs_nine_bytes() {
        let mut p = Probation {
            bundle_prefix: *b"abcd",
            reason: Reason::None,
            reports: 127,
            minutes: 127,
            starts: 0,
            check: Vec::new(),
        };
        assert_eq!(p.encoded_len(), 9);
        p.check = b"20-radio".to_vec();
        assert_eq!(p.encoded_len(), 17);
        p.check = vec![b'x'; 100];
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), 9 + MAX_CHECK_NAME);
        assert_eq!(p.encoded_len(), out.len());
    }
}
