//! `weir append`: one event from flags, or JSON lines from stdin, sent
//! pipelined in groups of `--batch` lines, each stored or refused on its own.
//! JSON payloads are stored as msgpack (named fields).

use super::common::{DataDir, Output, parse_kind};
use super::render::{BASE64, MSGPACK, MSGPACK_DISPLAY, receipt_json, unbase64};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weir::{AppendRequest, Client, EventId, EventKind, ExpectedVersion, Receipt};

/// How long an append keeps retrying while the daemon is busy or restarting.
/// The try under way when it ends is not cut short: with a daemon that
/// stopped answering, the client's io timeout (30 s) is what ends the call.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Arguments of `weir append`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("payload").args(["payload_json", "payload_file"])))]
#[command(
    after_help = "Without a payload flag, each stdin line is one JSON object: \
`entity`, `scope`, `kind` (a number or \"0x1001\"), `payload` (any JSON, stored as msgpack; \
a base64 string with \"payload_encoding\": \"base64\" is stored as bytes), and optionally \
`idempotency_key`, `expect_version` (\"any\", \"none\" or a clock), `event_id`, \
`correlation_id` and `causation_id` (UUID text). --entity, --scope and --kind fill in \
lines that lack them. `weir export` writes this format."
)]
pub struct AppendArgs {
    /// Entity (default for stdin lines that have none).
    #[arg(long, value_name = "E")]
    entity: Option<String>,
    /// Scope (default for stdin lines that have none).
    #[arg(long, value_name = "S")]
    scope: Option<String>,
    /// Kind, decimal or 0x-hex (default for stdin lines that have none).
    #[arg(long, value_name = "K", value_parser = parse_kind)]
    kind: Option<EventKind>,
    /// The payload as JSON text, stored as msgpack.
    #[arg(long, value_name = "JSON", requires_all = ["entity", "scope", "kind"])]
    payload_json: Option<String>,
    /// A file holding the payload as JSON, stored as msgpack (`--raw`: the bytes as they are).
    #[arg(long, value_name = "F", requires_all = ["entity", "scope", "kind"])]
    payload_file: Option<PathBuf>,
    /// Store `--payload-file` byte for byte.
    #[arg(long, requires = "payload_file")]
    raw: bool,
    /// Idempotency key: a UUID (32 hex digits, hyphens optional), `0x` and 32
    /// hex digits (as the daemon prints a key), or any other text (hashed). A retry
    /// with the same key returns the first receipt; the same key with another
    /// event is refused (IdempotencyConflict).
    #[arg(long, value_name = "K", requires = "payload")]
    idempotency_key: Option<String>,
    /// Condition on the entity: `any`, `none` (no event yet) or N (its last clock).
    #[arg(long, value_name = "V", value_parser = parse_expected, requires = "payload")]
    expect_version: Option<ExpectedVersion>,
    /// Stdin lines sent per pipelined round trip (sooner once their payloads
    /// reach 64 MiB). Each line is stored or refused on its own, not as an
    /// all-or-nothing batch: a refused line is reported and the others are
    /// stored.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    out: Output,
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "none" => Ok(ExpectedVersion::NoStream),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("`{s}` is not `any`, `none` or a clock number")),
    }
}

/// An idempotency key from text: a UUID (32 hex digits, hyphens
/// optional) or `0x` and 32 hex digits (as the daemon's messages print a
/// key) as is, anything else hashed.
fn idempotency_key(text: &str) -> u128 {
    let hex = text
        .strip_prefix("0x")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let parsed = match hex {
        Some(h) => u128::from_str_radix(h, 16).ok(),
        None => text.parse::<EventId>().ok().map(|id| id.0),
    };
    match parsed {
        Some(key) if key != 0 => key,
        _ => {
            let h = blake3::hash(format!("weir.idempotency.v1\0{text}").as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&h.as_bytes()[..16]);
            u128::from_le_bytes(b).max(1)
        }
    }
}

fn msgpack(v: &Value) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).context("cannot encode the payload as msgpack")
}

/// Runs `weir append`.
pub fn run(args: AppendArgs) -> Result<()> {
    let payload = match (&args.payload_json, &args.payload_file) {
        (Some(text), _) => Some(msgpack(
            &serde_json::from_str(text).context("--payload-json is not valid JSON")?,
        )?),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(if args.raw {
                bytes
            } else {
                msgpack(&serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not JSON (pass --raw to store its bytes)",
                        path.display()
                    )
                })?)?
            })
        }
        (None, None) => None,
    };
    let mut client = args.dir.client(RETRY_FOR)?;
    match payload {
        Some(payload) => one(&args, &mut client, payload),
        None => {
            if std::io::stdin().is_terminal() {
                // Not a hang: without a payload flag, events come from stdin.
                eprintln!(
                    "weir append: reading events as JSON lines from stdin (end with Ctrl-D; \
                     --payload-json appends one event from flags)"
                );
            }
            lines(&args, &mut client)
        }
    }
}

fn one(args: &AppendArgs, client: &mut Client, payload: Vec<u8>) -> Result<()> {
    let req = AppendRequest {
        entity: args.entity.clone().unwrap_or_default(),
        scope: args.scope.clone().unwrap_or_default(),
        kind: args.kind.map_or(0, |k| k.0),
        payload,
        idempotency_key: args.idempotency_key.as_deref().map(idempotency_key),
        expected: args.expect_version.unwrap_or_default(),
        ..AppendRequest::default()
    };
    let r = client
        .append_with(req)
        .map_err(|e| match e.unresolved_keys()[..] {
            [key] => anyhow!(e).context(format!(
                "the event may or may not be stored: once the daemon is back, append it again with \
             --idempotency-key {} (it is then stored at most once)",
                EventId(key)
            )),
            _ => e.into(),
        })?;
    let mut out = std::io::stdout().lock();
    if args.out.json {
        writeln!(out, "{}", receipt_json(&r))?;
    } else {
        writeln!(out, "{}", receipt_line(&r))?;
    }
    Ok(())
}

fn receipt_line(r: &Receipt) -> String {
    format!(
        "sequence {}  event {}  clock {}  {}{}",
        r.sequence,
        EventId(r.event_id),
        r.clock,
        if r.durable {
            "durable"
        } else {
            "not yet synced"
        },
        if r.replayed {
            "  (replayed: appended before with this key)"
        } else {
            ""
        }
    )
}

/// One stdin line as a request; flags fill what the line leaves out.
fn parse_line(args: &AppendArgs, text: &str) -> Result<AppendRequest> {
    let v: Value = serde_json::from_str(text).context("not a JSON object")?;
    let o = v.as_object().ok_or_else(|| anyhow!("not a JSON object"))?;
    let name = |key: &str, flag: &Option<String>| -> Result<String> {
        match o.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("`{key}` is not a string"),
            None => flag
                .clone()
                .ok_or_else(|| anyhow!("no `{key}` (and no --{key} flag)")),
        }
    };
    let kind = match o.get("kind") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| anyhow!("kind {n} does not fit in 16 bits"))?,
        Some(Value::String(s)) => parse_kind(s).map_err(|e| anyhow!(e))?.0,
        Some(_) => bail!("`kind` is not a number or a string"),
        None => {
            args.kind
                .ok_or_else(|| anyhow!("no `kind` (and no --kind flag)"))?
                .0
        }
    };
    let payload = match (o.get("payload"), o.get("payload_encoding")) {
        (None, _) => Vec::new(),
        (Some(Value::String(s)), Some(Value::String(enc))) if enc == BASE64 => {
            unbase64(s).ok_or_else(|| anyhow!("`payload` is not base64"))?
        }
        (Some(p), None | Some(Value::Null)) => msgpack(p)?,
        (Some(p), Some(Value::String(enc))) if enc == MSGPACK => msgpack(p)?,
        // A display command's JSON of a payload that `weir append` would not
        // store byte for byte (keys in their own order, a float32, a wide
        // int): storing it would change the event's bytes without a word.
        (Some(_), Some(Value::String(enc))) if enc == MSGPACK_DISPLAY => bail!(
            "`payload_encoding` is \"{MSGPACK_DISPLAY}\": this line comes from a display \
             command (get, stream, query, tail), whose JSON would not store the payload's \
             bytes unchanged; copy events with `weir export`, whose lines keep them"
        ),
        (Some(_), Some(other)) => bail!(
            "`payload_encoding` {other} is not one weir append reads: \"{MSGPACK}\" (or none) \
             for JSON stored as msgpack, \"{BASE64}\" for bytes"
        ),
    };
    let idempotency_key = match o.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(idempotency_key(s)),
        Some(other) => Some(idempotency_key(&other.to_string())),
    };
    // An export's ids come back with its events (a restore keeps them;
    // appending the same export twice is refused as duplicate ids).
    let id = |key: &str| -> Result<Option<u128>> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s
                .parse::<EventId>()
                .map(|id| Some(id.0))
                .map_err(|e| anyhow!("`{key}`: {e}")),
            Some(_) => bail!("`{key}` is not a string"),
        }
    };
    let expected = match o.get("expect_version") {
        None | Some(Value::Null) => ExpectedVersion::Any,
        Some(Value::String(s)) => parse_expected(s).map_err(|e| anyhow!(e))?,
        Some(other) => parse_expected(&other.to_string()).map_err(|e| anyhow!(e))?,
    };
    Ok(AppendRequest {
        entity: name("entity", &args.entity)?,
        scope: name("scope", &args.scope)?,
        kind,
        payload,
        idempotency_key,
        expected,
        event_id: id("event_id")?,
        correlation_id: id("correlation_id")?,
        causation_id: id("causation_id")?,
    })
}

/// What the stdin mode did.
#[derive(Debug, Default)]
struct Summary {
    appended: u64,
    replayed: u64,
    failed: u64,
    first: Option<u64>,
    last: Option<u64>,
}

/// Payload bytes a stdin batch holds at most before it is sent, beside the
/// `--batch` line count: 500 lines of 16 MiB payloads would otherwise be
/// held in memory at once (an export restored with `weir append` took 1.7
/// times its size).
const BATCH_PAYLOAD_BYTES: usize = 64 << 20;

/// Is a stdin batch of `lines` lines and `payload_bytes` payload bytes
/// ready to send?
fn batch_full(lines: usize, payload_bytes: usize, max_lines: u32) -> bool {
    lines >= max_lines as usize || payload_bytes >= BATCH_PAYLOAD_BYTES
}

fn lines(args: &AppendArgs, client: &mut Client) -> Result<()> {
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} events appended ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut sum = Summary::default();
    let mut batch = Vec::new();
    let mut line_nos = Vec::new();
    let mut payload_bytes = 0;
    let stdin = std::io::stdin().lock();
    for (i, line) in stdin.lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let req = parse_line(args, &line).map_err(|e| {
            anyhow!(
                "line {}: {e:#} (stopped; {} events appended before it)",
                i + 1,
                sum.appended
            )
        })?;
        payload_bytes += req.payload.len();
        batch.push(req);
        line_nos.push(i + 1);
        if batch_full(batch.len(), payload_bytes, args.batch) {
            send(client, &mut batch, &mut line_nos, &mut sum, &bar)?;
            payload_bytes = 0;
        }
    }
    send(client, &mut batch, &mut line_nos, &mut sum, &bar)?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if args.out.json {
        let v = json!({
            "appended": sum.appended, "replayed": sum.replayed, "failed": sum.failed,
            "first_sequence": sum.first, "last_sequence": sum.last, "seconds": secs,
        });
        writeln!(out, "{v}")?;
    } else {
        let range = match (sum.first, sum.last) {
            (Some(a), Some(b)) => format!(", sequences {a}..={b}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "appended {} events ({} replayed, {} failed) in {secs:.2} s{range}",
            sum.appended, sum.replayed, sum.failed
        )?;
    }
    if sum.failed > 0 {
        bail!("{} of the events were refused (see above)", sum.failed);
    }
    Ok(())
}

/// Most refusals printed; the rest are only counted.
const SHOW_FAILURES: u64 = 10;

fn send(
    client: &mut Client,
    batch: &mut Vec<AppendRequest>,
    line_nos: &mut Vec<usize>,
    sum: &mut Summary,
    bar: &ProgressBar,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // Keys known here, so that lines whose outcome is unknown can be named.
    let keys: Vec<u128> = batch
        .iter_mut()
        .map(|r| {
            *r.idempotency_key
                .get_or_insert_with(weir::new_idempotency_key)
        })
        .collect();
    let results = match client.append_pipelined(std::mem::take(batch)) {
        Ok(r) => r,
        Err(e) => return Err(lost(e, &keys, line_nos, sum, bar)),
    };
    for ((r, line), key) in results.into_iter().zip(line_nos.drain(..)).zip(keys) {
        settle(sum, bar, line, key, r);
    }
    bar.set_position(sum.appended);
    Ok(())
}

/// Counts one line's outcome into `sum`; a refusal is printed (the first
/// [`SHOW_FAILURES`]), with the key to append it again with when its
/// outcome is unknown.
fn settle(
    sum: &mut Summary,
    bar: &ProgressBar,
    line: usize,
    key: u128,
    r: Result<Receipt, weir::ClientError>,
) {
    match r {
        Ok(r) => {
            sum.appended += 1;
            sum.replayed += u64::from(r.replayed);
            sum.first = Some(sum.first.map_or(r.sequence, |f| f.min(r.sequence)));
            sum.last = Some(sum.last.map_or(r.sequence, |l| l.max(r.sequence)));
        }
        Err(e) => {
            if sum.failed < SHOW_FAILURES {
                let retry = if e.unresolved_keys().is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it may or may not be stored: append it again with \"idempotency_key\": \"{}\")",
                        EventId(key)
                    )
                };
                bar.suspend(|| eprintln!("weir: line {line}: {e}{retry}"));
            }
            sum.failed += 1;
        }
    }
}

/// The error of a batch whose call gave up (the connection was lost):
/// the lines the daemon answered before count as usual (stored, or
/// refused), those sent without an answer are named with their keys, and
/// the rest were not sent, so not stored.
fn lost(
    e: weir::ClientError,
    keys: &[u128],
    line_nos: &mut Vec<usize>,
    sum: &mut Summary,
    bar: &ProgressBar,
) -> anyhow::Error {
    let unknown = e.unresolved_keys();
    let answered = e.answered().to_vec();
    let (from, to) = (
        line_nos.first().copied().unwrap_or_default(),
        line_nos.last().copied().unwrap_or_default(),
    );
    let before = sum.appended;
    let mut uncertain = Vec::new();
    let mut unsent = Vec::new();
    for (i, (line, &key)) in line_nos.drain(..).zip(keys).enumerate() {
        match answered.get(i) {
            Some(Some(r)) => settle(
                sum,
                bar,
                line,
                key,
                r.clone().map_err(weir::ClientError::Server),
            ),
            _ if unknown.contains(&key) => {
                uncertain.push(format!("line {line}: {}", EventId(key)));
            }
            _ => unsent.push(line),
        }
    }
    let mut what = format!(
        "{} events appended in all ({} of lines {from}..={to}); stdin read up to line {to}, no further",
        sum.appended,
        sum.appended - before
    );
    if !unsent.is_empty() {
        what += &format!(
            "; not sent, so not stored: line(s) {}",
            line_ranges(&unsent)
        );
    }
    let e = anyhow!(e).context(what);
    if uncertain.is_empty() {
        return e;
    }
    e.context(format!(
        "{} line(s) may or may not be stored: once the daemon is back, append them \
         again with these idempotency keys (\"idempotency_key\" in the line): {}",
        uncertain.len(),
        uncertain.join(", ")
    ))
}

/// Ascending line numbers as runs: `3, 5..=9`.
fn line_ranges(lines: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &l in lines {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stdin_batch_is_sent_at_its_line_count_or_its_payload_bytes() {
        // 16 MiB payloads: four make a batch, not `--batch` (found by the
        // backup hunt: 500 of them were held at once).
        let mut bytes = 0;
        let full_at = (1..=500)
            .find(|&n| {
                bytes += 16 << 20;
                batch_full(n, bytes, 500)
            })
            .unwrap();
        assert_eq!(full_at, 4);
        assert!(!batch_full(499, 1 << 20, 500));
        assert!(batch_full(500, 0, 500));
    }

    #[test]
    fn expected_versions_and_keys_parse() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("none"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("7"), Ok(ExpectedVersion::Exact(7)));
        assert!(parse_expected("seven").is_err());
        assert_eq!(idempotency_key("order-42"), idempotency_key("order-42"));
        assert_ne!(idempotency_key("order-42"), idempotency_key("order-43"));
        assert_eq!(idempotency_key("00000000000000000000000000000abc"), 0xabc);
        // The form the daemon's IdempotencyConflict message prints.
        let printed = "0x00000000000000000000000000000abc";
        assert_eq!(idempotency_key(printed), 0xabc);
        assert_eq!(
            idempotency_key(printed),
            idempotency_key("00000000-0000-0000-0000-000000000abc")
        );
        // Not 32 digits after 0x: text, hashed.
        assert_ne!(idempotency_key("0xabc"), 0xabc);
    }

    #[test]
    fn a_lost_batch_counts_the_lines_answered_before() {
        let receipt = |sequence| Receipt {
            event_id: 7,
            sequence,
            clock: 0,
            event_hash: [0; 32],
            durable: true,
            replayed: false,
        };
        // Lines 11..=16: 11 stored, 12 refused, 13 stored, 14 sent without
        // an answer, 15 and 16 not sent.
        let e = weir::ClientError::Disconnected {
            path: PathBuf::from("/d/weir.sock"),
            waited: Duration::from_secs(10),
            last: "Connection refused".into(),
            keys: vec![104],
            answered: vec![
                Some(Ok(receipt(40))),
                Some(Err(weir::WireError::new(
                    weir::ErrorCode::VersionConflict,
                    "conflict",
                ))),
                Some(Ok(receipt(41))),
                None,
                None,
                None,
            ],
        };
        let mut sum = Summary {
            appended: 5,
            ..Summary::default()
        };
        let mut lines: Vec<usize> = (11..=16).collect();
        let keys: Vec<u128> = (101..=106).collect();
        let err = format!(
            "{:#}",
            lost(e, &keys, &mut lines, &mut sum, &ProgressBar::hidden())
        );
        assert_eq!((sum.appended, sum.failed), (7, 1), "{err}");
        assert_eq!((sum.first, sum.last), (Some(40), Some(41)));
        assert!(
            err.starts_with("1 line(s) may or may not be stored"),
            "{err}"
        );
        assert!(err.contains(&format!("line 14: {}", EventId(104))), "{err}");
        assert!(!err.contains("line 13:"), "{err}");
        assert!(
            err.contains("7 events appended in all (2 of lines 11..=16); stdin read up to line 16, no further; not sent, so not stored: line(s) 15..=16"),
            "{err}"
        );
        assert_eq!(line_ranges(&[3, 5, 6, 7, 9]), "3, 5..=7, 9");
    }
}
