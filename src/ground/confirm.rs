//! The confirmation of a generation on probation (issue 19): once a report the device sealed
//! under its new generation came down, the ground answers it with a confirmation (protocol
//! `confirm`), sent with the next `ground resend` or `ground pack` without an operator step.

use narlink_protocol::confirm::Confirmation;
use narlink_protocol::digest::hex;
use narlink_protocol::frame::FrameRef;
use narlink_protocol::seal::DeviceSecret;
use narlink_protocol::status::device::Activation;
use narlink_protocol::status::StatusReport;
use serde::Serialize;

use crate::state::mirror::Mirror;
use crate::state::StateError;

/// A confirmation to send.
#[derive(Clone, Debug, Serialize)]
pub struct Due {
    pub bundle: String,
    pub generation: u32,
    /// The report it answers.
    pub counter: u32,
    #[serde(skip)]
    pub frame: Vec<u8>,
}

/// The confirmation `report` (sealed by the device under `counter`) calls for, if it says a
/// generation is on probation that a bundle of this mirror landed. None without the
/// device's key (the mirror cannot make one), for a bare report, or a bundle prefix that
/// names no bundle (or two) of this mirror.
pub fn due(
    mirror: &Mirror,
    report: &StatusReport,
    counter: Option<u32>,
    secret: Option<&DeviceSecret>,
) -> Result<Option<Due>, StateError> {
    let d = &report.device;
    let (Some(counter), Some(secret), Some(p), Some(live)) =
        (counter, secret, d.probation.as_ref(), d.live)
    else {
        return Ok(None);
    };
    if d.activation != Activation::Probation {
        return Ok(None);
    }
    let mut named = mirror
        .ground_bundles()?
        .into_iter()
        .filter(|(id, _)| id[..4] == p.bundle_prefix);
    let (Some((bundle, _)), None) = (named.next(), named.next()) else {
        return Ok(None);
    };
    let c = Confirmation::new(secret, bundle, live.generation, counter);
    let (header, payload) = c.to_frame();
    let mut frame = Vec::new();
    FrameRef::new(header, &payload)
        .expect("a confirmation frame is well-formed")
        .encode(&mut frame);
    Ok(Some(Due {
        bundle: hex(&bundle),
        generation: live.generation,
        counter,
        frame,
    }))
}

/// The confirmation the last report this mirror took calls for.
pub fn due_now(mirror: &Mirror) -> Result<Option<Due>, StateError> {
    let secret = mirror.device_secret()?;
    let Some(last) = mirror.last_report()? else {
        return Ok(None);
    };
    let Some((report, counter)) = crate::status_view::report_of(&last.bytes) else {
        return Ok(None);
    };
    due(mirror, &report, counter, secret.as_ref())
}
