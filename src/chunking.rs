//! Content-defined chunking: FastCDC (v2020) cut points, BLAKE3 chunk ids.
//!
//! Chunking is a pure function of the bytes and [`PARAMS`], so the ground can predict the
//! chunk ids the device computes over the same NAR.

use std::io::{self, Read};

use narlink_protocol::manifest::{ChunkId, ChunkParams, ChunkRef};

/// The chunking parameters of this narlink version: the protocol's standard ones (chosen by
/// measurement: see `docs/measurements.md`, "Chunk size"). Algorithm 3: FastCDC v2020 cut
/// points over store-hash-normalized NARs ([`crate::normalize`]), 128-bit BLAKE3 ids.
pub const PARAMS: ChunkParams = narlink_protocol::manifest::STANDARD_CHUNKING;

/// Bytes read per refill of the chunker's window.
const WINDOW: usize = 4 << 20;

/// The id of a chunk's bytes.
pub fn chunk_id(bytes: &[u8]) -> ChunkId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    id
}

/// Split everything `r` yields into chunks, calling `each(offset, bytes, chunk)` in order.
///
/// Memory stays at one window (a few MiB) whatever the input length.
pub fn chunk_stream<R: Read, E: From<io::Error>>(
    mut r: R,
    params: &ChunkParams,
    mut each: impl FnMut(u64, &[u8], ChunkRef) -> Result<(), E>,
) -> Result<u64, E> {
    let max = params.max_size as usize;
    let mut buf = vec![0u8; WINDOW + max];
    let mut filled = 0usize;
    let mut offset = 0u64; // stream offset of buf[0]
    let mut eof = false;
    loop {
        while !eof && filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 {
            return Ok(offset);
        }
        let mut consumed = 0usize;
        let cdc = fastcdc::v2020::FastCDC::new(
            &buf[..filled],
            params.min_size,
            params.avg_size,
            params.max_size,
        );
        for c in cdc {
            // The last cut of a window may only be an artefact of the window's end.
            if !eof && c.offset + c.length == filled {
                break;
            }
            let bytes = &buf[c.offset..c.offset + c.length];
            let id = chunk_id(bytes);
            each(
                offset + c.offset as u64,
                bytes,
                ChunkRef {
                    id,
                    len: c.length as u32,
                },
            )?;
            consumed = c.offset + c.length;
        }
        if eof && consumed == filled {
            return Ok(offset + filled as u64);
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        offset += consumed as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Dribble;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks_of(data: &[u8], read_size: usize) -> Vec<(u64, ChunkRef)> {
        let mut out = Vec::new();
        chunk_stream::<_, io::Error>(Dribble(data, read_size), &PARAMS, |o, _, c| {
            out.push((o, c));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn streaming_equals_whole_buffer_chunking() {
        let data = pseudo_random(3 * WINDOW + 12345, 7);
        let whole: Vec<(u64, u32)> =
            fastcdc::v2020::FastCDC::new(&data, PARAMS.min_size, PARAMS.avg_size, PARAMS.max_size)
                .map(|c| (c.offset as u64, c.length as u32))
                .collect();
        for read_size in [1 << 20, 65_537, WINDOW + 3] {
            let streamed: Vec<(u64, u32)> = chunks_of(&data, read_size)
                .iter()
                .map(|(o, c)| (*o, c.len))
                .collect();
            assert_eq!(streamed, whole, "read size {read_size}");
        }
    }

    #[test]
    fn boundary_sizes() {
        for n in [
            0usize,
            1,
            16 * 1024 - 1,
            16 * 1024,
            16 * 1024 + 1,
            256 * 1024 - 1,
            256 * 1024,
            256 * 1024 + 1,
        ] {
            let data = pseudo_random(n, 3);
            let chunks = chunks_of(&data, 1 << 16);
            let total: u64 = chunks.iter().map(|(_, c)| u64::from(c.len)).sum();
            assert_eq!(total, n as u64);
            assert!(chunks.iter().all(|(_, c)| c.len <= PARAMS.max_size));
            let mut off = 0;
            for (o, c) in &chunks {
                assert_eq!(*o, off);
                assert_eq!(
                    c.id,
                    chunk_id(&data[off as usize..(off + u64::from(c.len)) as usize])
                );
                off += u64::from(c.len);
            }
        }
    }
}
