//! The device's identity on the downlink (protocol/SPEC.md, "Sealed downlink messages"): a
//! secret made at `device init` and provisioned to the ground before launch, and a counter
//! that never repeats. Both live in files beside the state database, so restoring
//! `device.redb` from a backup, or making it afresh after damage, keeps the identity and
//! never reuses a counter.
//!
//! - `device-key`: the secret as a provisioning file (`narlink-device-key-v1 <hex>`), mode 0600.
//! - `downlink-counter`: the counter of the last message sealed, in decimal.
//!
//! The next counter is the larger of the last one plus one and the minutes since 2026-01-01
//! (UTC): if the counter file is lost, the device's clock brings the counter past what the
//! ground has seen within the minutes the device was down, instead of every report being
//! refused as older for good.

use std::path::{Path, PathBuf};

use narlink_protocol::seal::{self, DeviceId, DeviceSecret};

use super::device::DeviceState;
use super::{io_err, write_durably, StateError};

pub const KEY_FILE: &str = "device-key";
pub const COUNTER_FILE: &str = "downlink-counter";

/// The device secret in `dir`, made (from the kernel's random source) if there is none yet.
/// Returns it and whether it was made now.
pub fn ensure_secret(dir: &Path) -> Result<(DeviceSecret, bool), StateError> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return Ok((read_secret(&path)?, false));
    }
    let mut secret = [0u8; 32];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .map_err(io_err(Path::new("/dev/urandom")))?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_durably(&path, seal::encode_secret(&secret).as_bytes(), 0o600)?;
    Ok((secret, true))
}

fn read_secret(path: &Path) -> Result<DeviceSecret, StateError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    seal::parse_secret(&text).ok_or_else(|| StateError::Corrupt(path.display().to_string()))
}

impl DeviceState {
    fn identity_path(&self, name: &str) -> PathBuf {
        self.db.dir().join(name)
    }

    /// The device's secret (made by `device init`).
    pub fn device_secret(&self) -> Result<DeviceSecret, StateError> {
        let path = self.identity_path(KEY_FILE);
        if !path.exists() {
            return Err(StateError::Missing(path, "narlink device init"));
        }
        read_secret(&path)
    }

    /// The device's identity on the downlink.
    pub fn device_id(&self) -> Result<DeviceId, StateError> {
        Ok(seal::device_id(&self.device_secret()?))
    }

    /// The counter of the last message sealed (0 if none).
    pub fn last_counter(&self) -> Result<u64, StateError> {
        let path = self.identity_path(COUNTER_FILE);
        Ok(match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&path)(e)),
            // A damaged counter file: the clock floor in `seal` still keeps the counter rising.
            Ok(text) => text.trim().parse().unwrap_or(0),
        })
    }

    /// `payload` sealed for the downlink under the next counter, which is durable before the
    /// message exists.
    pub fn seal(&self, payload: &[u8]) -> Result<Vec<u8>, StateError> {
        let secret = self.device_secret()?;
        let path = self.identity_path(COUNTER_FILE);
        let last = self.last_counter()?;
        let next = (last + 1).max(super::clock_seconds() / 60);
        let counter = u32::try_from(next)
            .map_err(|_| StateError::Corrupt(format!("{}: counter past 2^32", path.display())))?;
        write_durably(&path, format!("{counter}\n").as_bytes(), 0o644)?;
        Ok(seal::seal(&secret, counter, payload))
    }
}
