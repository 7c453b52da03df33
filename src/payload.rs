//! Payload coding: how a new chunk's bytes travel (zstd or raw) and how a device turns
//! payload bytes back into a verified chunk.

use narlink_protocol::manifest::{ChunkId, Encoding, Payload, MAX_SPAN};

use crate::chunking::chunk_id;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("chunk {chunk}: payload of {len} bytes is larger than any encoding of a {raw_len}-byte chunk")]
    TooLong {
        chunk: String,
        len: u32,
        raw_len: u32,
    },
    #[error("chunk {chunk}: payload does not decompress ({reason})")]
    Zstd { chunk: String, reason: String },
    #[error("chunk {chunk}: {reason}")]
    Patch { chunk: String, reason: String },
    #[error("chunk {chunk}: decoded to {found} bytes, the manifest says {expected}")]
    Length {
        chunk: String,
        found: usize,
        expected: u32,
    },
    #[error("chunk {chunk}: BLAKE3 of its bytes is {found}: the payload was corrupted or forged")]
    Hash { chunk: String, found: String },
    #[error("chunk {chunk}: not a span (a payload with bytes, then joined payloads of at most {MAX_SPAN} bytes in all)")]
    Span { chunk: String },
}

/// Short hex form of a chunk id for messages.
pub fn short_id(id: &ChunkId) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Payload frames are bare zstd frames: no magic number and no content size (the manifest
/// gives the decoded length), 4 to 8 bytes less per payload than a standard frame.
fn frame_params(c: &mut zstd::bulk::Compressor) -> std::io::Result<()> {
    use zstd::zstd_safe::{CParameter, FrameFormat};
    c.set_parameter(CParameter::Format(FrameFormat::Magicless))?;
    c.set_parameter(CParameter::ContentSizeFlag(false))?;
    c.set_parameter(CParameter::DictIdFlag(false))
}

/// One bare zstd frame of `data`, at `level`, optionally against a prepared dictionary.
fn compress(
    data: &[u8],
    level: i32,
    dictionary: Option<&zstd::dict::EncoderDictionary>,
) -> std::io::Result<Vec<u8>> {
    let mut c = match dictionary {
        Some(d) => {
            let mut c = zstd::bulk::Compressor::with_prepared_dictionary(d)?;
            // Search the prepared dictionary in place: copying it into the context re-indexes
            // up to 4 MiB per chunk at high levels (most of the ground's pack time).
            use zstd::zstd_safe::{CParameter, DictAttachPref};
            c.set_parameter(CParameter::ForceAttachDict(DictAttachPref::ForceAttach))?;
            c
        }
        None => zstd::bulk::Compressor::new(level)?,
    };
    frame_params(&mut c)?;
    c.compress(data)
}

/// Decode one bare zstd frame into at most `capacity` bytes (a hostile frame cannot make
/// this allocate more), optionally against a raw-content dictionary.
fn decompress(
    bytes: &[u8],
    capacity: usize,
    dictionary: Option<&[u8]>,
) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::{DParameter, FrameFormat};
    let mut d = match dictionary {
        Some(r) => zstd::bulk::Decompressor::with_dictionary(r)?,
        None => zstd::bulk::Decompressor::new()?,
    };
    d.set_parameter(DParameter::Format(FrameFormat::Magicless))?;
    d.decompress(bytes, capacity)
}

/// Patches travel as LZMA (the `.lzma` format's coder; its sparse diff streams compress ~13 %
/// better than with zstd -19) with a dictionary of 1 MiB, enough for any patch, and without
/// the format's 13-byte header, which for these fixed options is always the same.
const LZMA_DICT: u32 = 1 << 20;
/// liblzma's LZMA_PRESET_EXTREME flag.
pub(crate) const LZMA_PRESET_EXTREME: u32 = 0x8000_0000;

fn lzma_options(dict: u32, preset: u32) -> std::io::Result<xz2::stream::LzmaOptions> {
    let mut o = xz2::stream::LzmaOptions::new_preset(preset).map_err(std::io::Error::other)?;
    o.dict_size(dict);
    Ok(o)
}

/// The `.lzma` header our options give: properties (lc 3, lp 0, pb 2), dictionary size,
/// unknown length (the stream ends with an end marker).
fn lzma_header(dict: u32) -> [u8; 13] {
    let mut h = [0xffu8; 13];
    h[0] = 93; // (pb 2 × 5 + lp 0) × 9 + lc 3
    h[1..5].copy_from_slice(&dict.to_le_bytes());
    h
}

/// LZMA of a patch, without the header the decoder assumes.
pub(crate) fn lzma_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    lzma_compress_with(data, LZMA_DICT, 9 | LZMA_PRESET_EXTREME)
}

/// LZMA of `data` at liblzma's `preset` with a dictionary of `dict` bytes, without the header.
pub(crate) fn lzma_compress_with(data: &[u8], dict: u32, preset: u32) -> std::io::Result<Vec<u8>> {
    lzma_compress_pieces(&[data], dict, preset)
}

/// [`lzma_compress_with`] of `pieces` one after the other, without joining them first.
pub(crate) fn lzma_compress_pieces(
    pieces: &[&[u8]],
    dict: u32,
    preset: u32,
) -> std::io::Result<Vec<u8>> {
    use xz2::stream::{Action, Status};
    let mut s = xz2::stream::Stream::new_lzma_encoder(&lzma_options(dict, preset)?)
        .map_err(std::io::Error::other)?;
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + len / 2 + 1024);
    let mut feed = |input: &[u8], action: Action| -> std::io::Result<Status> {
        let mut at = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(1024));
            }
            let before = s.total_in();
            let status = s
                .process_vec(&input[at..], &mut out, action)
                .map_err(std::io::Error::other)?;
            at += (s.total_in() - before) as usize;
            let done = match action {
                Action::Finish => status == Status::StreamEnd,
                _ => at == input.len(),
            };
            if done {
                return Ok(status);
            }
        }
    };
    for p in pieces {
        feed(p, Action::Run)?;
    }
    feed(&[], Action::Finish)?;
    if !out.starts_with(&lzma_header(dict)) {
        return Err(std::io::Error::other("lzma: unexpected header"));
    }
    Ok(out.split_off(13))
}

/// Decode a headerless LZMA stream (dictionary `dict`) into at most `capacity` bytes; all
/// input must be used.
pub(crate) fn lzma_decompress(
    bytes: &[u8],
    capacity: usize,
    dict: u32,
) -> std::io::Result<Vec<u8>> {
    // The decoder's memory: its dictionary, and a little state.
    let mut s = xz2::stream::Stream::new_lzma_decoder(u64::from(dict) + (16 << 20))
        .map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(capacity);
    let bad = |what: &str| std::io::Error::other(format!("lzma: {what}"));
    s.process_vec(&lzma_header(dict), &mut out, xz2::stream::Action::Run)
        .map_err(std::io::Error::other)?;
    match s.process_vec(bytes, &mut out, xz2::stream::Action::Finish) {
        Ok(xz2::stream::Status::StreamEnd) if s.total_in() == 13 + bytes.len() as u64 => Ok(out),
        Ok(xz2::stream::Status::StreamEnd) => Err(bad("bytes after the end of the stream")),
        Ok(_) if out.len() == capacity => Err(bad("decodes to more bytes than allowed")),
        Ok(_) => Err(bad("stream is truncated")),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// Encode one chunk at zstd `level`, keeping it raw when compression does not pay.
pub fn encode(chunk: &[u8], level: i32) -> (Encoding, Vec<u8>) {
    match compress(chunk, level, None) {
        Ok(z) if z.len() < chunk.len() => (Encoding::Zstd, z),
        _ => (Encoding::Raw, chunk.to_vec()),
    }
}

/// A decoded part of a solid group coded for staging on the device: zstd at a fast level
/// (the uplink's coding is already undone; this only spares the device's disk).
pub fn restage(data: &[u8]) -> std::io::Result<Vec<u8>> {
    compress(data, 3, None)
}

/// Bytes a delta costs beyond its payload: the reference in the manifest.
pub const REFERENCE_COST: usize = 12;

/// Encode one chunk as a delta against `reference` (zstd with the reference as its
/// dictionary, prepared at the level wanted), if that beats `plain` by more than the
/// reference costs.
pub fn encode_delta(
    chunk: &[u8],
    reference: &zstd::dict::EncoderDictionary,
    plain: usize,
) -> Option<Vec<u8>> {
    let z = compress(chunk, 0, Some(reference)).ok()?;
    (z.len() + REFERENCE_COST < plain).then_some(z)
}

/// Largest patch (before zstd) accepted for a chunk of `raw_len` bytes: its diff and extra
/// bytes add up to the chunk, and its controls take a few bytes per changed run.
pub fn max_patch_len(raw_len: u32) -> usize {
    2 * raw_len as usize + 4096
}

/// Largest payload accepted for a chunk of `raw_len` bytes.
pub fn max_encoded_len(raw_len: u32) -> u32 {
    zstd::zstd_safe::compress_bound(raw_len as usize).min(u32::MAX as usize) as u32
}

/// Decode payload bytes into the chunks they carry and check each chunk's BLAKE3. `span` is
/// the payload the bytes belong to and the `Joined` payloads after it (just the payload when
/// nothing is joined to it, see `Manifest::spans`); the result is their chunks one after the
/// other. A delta needs its `reference` bytes (read from the device's own store).
pub fn decode(
    span: &[Payload],
    bytes: &[u8],
    reference: Option<&[u8]>,
) -> Result<Vec<u8>, PayloadError> {
    let Some(p) = span.first() else {
        return Ok(Vec::new());
    };
    let chunk = || short_id(&p.chunk);
    let total: u64 = span.iter().map(|q| u64::from(q.raw_len)).sum();
    let joined_ok = span[1..].iter().all(|q| q.encoding == Encoding::Joined);
    if !joined_ok || (span.len() > 1 && total > u64::from(MAX_SPAN)) {
        return Err(PayloadError::Span { chunk: chunk() });
    }
    // total <= MAX_SPAN, or a single u32 length.
    let raw_len = total as u32;
    if bytes.len() as u64 > u64::from(max_encoded_len(raw_len)) {
        return Err(PayloadError::TooLong {
            chunk: chunk(),
            len: bytes.len() as u32,
            raw_len,
        });
    }
    let zstd_err = |e: std::io::Error| PayloadError::Zstd {
        chunk: chunk(),
        reason: e.to_string(),
    };
    let reference = || {
        reference.ok_or_else(|| PayloadError::Zstd {
            chunk: chunk(),
            reason: "its reference is not available".into(),
        })
    };
    let data = match p.encoding {
        Encoding::Raw => bytes.to_vec(),
        Encoding::Zstd => decompress(bytes, raw_len as usize, None).map_err(zstd_err)?,
        Encoding::ZstdRef => {
            decompress(bytes, raw_len as usize, Some(reference()?)).map_err(zstd_err)?
        }
        Encoding::Bsdiff => {
            let patch =
                lzma_decompress(bytes, max_patch_len(raw_len), LZMA_DICT).map_err(zstd_err)?;
            narlink_protocol::patch::apply(reference()?, &patch, raw_len as usize).map_err(|e| {
                PayloadError::Patch {
                    chunk: chunk(),
                    reason: e.to_string(),
                }
            })?
        }
        // A solid group decodes through `solid::decode`.
        Encoding::Joined | Encoding::Solid | Encoding::Part => {
            return Err(PayloadError::Span { chunk: chunk() })
        }
    };
    if data.len() != raw_len as usize {
        return Err(PayloadError::Length {
            chunk: chunk(),
            found: data.len(),
            expected: raw_len,
        });
    }
    let mut at = 0;
    for q in span {
        let end = at + q.raw_len as usize;
        verify(&q.chunk, &data[at..end])?;
        at = end;
    }
    Ok(data)
}

/// Check that `data` is the chunk `id`.
pub fn verify(id: &ChunkId, data: &[u8]) -> Result<(), PayloadError> {
    let found = chunk_id(data);
    if &found != id {
        return Err(PayloadError::Hash {
            chunk: short_id(id),
            found: short_id(&found),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (encoding, bytes) = encode(&data, 3);
        assert_eq!(encoding, Encoding::Zstd);
        let p = Payload {
            chunk: chunk_id(&data),
            raw_len: data.len() as u32,
            encoded_len: bytes.len() as u32,
            encoding,
            reference: None,
        };
        assert_eq!(
            decode(std::slice::from_ref(&p), &bytes, None).unwrap(),
            data
        );
        for i in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(std::slice::from_ref(&p), &bad, None).is_err(),
                "flip at {i} accepted"
            );
        }
        // A delta against a slightly different reference is tiny and round-trips.
        let mut reference = data.clone();
        reference[500] ^= 1;
        let dict = zstd::dict::EncoderDictionary::copy(&reference, 19);
        let d = encode_delta(&data, &dict, bytes.len()).unwrap();
        assert!(d.len() < 100, "{} byte delta", d.len());
        let r = narlink_protocol::manifest::Reference {
            source: 0,
            offset: 0,
            len: reference.len() as u32,
        };
        let pd = Payload {
            encoded_len: d.len() as u32,
            encoding: Encoding::ZstdRef,
            reference: Some(r),
            ..p
        };
        assert_eq!(
            decode(std::slice::from_ref(&pd), &d, Some(&reference)).unwrap(),
            data
        );
        assert!(decode(std::slice::from_ref(&pd), &d, Some(&data[..1000])).is_err());
        assert!(decode(std::slice::from_ref(&pd), &d, None).is_err());
        // A patch (bsdiff gives up on data this repetitive: use code-like bytes).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let code: Vec<u8> = (0..50_000u32)
            .flat_map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [(x >> 40) as u8, (x >> 48) as u8, i as u8, (i >> 8) as u8]
            })
            .collect();
        let mut shifted = code.clone();
        for w in shifted.chunks_mut(4) {
            w[2] = w[2].wrapping_add(3);
        }
        let prepared = crate::ground::bsdiff::Reference::new(&code);
        let patch = crate::ground::bsdiff::encode_patch(&shifted, &prepared, usize::MAX).unwrap();
        let pp = Payload {
            chunk: chunk_id(&shifted),
            raw_len: shifted.len() as u32,
            encoded_len: patch.len() as u32,
            encoding: Encoding::Bsdiff,
            reference: Some(r),
        };
        assert_eq!(
            decode(std::slice::from_ref(&pp), &patch, Some(&code)).unwrap(),
            shifted
        );
        assert!(decode(std::slice::from_ref(&pp), &patch, Some(&code[..1000])).is_err());
        for cut in [0, 1, patch.len() - 1] {
            assert!(decode(std::slice::from_ref(&pp), &patch[..cut], Some(&code)).is_err());
        }
        let mut longer = patch.clone();
        longer.push(0);
        assert!(decode(std::slice::from_ref(&pp), &longer, Some(&code)).is_err());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(encode(&random, 3).0, Encoding::Raw);
    }

    #[test]
    fn spans_decode_into_every_chunk_and_check_each() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let (a, b) = data.split_at(100_000);
        let (encoding, bytes) = encode(&data, 3);
        let head = Payload {
            chunk: chunk_id(a),
            raw_len: a.len() as u32,
            encoded_len: bytes.len() as u32,
            encoding,
            reference: None,
        };
        let joined = Payload {
            chunk: chunk_id(b),
            raw_len: b.len() as u32,
            encoded_len: 0,
            encoding: Encoding::Joined,
            reference: None,
        };
        assert_eq!(decode(&[head, joined], &bytes, None).unwrap(), data);
        // A wrong id on the joined chunk is caught.
        let forged = Payload {
            chunk: chunk_id(a),
            ..joined
        };
        assert!(matches!(
            decode(&[head, forged], &bytes, None),
            Err(PayloadError::Hash { .. })
        ));
        // The head alone decodes to too many bytes; a joined payload cannot lead.
        assert!(decode(&[head], &bytes, None).is_err());
        assert!(matches!(
            decode(&[joined, head], &bytes, None),
            Err(PayloadError::Span { .. })
        ));
        // Longer than MAX_SPAN in all: refused before decoding.
        let big = Payload {
            raw_len: MAX_SPAN,
            ..joined
        };
        assert!(matches!(
            decode(&[head, big], &bytes, None),
            Err(PayloadError::Span { .. })
        ));
    }
}
