//! The offsets and widths the code uses are the ones `docs/FORMAT.md` states:
//! every byte table of the spec is parsed and compared with the structs'
//! field offsets and the named constants.
use std::collections::HashMap;
use weir_protocol::gate::{self, GateHeader};
use weir_protocol::index::{self, Checkpoint, ChunkGeometry, FileHeader, Row, StringEntry};
use weir_protocol::segment::{FrameHeader, SegmentHeader, Trailer};
use zerocopy::FromZeros;

type Table = Vec<(usize, usize)>;

/// Each table of the spec, by the heading (or bold title) above it: the
/// (offset, width) of every row whose offset is a plain number.
fn tables() -> HashMap<String, Table> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let mut out: HashMap<String, Table> = HashMap::new();
    let mut title = String::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("**") {
            title = line.trim_start_matches(['#', '*', ' ']).to_owned();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Ok(offset) = cells[1].parse::<usize>() else {
            continue;
        };
        // Widths are a number or "A × B".
        let width = cells[2]
            .split('×')
            .map(|p| p.trim().parse::<usize>().ok())
            .try_fold(1usize, |acc, p| p.map(|p| acc * p));
        if let Some(width) = width {
            out.entry(title.clone()).or_default().push((offset, width));
        }
    }
    out
}

fn table(all: &HashMap<String, Table>, prefix: &str) -> Table {
    let hits: Vec<_> = all.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
    assert_eq!(
        hits.len(),
        1,
        "exactly one table under a heading starting {prefix:?}: {:?}",
        all.keys().collect::<Vec<_>>()
    );
    hits[0].1.clone()
}

macro_rules! layout {
    ($t:ty; $($f:ident),* $(,)?) => {{
        let zero = <$t>::new_zeroed();
        vec![$((std::mem::offset_of!($t, $f), std::mem::size_of_val(&zero.$f))),*]
    }};
}

#[test]
fn struct_layouts_match_the_spec() {
    let all = tables();
    let seg = layout!(SegmentHeader; magic, version, header_len, segment_id, base_seq, file_len, instance, reserved, crc);
    assert_eq!(table(&all, "Segment file"), seg);
    let frame = layout!(FrameHeader; len, crc, frame_type, flags, kind, clock, sequence, event_id, correlation_id,
        causation_id, idempotency_key, wall_ms, batch_first, batch_len, payload_len, entity_len, scope_len, reserved,
        prev_hash, event_hash);
    assert_eq!(table(&all, "Frame ("), frame);
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md"))
        .expect("spec");
    let body = format!("| {} | … | body", size_of::<FrameHeader>());
    assert!(
        spec.contains(&body),
        "the spec puts the body right after the {}-byte header",
        size_of::<FrameHeader>()
    );
    let trailer = layout!(Trailer; magic, footer_offset, data_end, first_seq, end_seq, entries, reserved, crc);
    assert_eq!(table(&all, "Trailer"), trailer);
    let row = layout!(Row; event_id, correlation_id, causation_id, wall_ms, sequence, prev_entity, prev_kind,
        prev_scope, frame_offset, segment_id, frame_len, entity_id, scope_id, clock, kind, flags, entity_jump, crc);
    assert_eq!(table(&all, "Row"), row);
    let file = layout!(FileHeader; magic, version, param, number, crc, reserved);
    assert_eq!(table(&all, "Index generation"), file);
    let cp = layout!(Checkpoint; counter, watermark, segment_id, segment_offset, strings_end, names_table,
        max_wall_ms, clean, crc);
    assert_eq!(table(&all, "Checkpoint"), cp);
    let entry = layout!(StringEntry; len, ns, pad, head, count, crc, reserved);
    assert_eq!(table(&all, "`strings-"), entry);
    assert_eq!(
        (index::STRING_HEAD_OFF, index::STRING_COUNT_OFF),
        (entry[3].0, entry[4].0)
    );
}

#[test]
fn gate_meta_and_chunk_offsets_match_the_spec() {
    let all = tables();
    let mut want = layout!(GateHeader; magic, version, len, instance, generation, chunk_log2, pid, started_ms, crc);
    want.extend([
        (gate::SYNC_OFF, 4),
        (gate::STATE_OFF, 8),
        (gate::ALLOCATED_OFF, 8),
        (gate::VISIBLE_OFF, 8),
        (gate::FUTEX_OFF, 4),
        (gate::HEARTBEAT_OFF, 8),
        (gate::PUBLISHED_OFF, 8),
        (gate::ID_KEY_OFF, 16),
        (gate::CANCEL_SEQ_OFF, 8),
        (gate::CANCEL_COUNT_OFF, 8),
        (gate::CANCEL_OVERFLOW_OFF, 8),
        (gate::ID_KEY_CRC_OFF, 4),
        (gate::ID_MASK_OFF, 4),
        (gate::CANCEL_RANGES_OFF, 16 * gate::CANCEL_CAPACITY),
    ]);
    assert_eq!(table(&all, "Gate"), want);

    let meta = vec![
        (0, size_of::<FileHeader>()),
        (index::META_NAMES_TABLE_OFF, 8),
        (index::META_STRINGS_END_OFF, 8),
        (index::META_CHECKPOINT_OFFS[0], size_of::<Checkpoint>()),
        (index::META_CHECKPOINT_OFFS[1], size_of::<Checkpoint>()),
    ];
    assert_eq!(table(&all, "`meta`"), meta);

    // The chunk table's fixed rows; the rows that depend on N by formula.
    let fixed = vec![
        (0, size_of::<FileHeader>()),
        (index::CHUNK_SEALED_OFF, 8),
        (index::CHUNK_MIN_ID_OFF, 16),
        (index::CHUNK_MAX_ID_OFF, 16),
    ];
    assert_eq!(table(&all, "`chunk-"), fixed);
    assert_eq!(
        table(&all, "`ranges`"),
        vec![
            (0, size_of::<FileHeader>()),
            (index::RANGES_COUNT_OFF, 8),
            (
                index::ranges_record(0),
                index::RANGES_FILE_LEN - index::PAGE
            ),
        ]
    );
    assert_eq!(
        index::RANGES_FILE_LEN - index::PAGE,
        index::RANGE_RECORD_LEN * index::RANGES_CAP
    );
    let rec = index::range_record(3, 1, 2);
    let field = |a: usize, b: usize| rec[a..b].to_vec();
    assert_eq!(
        table(&all, "Range record"),
        vec![(0, 16), (16, 16), (32, 8), (40, 20), (60, 4)]
    );
    assert_eq!(field(0, 16), 1u128.to_le_bytes());
    assert_eq!(field(16, 32), 2u128.to_le_bytes());
    assert_eq!(field(32, 40), 3u64.to_le_bytes());
    assert_eq!(field(40, 60), [0u8; 20]);
    assert_eq!(
        field(60, 64),
        weir_protocol::crc32(&rec[..60]).to_le_bytes()
    );
    let g = ChunkGeometry { log2: 10 };
    let n = g.rows();
    assert_eq!(
        (
            g.row_offset(0),
            g.kinds_offset(),
            g.scopes_offset(),
            g.entities_offset(),
            g.ids_offset()
        ),
        (
            4096,
            4096 + 128 * n,
            4096 + 130 * n,
            4096 + 134 * n,
            4096 + 138 * n
        )
    );
    assert_eq!(g.file_len(), 4096 + 138 * n + 8 * 2 * n);
}

#[test]
fn the_starts_file_matches_the_spec() {
    use weir_protocol::locate::{IdKey, IdMask};
    use weir_protocol::starts::{
        STARTS_HEADER_LEN, STARTS_MAGIC, STARTS_RECORD_LEN, STARTS_VERSION, Start, encode,
    };
    // The fixed rows; the record and CRC rows depend on `n`.
    assert_eq!(
        table(&tables(), "Starts"),
        vec![(0, 8), (8, 4), (12, 4), (16, 16), (32, 4), (36, 4)]
    );
    let key = IdKey::from_bytes([5; 16]).unwrap().with_mask(IdMask::Mix);
    let b = encode(
        key,
        &[
            Start {
                instance: 7,
                visible: 9,
            },
            Start {
                instance: 8,
                visible: 10,
            },
        ],
    );
    assert_eq!((STARTS_HEADER_LEN, STARTS_RECORD_LEN), (40, 24));
    assert_eq!(b.len(), 40 + 24 * 2 + 4);
    assert_eq!(b[..8], STARTS_MAGIC);
    assert_eq!(b[8..12], STARTS_VERSION.to_le_bytes());
    assert_eq!(b[12..16], 2u32.to_le_bytes());
    assert_eq!(b[16..32], [5; 16]);
    assert_eq!(b[32..36], IdMask::Mix.word().to_le_bytes());
    assert_eq!(b[36..40], [0; 4]);
    assert_eq!(b[40..56], 7u128.to_le_bytes());
    assert_eq!(b[56..64], 9u64.to_le_bytes());
    assert_eq!(b[64..80], 8u128.to_le_bytes());
    assert_eq!(b[88..], weir_protocol::crc32(&b[..88]).to_le_bytes());
}

/// The id table's hash is the formula "Id table" writes out (its constants
/// and shifts read from the spec), and every CRC is zlib's CRC-32: a reader
/// written from the spec finds the same slots and accepts the same frames.
#[test]
fn id_hash_and_crc_are_the_ones_the_spec_names() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let at = text.find("`id_hash(id)` =").expect("the id_hash formula");
    let formula = &text[at..at + 400];
    // The numbers in order: shift, multiplier, shift, multiplier, shift, rotation.
    let numbers: Vec<u64> = formula
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| match w.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => w.parse().ok(),
        })
        .collect();
    let [s1, m1, s2, m2, s3, rot, ..] = numbers[..] else {
        panic!("cannot read the formula: {formula}");
    };
    let spec = |id: u128| {
        let mut x = (id as u64) ^ ((id >> 64) as u64).rotate_left(rot as u32);
        x ^= x >> s1;
        x = x.wrapping_mul(m1);
        x ^= x >> s2;
        x = x.wrapping_mul(m2);
        x ^ (x >> s3)
    };
    let mut id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
    for _ in 0..1000 {
        assert_eq!(index::id_hash(id), spec(id), "id {id:#x}");
        id = id.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(7);
    }
    // The CRC-32 check value of the IEEE polynomial (zlib, Ethernet).
    assert_eq!(weir_protocol::crc32(b"123456789"), 0xCBF4_3926);
}
