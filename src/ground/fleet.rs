//! A ground directory holding the mirrors of many devices (one subdirectory each): a
//! downlink message goes to the mirror of the device whose seal it carries.

use std::path::{Path, PathBuf};

use narlink_protocol::digest::hex;
use narlink_protocol::seal::{device_id, Sealed};

use crate::state::mirror::Mirror;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0} is neither a mirror nor a directory of mirrors (`narlink ground init --mirror DIR` makes one)")]
    NoMirror(PathBuf),
    #[error(
        "the message is not sealed by any device, so it cannot be routed among the mirrors in {0}"
    )]
    NotSealed(PathBuf),
    #[error("no mirror in {dir} holds the key of device {device} (give it with `ground init --device-key` or `ground device-key`)")]
    NoDevice { dir: PathBuf, device: String },
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Whether `dir` is one mirror.
pub fn is_mirror(dir: &Path) -> bool {
    dir.join(Mirror::FILE).exists()
}

/// Whether `dir` is not a mirror itself but holds mirrors.
pub fn holds_mirrors(dir: &Path) -> bool {
    !is_mirror(dir) && mirrors(dir).is_ok()
}

/// `dir` itself if it is a mirror, else every mirror directly under it, in name order.
pub fn mirrors(dir: &Path) -> Result<Vec<PathBuf>, FleetError> {
    if is_mirror(dir) {
        return Ok(vec![dir.to_owned()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| FleetError::Io(dir.into(), e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_mirror(p))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(FleetError::NoMirror(dir.into()));
    }
    Ok(found)
}

/// The mirror `message` (a sealed downlink message) belongs to: `dir` if it is a mirror,
/// else the mirror under it that holds the key of the device id in the seal. Nothing is
/// checked here beyond the id: the mirror's own check follows.
pub fn mirror_for(dir: &Path, message: &[u8]) -> Result<PathBuf, FleetError> {
    if is_mirror(dir) {
        return Ok(dir.to_owned());
    }
    let all = mirrors(dir)?;
    let Ok(sealed) = Sealed::parse(message) else {
        return Err(FleetError::NotSealed(dir.into()));
    };
    for m in all {
        let keys = Mirror::downlink_keys(&m)?;
        if keys.secret.is_some_and(|s| device_id(&s) == sealed.device) {
            return Ok(m);
        }
    }
    Err(FleetError::NoDevice {
        dir: dir.into(),
        device: hex(&sealed.device),
    })
}
