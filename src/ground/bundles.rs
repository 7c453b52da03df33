//! The bundles a mirror packed, as the ground keeps track of them: which one a command
//! names, which may still be sent, and `ground cancel`.

use narlink_protocol::announce::Withdrawal;
use narlink_protocol::bundle::BundleId;
use narlink_protocol::digest::hex;
use narlink_protocol::frame::FrameRef;
use narlink_protocol::signature::SecretKey;
use serde::Serialize;

use crate::state::mirror::{GroundBundle, Mirror, Standing};
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no bundle packed in this mirror has an id starting with {0}")]
    Unknown(String),
    #[error("{0} names more than one bundle of this mirror: give more of its id")]
    Ambiguous(String),
    #[error("{0} is not a bundle id (hex digits)")]
    NotHex(String),
    #[error("bundle {id} is {standing}: {what}")]
    Settled {
        id: String,
        standing: &'static str,
        what: &'static str,
    },
    #[error(
        "the bundle's frames are too small to carry a withdrawal (at least {} bytes)",
        narlink_protocol::announce::WITHDRAW_LEN
    )]
    FramesTooSmall,
    #[error("bundle {0} was never cut into frames here, so there is no link to withdraw it on")]
    NeverSent(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The bundle of this mirror whose id starts with the hex digits `prefix`.
pub fn find(mirror: &Mirror, prefix: &str) -> Result<(BundleId, GroundBundle), BundleError> {
    let p = prefix.to_ascii_lowercase();
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BundleError::NotHex(prefix.into()));
    }
    let mut found = mirror
        .ground_bundles()?
        .into_iter()
        .filter(|(id, _)| hex(id).starts_with(&p));
    match (found.next(), found.next()) {
        (Some(b), None) => Ok(b),
        (Some(_), Some(_)) => Err(BundleError::Ambiguous(prefix.into())),
        (None, _) => Err(BundleError::Unknown(prefix.into())),
    }
}

/// Whether frames of bundle `id` may still be sent: a mirror made before the ground kept
/// track of bundles knows none, and sends.
pub fn check_sendable(mirror: &Mirror, id: &BundleId) -> Result<(), BundleError> {
    let known = mirror.ground_bundles()?.into_iter().find(|(b, _)| b == id);
    match known {
        Some((_, b)) if b.standing != Standing::InFlight => Err(BundleError::Settled {
            id: hex(id),
            standing: b.standing.name(),
            what: "nothing of it is sent any more",
        }),
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CancelReport {
    pub bundle: String,
    pub sequence: u64,
    /// The signed withdrawal frame for the uplink, if a key was given.
    #[serde(skip)]
    pub withdrawal: Option<Vec<u8>>,
}

/// `ground cancel`: withdraw the bundle in flight named by `prefix`. The ground sends none
/// of it any more and packing is no longer held back by it; its manifest stays, so if the
/// device imports it anyway (it may have all of it already) the next report still folds in.
/// With `key`, a signed withdrawal frame is made (and kept: `ground resend` sends it again
/// while reports name the bundle): a device that takes it drops what it holds of the bundle
/// and never imports it. Without, the next bundle supersedes it on the device.
pub fn cancel(
    mirror: &Mirror,
    prefix: &str,
    key: Option<&SecretKey>,
) -> Result<CancelReport, BundleError> {
    let (id, mut b) = find(mirror, prefix)?;
    if b.standing != Standing::InFlight {
        return Err(BundleError::Settled {
            id: hex(&id),
            standing: b.standing.name(),
            what: "only a bundle in flight can be cancelled",
        });
    }
    let withdrawal = match (key, mirror.send_record(&id)?) {
        (Some(key), Some(rec)) => {
            let params = rec.options.params(rec.bundle_len);
            let w = Withdrawal::sign(key, id, params);
            let (header, payload) = w.to_frame().ok_or(BundleError::FramesTooSmall)?;
            let mut frame = Vec::new();
            if let Ok(f) = FrameRef::new(header, &payload) {
                f.encode(&mut frame);
            }
            Some(frame)
        }
        (Some(_), None) => return Err(BundleError::NeverSent(hex(&id))),
        (None, _) => None,
    };
    b.standing = Standing::Cancelled;
    let tx = mirror.db.begin_write()?;
    mirror.put_ground_bundle(&tx, &id, &b)?;
    if let Some(frame) = &withdrawal {
        mirror.put_withdrawal(&tx, &id, frame)?;
    }
    mirror.db.commit(tx)?;
    Ok(CancelReport {
        bundle: hex(&id),
        sequence: b.sequence,
        withdrawal,
    })
}
