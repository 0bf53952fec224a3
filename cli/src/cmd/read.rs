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

/// Tells stderr that `tail -f` goes on in a replaced store, in a store
/// that lost published events, or in one restored from an older copy, from
/// another sequence than the next one.
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
        Resumed::Restored { visible, position } => eprintln!(
            "weir: the store was restored from an older copy, or its start history \
             (the data directory's `starts` file) is unknown: it does not show where \
             its history and the followed one split; following from {visible} \
             (events up to {position} may be printed again)"
        ),
        _ => {}
    }
}

/// The last `n` events of `region` in `snap`: looks back over windows of
/// the log that grow fourfold from its end until they hold `n` of them (or
/// the whole log), reading each part of the log once, a page at a time. It
/// reads only the log's tail where `region`'s events are recent, and holds
/// at most about `n` plus a page of entries however many lie further back.
fn last_n<'r>(snap: &Snapshot<'r>, region: &Region, n: u64) -> Result<Vec<Entry<'r>>> {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let fetch = |after: Option<u64>, limit: usize| snap.query_after(region, after, limit);
    Ok(last_n_of(snap.visible(), n, fetch, Entry::sequence)?)
}

/// [`last_n`] over any source: `fetch(after, limit)` returns up to `limit`
/// items with sequence above `after`, ascending; `seq` gives an item's.
fn last_n_of<T, E>(
    visible: u64,
    n: usize,
    mut fetch: impl FnMut(Option<u64>, usize) -> Result<Vec<T>, E>,
    seq: impl Fn(&T) -> u64,
) -> Result<Vec<T>, E> {
    let mut found: Vec<T> = Vec::new();
    if n == 0 {
        return Ok(found);
    }
    // `[from, end)` is the part of the log this round reads: the window's
    // growth past the part already read.
    let (mut end, mut window) = (visible, (n as u64).max(64));
    while end > 0 && found.len() < n {
        let from = visible.saturating_sub(window);
        let need = n - found.len();
        let mut older: Vec<T> = Vec::new();
        let mut after = from.checked_sub(1);
        'pages: loop {
            let page = fetch(after, PAGE)?;
            let full = page.len() == PAGE;
            for item in page {
                let s = seq(&item);
                if s >= end {
                    break 'pages;
                }
                after = Some(s);
                older.push(item);
            }
            // Keep the newest `need`: what lies before them is not printed.
            if older.len() >= need.saturating_add(PAGE) {
                older.drain(..older.len() - need);
            }
            if !full {
                break;
            }
        }
        older.drain(..older.len().saturating_sub(need));
        older.append(&mut found);
        found = older;
        end = from;
        window = window.saturating_mul(4);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{PAGE, last_n_of};
    use std::cell::Cell;
    use std::rc::Rc;

    /// An item that counts how many are alive, and the most that were.
    struct Item {
        seq: u64,
        live: Rc<(Cell<usize>, Cell<usize>)>,
    }

    impl Drop for Item {
        fn drop(&mut self) {
            self.live.0.set(self.live.0.get() - 1);
        }
    }

    /// `last_n_of` over a region whose events are at `seqs` (ascending):
    /// the sequences it returns, the most items alive at once, the items
    /// fetched in all, and the largest limit asked for.
    fn run(seqs: &[u64], visible: u64, n: usize) -> (Vec<u64>, usize, usize, usize) {
        let live = Rc::new((Cell::new(0), Cell::new(0)));
        let (mut fetched, mut largest) = (0, 0);
        let fetch = |after: Option<u64>, limit: usize| -> Result<Vec<Item>, ()> {
            largest = largest.max(limit);
            let page: Vec<Item> = seqs
                .iter()
                .filter(|&&s| after.is_none_or(|a| s > a) && s < visible)
                .take(limit)
                .map(|&seq| {
                    live.0.set(live.0.get() + 1);
                    live.1.set(live.1.get().max(live.0.get()));
                    Item {
                        seq,
                        live: live.clone(),
                    }
                })
                .collect();
            fetched += page.len();
            Ok(page)
        };
        let got = last_n_of(visible, n, fetch, |i| i.seq).unwrap_or_default();
        let seqs = got.iter().map(|i| i.seq).collect();
        (seqs, live.1.get(), fetched, largest)
    }

    #[test]
    fn the_last_n_are_those_of_a_filter() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for (len, visible) in [(0, 0), (0, 500), (3, 10), (5_000, 20_000), (9_000, 9_000)] {
            // `len` distinct sequences below `visible`, ascending.
            let mut seqs: Vec<u64> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % visible.max(1)
                })
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            for n in [
                0,
                1,
                7,
                64,
                65,
                999,
                1_000,
                1_001,
                4_999,
                20_000,
                usize::MAX,
            ] {
                let want = seqs[seqs.len().saturating_sub(n)..].to_vec();
                assert_eq!(run(&seqs, visible, n).0, want, "{len} {visible} {n}");
            }
        }
    }

    #[test]
    fn events_far_back_are_read_once_and_not_held() {
        // 50,000 events, then 10,000 sequences of other regions: the last
        // window reaches back over 6,384 of them to find 10.
        let seqs: Vec<u64> = (0..50_000).collect();
        let (got, peak, fetched, largest) = run(&seqs, 60_000, 10);
        assert_eq!(got, (49_990..50_000).collect::<Vec<_>>());
        assert!(largest <= PAGE, "asked for {largest} at once");
        assert!(peak <= 10 + 2 * PAGE, "{peak} held at once");
        // Each part of the log once (the windows' overlaps re-read before).
        assert!(fetched <= 6_384 + PAGE, "{fetched} fetched");
    }
}
