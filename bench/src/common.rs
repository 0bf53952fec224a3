//! Event shapes, ids, clocks and statistics shared by every peer and workload.

/// Number of distinct event kinds in the workload.
pub const KINDS: u16 = 8;
/// Payload size in bytes (~100 bytes, as the issue asks).
pub const PAYLOAD_LEN: usize = 100;
/// Events per durable batch (W2) and per batch when building read stores.
pub const BATCH: usize = 256;

/// One benchmark event; event `i` is the same in every peer.
#[derive(Debug, Clone)]
pub struct Event {
    pub i: u64,
    pub id: u128,
    pub entity: String,
    pub scope: String,
    /// 1..=KINDS.
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// splitmix64: deterministic, fast, good enough for ids and random picks.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The id of event `i`: UUIDv7-shaped (time-ordered high bits, random low bits),
/// computable by any process without a lookup table.
pub fn event_id(i: u64) -> u128 {
    let hi = (0x0190_0000_0000_0000u64 + i) << 4 | 0x7; // monotonic, version nibble 7
    let lo = mix64(i) & 0x3FFF_FFFF_FFFF_FFFF | 0x8000_0000_0000_0000;
    (u128::from(hi) << 64) | u128::from(lo)
}

pub fn entity_of(i: u64) -> String {
    format!("user:{}", i % 10_000)
}

pub fn scope_of(i: u64) -> String {
    format!("tenant:{}", i % 16)
}

pub fn kind_of(i: u64) -> u16 {
    (mix64(i ^ 0x5555) % u64::from(KINDS)) as u16 + 1
}

pub fn make_event(i: u64) -> Event {
    let mut payload = vec![0u8; PAYLOAD_LEN];
    let mut x = mix64(i.wrapping_mul(31));
    for chunk in payload.chunks_mut(8) {
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
        x = mix64(x);
    }
    Event {
        i,
        id: event_id(i),
        entity: entity_of(i),
        scope: scope_of(i),
        kind: kind_of(i),
        payload,
    }
}

/// A small deterministic random generator for query picks.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = mix64(self.0);
        self.0 % n.max(1)
    }
    /// Puts `items` in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// The ids a read-store build recorded, in sequence order, 16 bytes each
/// (LE), for peers that assign their own ids (batpak, weir's daemon).
pub const IDS_FILE: &str = "bench-ids.bin";

/// Writes a read store's [`IDS_FILE`] as its build assigns ids.
pub struct IdsRecorder(std::io::BufWriter<std::fs::File>);

impl IdsRecorder {
    /// Starts `dir`'s [`IDS_FILE`] (empty).
    pub fn create(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = dir.join(IDS_FILE);
        let f = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("{}: the read store's ids: {e}", path.display()))?;
        Ok(Self(std::io::BufWriter::new(f)))
    }

    /// Appends the ids of the next events, in sequence order.
    pub fn record(&mut self, ids: impl IntoIterator<Item = u128>) -> anyhow::Result<()> {
        use std::io::Write;
        for id in ids {
            self.0.write_all(&id.to_le_bytes())?;
        }
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write;
        Ok(self.0.flush()?)
    }
}

/// The id of a random event among those recorded in `dir`'s [`IDS_FILE`],
/// read alone (16 bytes, not the whole list).
pub fn read_random_id(dir: &std::path::Path, rng: &mut Rng) -> anyhow::Result<u128> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(IDS_FILE);
    let f = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("{}: the read store's ids: {e}", path.display()))?;
    let n = f.metadata()?.len() / 16;
    if n == 0 {
        anyhow::bail!("{}: no ids", path.display());
    }
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, rng.below(n) * 16)?;
    Ok(u128::from_le_bytes(b))
}

/// The ids recorded in `dir`'s [`IDS_FILE`].
pub fn read_ids(dir: &std::path::Path) -> anyhow::Result<Vec<u128>> {
    let path = dir.join(IDS_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("{}: the read store's ids: {e}", path.display()))?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect())
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on one host.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// (minor, major) page faults of this process so far (`/proc/self/stat`
/// fields 10 and 12); (0, 0) where that file cannot be read.
pub fn page_faults() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0, 0);
    };
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (
        f.get(7).copied().unwrap_or(0),
        f.get(9).copied().unwrap_or(0),
    )
}

/// Median, min and max of a set of runs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

pub fn summarize(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        runs: n,
    })
}

/// Percentile (0..=100) of an unsorted sample, nearest rank.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// Events for timed write loops: 40 × 256 prebuilt events (every entity,
/// scope and kind of the workload) whose ids are rewritten before each use,
/// so that the timed loop spends nothing on building events and every id is
/// fresh. Event `i` has the id `event_id(i)` and the shape of event `i % 10240`.
#[derive(Debug)]
pub struct Pool {
    evs: Vec<Event>,
}

impl Pool {
    const SLOTS: u64 = 40;

    pub fn new() -> Self {
        Self {
            evs: (0..Self::SLOTS * BATCH as u64).map(make_event).collect(),
        }
    }

    /// Event `i` (its id rewritten).
    pub fn one(&mut self, i: u64) -> &Event {
        let ev = &mut self.evs[(i % (Self::SLOTS * BATCH as u64)) as usize];
        ev.i = i;
        ev.id = event_id(i);
        ev
    }

    /// Events `i .. i + 256` as one batch (`i` a multiple of 256).
    pub fn batch(&mut self, i: u64) -> &[Event] {
        let slot = ((i / BATCH as u64) % Self::SLOTS) as usize * BATCH;
        let evs = &mut self.evs[slot..slot + BATCH];
        for (k, ev) in evs.iter_mut().enumerate() {
            ev.i = i + k as u64;
            ev.id = event_id(ev.i);
        }
        evs
    }
}

/// Id space of one appender: client process `c`, thread `t`.
pub fn id_base(c: u64, t: u64) -> u64 {
    (c * 64 + t) << 32
}
