//! Taking a message off the downlink: its seal checked against the mirror's device key before
//! anything in it is believed (protocol/SPEC.md, "Sealed downlink messages"). A refused
//! message changes nothing.

use narlink_protocol::digest::hex;
use narlink_protocol::seal::{SealError, Sealed};

use crate::state::mirror::DownlinkKeys;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error("refused: the {what} is damaged (its checksum fails): ask the device for it again")]
    Damaged { what: &'static str },
    #[error("refused: the {what} is not sealed, so nothing says which device sent it (a narlink older than this one wrote it, or someone else did)")]
    Unauthenticated { what: &'static str },
    #[error(
        "refused: the {what} comes from device {found}, and this mirror is for device {expected}"
    )]
    Foreign {
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("refused: the {what} carries device {device}'s identity but not its seal: forged")]
    Forged { what: &'static str, device: String },
    #[error("refused: the {what} is message {counter} of device {device}, not newer than message {last}, the last this mirror took: a replay or a stale copy")]
    Older {
        what: &'static str,
        device: String,
        counter: u32,
        last: u32,
    },
    #[error("this mirror has no device key, so it cannot tell the device's messages from anyone's: give it the device's provisioning file with `ground device-key --mirror DIR FILE` (the device writes it with `device identity --export FILE`)")]
    NoKey,
    #[error(transparent)]
    State(#[from] StateError),
}

/// Check the seal of `bytes`, a `what` (status report, inventory), against the mirror's
/// `keys`, and that it is newer than the last message taken (or, with `again`, not older: a
/// report already taken, read once more). `bare` says whether the bytes decode as an
/// unsealed message. Returns the message, its seal checked; records nothing.
pub fn open<'b>(
    keys: &DownlinkKeys,
    bytes: &'b [u8],
    what: &'static str,
    again: bool,
    bare: impl Fn(&[u8]) -> bool,
) -> Result<Sealed<'b>, DownlinkError> {
    let secret = keys.secret.ok_or(DownlinkError::NoKey)?;
    let sealed = match Sealed::parse(bytes) {
        Ok(s) => s,
        Err(_) if bare(bytes) => return Err(DownlinkError::Unauthenticated { what }),
        Err(_) => return Err(DownlinkError::Damaged { what }),
    };
    let device = hex(&sealed.device);
    match sealed.verify(&secret) {
        Ok(()) => {}
        Err(SealError::Foreign(found)) => {
            return Err(DownlinkError::Foreign {
                what,
                found: hex(&found),
                expected: hex(&narlink_protocol::seal::device_id(&secret)),
            })
        }
        Err(_) => return Err(DownlinkError::Forged { what, device }),
    }
    let last = keys.last;
    let fresh = if again {
        sealed.counter >= last
    } else {
        sealed.counter > last
    };
    if !fresh {
        return Err(DownlinkError::Older {
            what,
            device,
            counter: sealed.counter,
            last,
        });
    }
    Ok(sealed)
}
