//! How events look: JSON objects (`--json`, `export`) and table rows.
//!
//! `export` shows a payload as JSON only when it is exactly one msgpack
//! value that `weir append` would encode back to the same bytes (encoding
//! `msgpack`), else as base64 (`base64`): so `export` piped into `append`
//! stores every payload byte for byte. The display commands (`get`,
//! `stream`, `query`, `tail`) show every msgpack value that has a JSON form
//! as JSON, its keys in the payload's own order; one that `append` would
//! encode to other bytes (keys not sorted, a wider integer or float than
//! needed) is `msgpack-display`.

use super::shown::Shown;
use anyhow::{Context, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use std::io::Write;
use weir::{Entry, Receipt};

/// `payload_encoding` of a payload shown as JSON that `weir append` stores
/// back byte for byte.
pub const MSGPACK: &str = "msgpack";
/// `payload_encoding` of a payload a display command shows as JSON that
/// `weir append` would store as other bytes (sorted keys, other widths).
pub const MSGPACK_DISPLAY: &str = "msgpack-display";
/// `payload_encoding` of a payload shown as base64.
pub const BASE64: &str = "base64";

/// The payload as `export` writes it and the name of its encoding
/// ([`MSGPACK`] or [`BASE64`]).
#[must_use]
pub fn payload(bytes: &[u8]) -> (Value, &'static str) {
    match shown(bytes) {
        (s, MSGPACK) => (s.to_value(), MSGPACK),
        _ => (Value::String(base64(bytes)), BASE64),
    }
}

/// The payload as the display commands show it and the name of its
/// encoding ([`MSGPACK`], [`MSGPACK_DISPLAY`] or [`BASE64`]).
#[must_use]
pub fn shown(bytes: &[u8]) -> (Shown, &'static str) {
    match Shown::decode(bytes).filter(|v| v.depth() <= MAX_JSON_DEPTH) {
        Some(v) if round_trips(&v, bytes) => (v, MSGPACK),
        Some(v) => (v, MSGPACK_DISPLAY),
        None => (Shown::String(base64(bytes)), BASE64),
    }
}

/// The deepest nesting of arrays and maps a payload is shown as JSON with:
/// `weir append` parses a line with `serde_json`, which refuses more than 128
/// levels, and the line's own object takes one.
const MAX_JSON_DEPTH: usize = 100;

/// Whether `weir append` encodes `v` back to `bytes` (not when a raw byte
/// below 0x80 reads as a number, a 4-byte float comes back as 8, or a map's
/// keys are not sorted).
fn round_trips(v: &Shown, bytes: &[u8]) -> bool {
    rmp_serde::to_vec_named(&v.to_value()).is_ok_and(|b| b == bytes)
}

/// One event as a JSON object, as `export` writes it; `hashes` adds
/// `prev_hash` and `event_hash`.
pub fn entry_json(e: &Entry<'_>, hashes: bool) -> Result<Value> {
    let (payload, encoding) = payload(payload_bytes(e)?);
    let mut m = fields(e)?;
    m.insert("payload_encoding".into(), json!(encoding));
    m.insert("payload".into(), payload);
    if hashes {
        m.insert("prev_hash".into(), json!(hex(&e.prev_hash()?)));
        m.insert("event_hash".into(), json!(hex(&e.event_hash()?)));
    }
    Ok(Value::Object(m))
}

fn payload_bytes<'a>(e: &'a Entry<'_>) -> Result<&'a [u8]> {
    e.payload()
        .with_context(|| format!("event at sequence {}", e.sequence()))
}

/// An event's fields but its payload.
fn fields(e: &Entry<'_>) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    m.insert("sequence".into(), json!(e.sequence()));
    m.insert("event_id".into(), json!(e.event_id().to_string()));
    m.insert("entity".into(), json!(e.entity()));
    m.insert("scope".into(), json!(e.scope()));
    m.insert("kind".into(), json!(format!("{:#06x}", e.kind().0)));
    m.insert("clock".into(), json!(e.clock()));
    m.insert("wall_ms".into(), json!(e.wall_ms()));
    m.insert("time".into(), json!(rfc3339(e.wall_ms())));
    m.insert(
        "correlation_id".into(),
        json!(e.correlation_id().to_string()),
    );
    if let Some(c) = e.causation_id() {
        m.insert("causation_id".into(), json!(c.to_string()));
    }
    Ok(m)
}

/// One event as a display command's `--json` line: the fields in the order
/// `export` gives them, the payload in its own key order.
struct DisplayLine {
    fields: Map<String, Value>,
    payload: Shown,
}

impl DisplayLine {
    fn new(e: &Entry<'_>) -> Result<Self> {
        let (payload, encoding) = shown(payload_bytes(e)?);
        let mut fields = fields(e)?;
        fields.insert("payload_encoding".into(), json!(encoding));
        // A place holder, so that the payload comes where `export` puts it.
        fields.insert("payload".into(), Value::Null);
        Ok(Self { fields, payload })
    }
}

impl Serialize for DisplayLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            if k == "payload" {
                map.serialize_entry(k, &self.payload)?;
            } else {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// A receipt as JSON.
#[must_use]
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "sequence": r.sequence,
        "event_id": weir::EventId(r.event_id).to_string(),
        "clock": r.clock,
        "event_hash": hex(&r.event_hash),
        "durable": r.durable,
        "replayed": r.replayed,
    })
}

/// Table columns, in order.
const HEADER: [&str; 8] = [
    "SEQ", "TIME", "ENTITY", "SCOPE", "KIND", "CLOCK", "EVENT-ID", "PAYLOAD",
];
/// Longest payload text in a terminal table.
const TTY_PAYLOAD: usize = 60;

/// Prints events: JSON lines, an aligned table with a header on a
/// terminal, or tab-separated lines in a pipe.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    json: bool,
    tty: bool,
    header_done: bool,
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, json: bool, tty: bool) -> Self {
        Self {
            out,
            json,
            tty,
            header_done: false,
        }
    }

    /// Prints a page of events (one table: columns sized to this page).
    pub fn page(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        if self.json {
            for e in entries {
                serde_json::to_writer(&mut self.out, &DisplayLine::new(e)?)?;
                self.out.write_all(b"\n")?;
            }
            return Ok(());
        }
        let rows = entries.iter().map(cells).collect::<Result<Vec<_>>>()?;
        if !self.tty {
            for r in &rows {
                writeln!(self.out, "{}", r.join("\t"))?;
            }
            return Ok(());
        }
        let mut widths = HEADER.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        if !self.header_done {
            self.line(&HEADER.map(String::from), &widths)?;
            self.header_done = true;
        }
        for r in &rows {
            self.line(r, &widths)?;
        }
        Ok(())
    }

    fn line(&mut self, cells: &[String], widths: &[usize]) -> Result<()> {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                writeln!(self.out, "{c}")?;
            } else if i == 0 || i == 5 {
                write!(self.out, "{c:>w$}  ")?;
            } else {
                write!(self.out, "{c:<w$}  ")?;
            }
        }
        Ok(())
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

fn cells(e: &Entry<'_>) -> Result<[String; 8]> {
    let text = match shown(payload_bytes(e)?) {
        (Shown::String(b), BASE64) => format!("{BASE64}:{b}"),
        (v, _) => v.to_string(),
    };
    Ok([
        e.sequence().to_string(),
        rfc3339(e.wall_ms()),
        e.entity().to_owned(),
        e.scope().to_owned(),
        format!("{:#06x}", e.kind().0),
        e.clock().to_string(),
        e.event_id().to_string(),
        truncate(text, TTY_PAYLOAD),
    ])
}

fn truncate(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
#[must_use]
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64 (padding optional); `None` on a bad character.
#[must_use]
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let v = B64.iter().position(|&c| c == ch)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_nested_too_deep_for_append_to_read_back_is_shown_as_base64() {
        // Arrays nested `d` deep around a 0, as an export line holds them:
        // `append` must parse every line `export` writes (found by the
        // backup hunt: from 127 levels the restore of an export failed).
        for d in [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 127, 200] {
            let mut bytes = vec![0x91; d];
            bytes.push(0);
            let (v, encoding) = payload(&bytes);
            let line = json!({"payload_encoding": encoding, "payload": v}).to_string();
            let back: Value = serde_json::from_str(&line).expect("append parses the line");
            let want = if d <= MAX_JSON_DEPTH {
                "msgpack"
            } else {
                "base64"
            };
            assert_eq!(encoding, want, "depth {d}");
            assert_eq!(back["payload"], v, "depth {d}");
        }
    }

    #[test]
    fn base64_round_trips_and_matches_rfc4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
            assert_eq!(unbase64(coded).unwrap(), plain.as_bytes());
        }
        assert!(unbase64("a*b").is_none());
    }

    #[test]
    fn payloads_decode_as_msgpack_only_when_whole() {
        let mp = rmp_serde::to_vec_named(&json!({"a": 1})).unwrap();
        assert_eq!(payload(&mp), (json!({"a": 1}), "msgpack"));
        // "hello" starts with a positive fixint but has trailing bytes.
        assert_eq!(payload(b"hello"), (json!("aGVsbG8="), "base64"));
        assert_eq!(payload(b""), (json!(""), "base64"));
    }

    #[test]
    fn payloads_are_msgpack_only_when_append_gives_back_the_same_bytes() {
        // Each of these is one whole msgpack value, but `append` would store
        // other bytes for it (1 in one byte; a 4-byte float as 8): shown as
        // base64, so export → append keeps them.
        for raw in [&[0xcc, 0x01][..], &[0xca, 0x3f, 0x80, 0, 0], &[0xd1, 0, 5]] {
            let (shown, encoding) = payload(raw);
            assert_eq!(encoding, "base64", "{raw:?} shown as {shown}");
            assert_eq!(unbase64(shown.as_str().unwrap()).unwrap(), raw);
        }
        // Whatever is shown as msgpack comes back as the same bytes (a raw
        // "A" is the msgpack 65, byte for byte).
        for raw in [&b"A"[..], &[0xff], &[0x92, 0x01, 0xa1, b'x']] {
            let (shown, encoding) = payload(raw);
            assert_eq!(encoding, "msgpack", "{raw:?}");
            assert_eq!(rmp_serde::to_vec_named(&shown).unwrap(), raw);
        }
        for v in [
            json!({"a": [1, -2, 3.5, "x", null, true]}),
            json!(7),
            json!("s"),
        ] {
            let mp = rmp_serde::to_vec_named(&v).unwrap();
            assert_eq!(payload(&mp), (v, "msgpack"));
        }
    }

    /// `{"order": 1, "amount_cents": 5}` as a client's `to_vec_named` writes
    /// a struct whose fields are not in alphabetical order.
    const UNSORTED: &[u8] = b"\x82\xa5order\x01\xacamount_cents\x05";

    #[test]
    fn display_shows_unsorted_keys_as_json_in_their_order_and_export_as_base64() {
        let (v, encoding) = shown(UNSORTED);
        assert_eq!(encoding, MSGPACK_DISPLAY);
        assert_eq!(v.to_string(), r#"{"order":1,"amount_cents":5}"#);
        assert_eq!(payload(UNSORTED), (json!(base64(UNSORTED)), BASE64));
        // A 1 in two bytes: shown as 1, exported as base64.
        assert_eq!(shown(&[0xcc, 0x01]).1, MSGPACK_DISPLAY);
        assert_eq!(payload(&[0xcc, 0x01]).1, BASE64);
        // A float32 0.1 is shown as its shortest decimal, not widened.
        let f32_tenth = [0xca, 0x3d, 0xcc, 0xcc, 0xcd];
        assert_eq!(shown(&f32_tenth).0.to_string(), "0.1");
        assert_eq!(shown(&f32_tenth).1, MSGPACK_DISPLAY);
        // What round-trips is `msgpack` in both.
        let sorted = rmp_serde::to_vec_named(&json!({"amount_cents": 5, "order": 1})).unwrap();
        assert_eq!(shown(&sorted).1, MSGPACK);
        assert_eq!(payload(&sorted).1, MSGPACK);
    }

    #[test]
    fn msgpack_without_a_json_form_is_base64_in_display_and_export() {
        for raw in [
            &[0xc4, 0x02, 0x01, 0x02][..],                // bin
            &[0xd4, 0x01, 0x02],                          // fixext 1
            &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],        // NaN
            &[0x81, 0x01, 0x02],                          // integer key
            &[0x81, 0xc4, 0x01, b'k', 0x02],              // bin key
            &[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02],  // a key twice
            &[0x91, 0xc4, 0x01, 0x00],                    // bin inside
            b"\x82\xa5order\x01\xacamount_cents\x05\x00", // trailing byte
        ] {
            let (v, encoding) = shown(raw);
            assert_eq!(
                (v, encoding),
                (Shown::String(base64(raw)), BASE64),
                "{raw:?}"
            );
            assert_eq!(payload(raw).1, BASE64, "{raw:?}");
        }
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }
}
