//! `weir get`, `stream`, `query` and `tail`: answers from the mapped store.

use super::common::{DataDir, Output, RegionArgs};
use super::render::Printer;
use anyhow::{Result, bail};
use std::time::Duration;
use weir::{Entry, EventId, Region, Resumed, Snapshot};

/// Events fetched per page.
const PAGE: usize = 1000;

/// Arguments of `weir get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Event id (UUID text, hyphens optional).
    #[arg(value_name = "ID", value_parser = parse_id)]
    id: EventId,
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    out: Output,
}

/// Arguments of `weir stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Entity name.
    #[arg(value_name = "ENTITY")]
    entity: String,
    /// Only events with a sequence above SEQ.
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    out: Output,
}

/// Arguments of `weir query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    region: RegionArgs,
    /// Only events with a sequence above SEQ.
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    /// At most N events. Default: all.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    out: Output,
}

/// Arguments of `weir tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Keep printing new events as they become visible.
    #[arg(short, long)]
    follow: bool,
    /// Print the last N events first.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    lines: u64,
    #[command(flatten)]
    region: RegionArgs,
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    out: Output,
}

fn printer(out: Output) -> Printer<std::io::StdoutLock<'static>> {
    Printer::new(std::io::stdout().lock(), out.json, Output::tty())
}

/// An event id argument; a bad one is a usage error (exit 2).
fn parse_id(text: &str) -> Result<EventId, String> {
    text.parse::<EventId>().map_err(|e| e.to_string())
}

/// Runs `weir get`.
pub fn get(args: GetArgs) -> Result<()> {
    let id = args.id;
    let reader = args.dir.reader()?;
    let Some(e) = reader.get(id)? else {
        bail!("no visible event with id {id}");
    };
    let mut p = printer(args.out);
    p.page(&[e])?;
    p.flush()
}

/// Runs `weir stream`.
pub fn stream(args: StreamArgs) -> Result<()> {
    let reader = args.dir.reader()?;
    let events = match args.since {
        Some(s) => reader.stream_since(&args.entity, s)?,
        None => reader.stream(&args.entity)?,
    };
    let mut p = printer(args.out);
    for page in events.chunks(PAGE) {
        p.page(page)?;
    }
    p.flush()
}

/// Runs `weir query`, page by page on one snapshot.
pub fn query(args: QueryArgs) -> Result<()> {
    let reader = args.dir.reader()?;
    let snap = reader.snapshot();
    let region = args.region.region();
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut after = args.after;
    let mut p = printer(args.out);
    while left > 0 {
        let page = snap.query_after(&region, after, left.min(PAGE))?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        left -= page.len();
        p.page(&page)?;
    }
    p.flush()
}

/// Runs `weir tail`: the last `-n` events of the region, then (with
/// `--follow`) every new one as it is published, sleeping on the gate's
/// futex in between.
pub fn tail(args: TailArgs) -> Result<()> {
    let mut reader = args.dir.reader()?;
    let region = args.region.region();
    let mut p = printer(args.out);
    // History from one snapshot: its last `-n` events, none past its
    // watermark however fast appends arrive meanwhile.
    let snap = reader.snapshot();
    p.page(&last_n(&snap, &region, args.lines)?)?;
    p.flush()?;
    if !args.follow {
        return Ok(());
    }
    // Then every event from that watermark on (`resume` is inclusive).
    let mut cursor = snap.cursor();
    loop {
        let instance = reader.status().instance;
        let mut sub = reader.resume(region.clone(), cursor);
        // Sleeps on the futex until the daemon publishes; a closed pipe
        // shows at the next write, as with `tail -f`.
        while reader.status().instance == instance {
            let next = sub.next_timeout(Duration::from_secs(1))?;
            if let Some(how) = sub.take_resumed() {
                notice(how);
            }
            if let Some(e) = next {
                p.page(std::slice::from_ref(&e))?;
                p.flush()?;
            }
        }
        // A daemon restart: let go of the old instance's files (the daemon
        // deletes an index generation it no longer uses), and go on where
        // the subscription stood (`resume` carries the position over to the
        // new instance, or starts over in a new store).
        cursor = sub.cursor();
        drop(sub);
        reader.release_old_views();
    }
}

/// Tells stderr that `tail -f` goes on in a replaced store, or in a store
/// that lost published events, from another sequence than the next one.
fn notice(how: Resumed) {
    match how {
        Resumed::Replaced { position } => eprintln!(
            "weir: the store was replaced (another store at the same path); \
             following it from sequence 0 (the old one stood at {position})"
        ),
        Resumed::TailLost { visible, position } => eprintln!(
            "weir: the store restarted without sequences {visible}..{position} \
             (an unsynced tail lost in a crash); new events get them again, \
             following from {visible}"
        ),
        _ => {}
    }
}

/// The last `n` events of `region` in `snap`: looks back over windows of
/// the log that grow fourfold from its end until one holds `n` of them (or
/// the whole log). It reads only the log's tail where `region`'s events are
/// recent, but the last window may collect many more than `n` entries
/// before the newest `n` are kept (a region whose events lie only far back).
fn last_n<'r>(snap: &Snapshot<'r>, region: &Region, n: u64) -> Result<Vec<Entry<'r>>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let visible = snap.visible();
    let mut window = n.max(64);
    loop {
        let from = visible.saturating_sub(window);
        let mut events = snap.query_after(region, from.checked_sub(1), usize::MAX)?;
        if events.len() as u64 >= n || from == 0 {
            let skip = events
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
            events.drain(..skip);
            return Ok(events);
        }
        window = window.saturating_mul(4);
    }
}
