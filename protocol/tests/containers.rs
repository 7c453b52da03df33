//! Property tests for the bundle container, the manifest and the signature block: every
//! encode/decode pair round-trips, and decoding any bytes is total.

use narlink_protocol::bundle::{BundleHeader, HEADER_LEN, MANIFEST_ZSTD};
use narlink_protocol::manifest::{
    nar_commitment, resolve_in, ChunkParams, ChunkRef, Encoding, Manifest, PathEntry, Payload,
    Rewrites, MANIFEST_VERSION, STANDARD_CHUNKING,
};
use narlink_protocol::signature::{decode_block, encode_block, Signature};
use narlink_protocol::storepath::PathSet;
use proptest::prelude::*;

fn chunk() -> impl Strategy<Value = ChunkRef> {
    (any::<[u8; 16]>(), 1u32..300_000).prop_map(|(id, len)| ChunkRef { id, len })
}

fn path_entry() -> impl Strategy<Value = PathEntry> {
    (
        "[0-9a-df-np-sv-z]{32}-[a-z][a-z.-]{0,19}",
        proptest::option::of(any::<[u8; 32]>()),
        proptest::collection::vec(chunk(), 0..8),
        proptest::collection::vec("/nix/store/[0-9a-df-np-sv-z]{32}-[a-z]{1,8}", 0..4),
        proptest::option::of("/nix/store/[a-z0-9]{32}-[a-z]{1,8}.drv"),
    )
        .prop_map(|(name, nar_hash, chunks, references, deriver)| PathEntry {
            store_path: format!("/nix/store/{name}"),
            nar_hash,
            nar_size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            rewrites: match chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() {
                n if n >= 1000 => Rewrites::Scan(vec![0; references.len() + 2]),
                n if n >= 100 => Rewrites::At(vec![(3, 0), (40, 0)]),
                _ => Rewrites::default(),
            },
            references,
            deriver,
            chunks,
            copies: Vec::new(),
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    (
        any::<[u8; 16]>(),
        1u32..=262_144,
        any::<bool>(),
        1u32..300_000,
    )
        .prop_map(|(chunk, raw_len, zstd, enc)| Payload {
            chunk,
            raw_len,
            encoded_len: if zstd { enc } else { raw_len },
            encoding: if zstd { Encoding::Zstd } else { Encoding::Raw },
            reference: None,
        })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        proptest::collection::vec(path_entry(), 0..6),
        proptest::collection::vec(payload(), 0..10),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(mut paths, payloads, base_digest, sequence, standard)| {
            paths.sort_by(|a, b| a.store_path.cmp(&b.store_path));
            paths.dedup_by(|a, b| a.store_path == b.store_path);
            let paths_hashes: Vec<[u8; 32]> = paths.iter().filter_map(|p| p.nar_hash).collect();
            Manifest {
                version: MANIFEST_VERSION,
                chunking: if standard {
                    STANDARD_CHUNKING
                } else {
                    ChunkParams {
                        algorithm: 2,
                        ..STANDARD_CHUNKING
                    }
                },
                base_digest,
                sequence,
                roots: paths.iter().take(1).map(|p| p.store_path.clone()).collect(),
                paths,
                payloads,
                sources: Vec::new(),
                pieces: Default::default(),
                nar_commitment: nar_commitment(paths_hashes.iter()),
            }
        })
}

proptest! {
    #[test]
    fn manifest_round_trips(m in manifest()) {
        prop_assert_eq!(Manifest::from_bytes(&m.to_bytes()), Ok(m));
    }

    #[test]
    fn manifest_wire_round_trips(m in manifest()) {
        // The device holds every path the manifest names.
        let device = PathSet::new(
            m.paths
                .iter()
                .flat_map(|p| p.references.iter().chain([&p.store_path]))
                .chain(&m.roots),
        );
        let wire = m.to_wire(&device).unwrap();
        prop_assert_eq!(Manifest::from_wire(&wire, resolve_in(&device)), Ok(m));
    }

    #[test]
    fn manifest_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Manifest::from_bytes(&bytes);
        let _ = Manifest::from_wire(&bytes, resolve_in(&PathSet::default()));
    }

    #[test]
    fn header_round_trips(manifest in proptest::collection::vec(any::<u8>(), 0..64), raw in 0u32..1 << 20, payload in 0u64..1 << 48, sigs in proptest::collection::vec(any::<u8>(), 0..500)) {
        let h = BundleHeader::for_head(&manifest, MANIFEST_ZSTD, raw, payload, &sigs);
        prop_assert_eq!(BundleHeader::decode(&h.encode()), Ok(h));
        prop_assert!(h.verify_head(&manifest, &sigs).is_ok());
    }

    #[test]
    fn header_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..HEADER_LEN + 8)) {
        let _ = BundleHeader::decode(&bytes);
    }

    #[test]
    fn signature_block_round_trips(sigs in proptest::collection::vec((any::<[u8; 4]>(), any::<[u8; 32]>(), any::<[u8; 32]>()), 0..8)) {
        let sigs: Vec<Signature> = sigs.into_iter().map(|(key, a, b)| {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&a);
            bytes[32..].copy_from_slice(&b);
            Signature { key, bytes }
        }).collect();
        prop_assert_eq!(decode_block(&encode_block(&sigs)), Ok(sigs));
    }

    #[test]
    fn signature_block_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_block(&bytes);
    }
}

#[test]
fn compact_then_expand_gives_the_chunks_back() {
    use narlink_protocol::manifest::compact;
    let c = |i: u8, len: u32| ChunkRef { id: [i; 16], len };
    let previous: Vec<ChunkRef> = (0..10).map(|i| c(i, 100)).collect();
    let chunks = vec![
        c(0, 100),
        c(1, 100),
        c(42, 7),
        c(5, 100),
        c(6, 100),
        c(7, 100),
        c(43, 9),
    ];
    let (explicit, copies) = compact(&chunks, &previous, 0);
    assert_eq!(explicit, vec![c(42, 7), c(43, 9)]);
    assert_eq!(copies.len(), 2);
    let entry = PathEntry {
        store_path: "/nix/store/x".into(),
        nar_hash: None,
        nar_size: 516,
        references: vec![],
        deriver: None,
        chunks: explicit,
        copies,
        rewrites: Rewrites::default(),
    };
    let sources = vec!["/nix/store/q".to_owned()];
    assert_eq!(
        entry.expand(&sources, |_| Some(previous.clone())).unwrap(),
        chunks
    );
    assert!(entry.expand(&sources, |_| None).is_err());
    assert!(entry
        .expand(&sources, |_| Some(previous[..5].to_vec()))
        .is_err());
}
