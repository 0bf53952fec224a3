use super::{Cursor, CursorError, LEN, Origin};

fn cursor(store: Option<u64>) -> Cursor {
    Cursor {
        position: 5,
        seen: 7,
        origin: Origin {
            instance: *b"0123456789abcdef",
            store,
        },
    }
}

/// `b` with its CRC written anew, as a newer build would have.
fn resealed(mut b: [u8; LEN]) -> [u8; LEN] {
    let crc = crc32fast::hash(&b[..LEN - 4]);
    b[LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_cursor_comes_back_from_its_bytes() {
    for c in [cursor(Some(u64::MAX - 3)), cursor(None)] {
        assert_eq!(Cursor::from_bytes(&c.to_bytes()), Ok(c));
    }
}

#[test]
fn cut_damaged_or_newer_bytes_are_refused_by_type() {
    let b = cursor(Some(9)).to_bytes();
    for n in 0..LEN {
        let e = Cursor::from_bytes(&b[..n]).expect_err("cut short");
        // Under 4 bytes there is no magic to check; the version comes
        // before the length, so that a newer, longer cursor says so.
        assert!(
            matches!(e, CursorError::Length { expected: LEN, found } if found == n),
            "{n}: {e}"
        );
    }
    let mut long = b.to_vec();
    long.push(0);
    assert!(matches!(
        Cursor::from_bytes(&long),
        Err(CursorError::Length { .. })
    ));
    for i in 0..LEN {
        let mut bad = b;
        bad[i] ^= 0x40;
        let e = Cursor::from_bytes(&bad).expect_err("flipped");
        let want = match i {
            0..4 => matches!(e, CursorError::BadMagic { .. }),
            4..6 => matches!(e, CursorError::UnsupportedVersion { expected: 1, .. }),
            _ => matches!(e, CursorError::Checksum { .. }),
        };
        assert!(want, "byte {i}: {e}");
    }
    let mut newer = b;
    newer[4] = 2;
    let e = Cursor::from_bytes(&resealed(newer)).expect_err("newer");
    assert_eq!(
        e,
        CursorError::UnsupportedVersion {
            expected: 1,
            found: 2
        }
    );
    let mut flags = b;
    flags[7] = 0x80;
    let e = Cursor::from_bytes(&resealed(flags)).expect_err("unknown flag");
    assert!(
        matches!(e, CursorError::Field { field: "flags", .. }),
        "{e}"
    );
}

#[test]
fn a_cursor_comes_back_through_serde() {
    for c in [cursor(Some(u64::MAX - 3)), cursor(None)] {
        let bytes = rmp_serde::to_vec_named(&c).expect("encode");
        assert_eq!(rmp_serde::from_slice::<Cursor>(&bytes).expect("decode"), c);
    }
}

#[test]
fn a_serde_cursor_of_another_version_or_with_bad_ids_is_refused() {
    #[derive(serde::Serialize)]
    struct Fields<'a> {
        version: u16,
        position: u64,
        seen: u64,
        instance: &'a str,
        store: Option<&'a str>,
    }
    let decode = |f: &Fields<'_>| {
        let bytes = rmp_serde::to_vec_named(f).expect("encode");
        rmp_serde::from_slice::<Cursor>(&bytes).map_err(|e| e.to_string())
    };
    let good = Fields {
        version: 1,
        position: 5,
        seen: 7,
        instance: "000102030405060708090a0b0c0d0e0f",
        store: Some("00000000000000ff"),
    };
    let c = decode(&good).expect("good");
    assert_eq!(c.origin.instance[0], 0x0f);
    assert_eq!(c.origin.store, Some(0xff));
    let e = decode(&Fields { version: 2, ..good }).expect_err("newer");
    assert!(e.contains("format version 2"), "{e}");
    let e = decode(&Fields {
        instance: "0102",
        ..good
    })
    .expect_err("short id");
    assert!(e.contains("`instance`"), "{e}");
    let e = decode(&Fields {
        store: Some("+0000000000000ff"),
        ..good
    })
    .expect_err("sign");
    assert!(e.contains("`store`"), "{e}");
}

/// The bytes form's offsets and widths are those of FORMAT.md's table
/// ("Saved cursor").
#[test]
fn the_bytes_form_matches_the_spec() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let at = text
        .find("## Saved cursor")
        .expect("the spec's cursor section");
    let rows: Vec<(usize, usize)> = text[at..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((cells.get(1)?.parse().ok()?, cells.get(2)?.parse().ok()?))
        })
        .collect();
    use super::{CRC_AT, FLAGS_AT, INSTANCE_AT, POSITION_AT, SEEN_AT, STORE_AT, VERSION_AT};
    let code = vec![
        (0, VERSION_AT),
        (VERSION_AT, FLAGS_AT - VERSION_AT),
        (FLAGS_AT, POSITION_AT - FLAGS_AT),
        (POSITION_AT, SEEN_AT - POSITION_AT),
        (SEEN_AT, STORE_AT - SEEN_AT),
        (STORE_AT, INSTANCE_AT - STORE_AT),
        (INSTANCE_AT, CRC_AT - INSTANCE_AT),
        (CRC_AT, LEN - CRC_AT),
    ];
    assert_eq!(rows, code);
    let b = cursor(Some(9)).to_bytes();
    assert_eq!(&b[..4], b"wcur");
    assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 5);
    assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 7);
    assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 9);
    assert_eq!(&b[32..48], b"0123456789abcdef");
}
