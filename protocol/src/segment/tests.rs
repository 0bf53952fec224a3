use super::*;

fn sample<'a>(payload: &'a [u8]) -> EventFrame<'a> {
    EventFrame {
        sequence: 42,
        batch_first: 41,
        batch_len: 2,
        batch_end: true,
        kind: 0x1002,
        clock: 3,
        event_id: 0xfeed,
        correlation_id: 0xbeef,
        causation_id: Some(9),
        idempotency_key: Some(77),
        wall_ms: 1_700_000_000_000,
        entity: b"user:1",
        scope: b"tenant:a",
        payload,
        prev_hash: [1; 32],
        event_hash: [2; 32],
    }
}

#[test]
fn event_frame_round_trips() {
    let mut seg = vec![0u8; 64];
    let n = encode_event(&mut seg, &sample(b"hello"));
    assert_eq!(n, frame_len(6, 8, 5));
    assert_eq!(n % 8, 0);
    seg.resize(seg.len() + 64, 0);
    let (d, len) = decode_at(&seg, 64, true).unwrap();
    assert_eq!(len, n);
    let Decoded::Event(f) = d else {
        panic!("not an event: {d:?}")
    };
    assert_eq!(
        (f.entity, f.scope, f.payload),
        (&b"user:1"[..], &b"tenant:a"[..], &b"hello"[..])
    );
    assert_eq!(f.header.sequence.get(), 42);
    assert_eq!(f.header.causation_id(), Some(9));
    assert_eq!(f.header.idempotency_key(), Some(77));
    assert_eq!(
        f.header.flags & frame_flags::BATCH_END,
        frame_flags::BATCH_END
    );
    assert!(matches!(
        decode_at(&seg, 64 + n, true).unwrap().0,
        Decoded::End
    ));
}

#[test]
fn any_flipped_byte_is_detected() {
    let mut seg = Vec::new();
    let n = encode_event(&mut seg, &sample(b"payload bytes"));
    for i in 0..n {
        let mut bad = seg.clone();
        bad[i] ^= 0x40;
        assert!(
            decode_at(&bad, 0, true).is_err(),
            "flip at {i} went unnoticed"
        );
    }
}

#[test]
fn truncation_is_out_of_bounds_not_a_panic() {
    let mut seg = Vec::new();
    let n = encode_event(&mut seg, &sample(b"abc"));
    for cut in 1..n {
        assert!(decode_at(&seg[..cut], 0, true).is_err(), "cut at {cut}");
    }
}

#[test]
fn cancel_and_footer_frames_round_trip() {
    let mut seg = Vec::new();
    let a = encode_cancel(&mut seg, 100, 5);
    let entries = [FooterEntry {
        offset: 64.into(),
        len: 200.into(),
        crc: 7.into(),
    }];
    let b = encode_footer(&mut seg, &entries).unwrap();
    let (d, la) = decode_at(&seg, 0, true).unwrap();
    assert!(matches!(
        d,
        Decoded::Cancel {
            first: 100,
            count: 5
        }
    ));
    assert_eq!(la, a);
    let (d, lb) = decode_at(&seg, a, true).unwrap();
    assert_eq!(lb, b);
    let Decoded::Footer(body) = d else {
        panic!("{d:?}")
    };
    assert_eq!(footer_entries(body), entries);
}

#[test]
fn headers_and_trailers_check_themselves() {
    let h = SegmentHeader::new(3, 1000, 1 << 20, 5);
    let mut bytes = h.as_bytes().to_vec();
    assert_eq!(SegmentHeader::parse(&bytes).unwrap().segment_id.get(), 3);
    bytes[20] ^= 1;
    assert!(matches!(
        SegmentHeader::parse(&bytes),
        Err(FrameError::Checksum { .. })
    ));
    bytes[..8].copy_from_slice(b"NOTWEIR!");
    assert_eq!(
        SegmentHeader::parse(&bytes).unwrap_err(),
        FrameError::BadMagic
    );
    let mut v2 = SegmentHeader::new(3, 1000, 1 << 20, 5);
    v2.version = 2.into();
    assert!(matches!(
        SegmentHeader::parse(v2.as_bytes()),
        Err(FrameError::UnsupportedVersion { found: 2 })
    ));

    let mut file = vec![0u8; 256];
    let t = Trailer::new(64, 128, 10, 20, 3);
    file[192..].copy_from_slice(t.as_bytes());
    assert_eq!(Trailer::parse(&file).unwrap().end_seq.get(), 20);
    file[200] ^= 1;
    assert!(Trailer::parse(&file).is_none());
}

proptest::proptest! {
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), off in 0usize..64) {
        let _ = decode_at(&bytes, off.min(bytes.len()) & !7, true);
    }
}

#[test]
fn the_longest_footer_fits_its_u32_length() {
    let len = |n: usize| (FRAME_HEADER_LEN + n * size_of::<FooterEntry>()) as u64;
    assert!(len(MAX_FOOTER_ENTRIES) <= u64::from(u32::MAX));
    assert!(len(MAX_FOOTER_ENTRIES + 1) > u64::from(u32::MAX));
    // The most frames a longest segment holds: a header and an entry each.
    let most = SEGMENT_MAX_LEN / (FRAME_HEADER_LEN + size_of::<FooterEntry>()) as u64;
    assert!(most <= MAX_FOOTER_ENTRIES as u64);
}
