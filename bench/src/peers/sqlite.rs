//! SQLite (rusqlite, bundled): WAL, one connection per process,
//! `synchronous=FULL` for durable rows, indexes on id, (entity, seq), (kind, seq).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Ctx, Reader, Writer};
use crate::common::Event;

pub const DESCRIBE: &str = "rusqlite 0.37 (bundled SQLite), journal_mode=WAL, one connection per \
process, synchronous=FULL for durable rows (OFF for W2b), busy handler retrying every 50 µs (the default 1-100 ms backoff starves \
concurrent writers), BEGIN IMMEDIATE per \
append/batch; table events(seq INTEGER PRIMARY KEY, id BLOB, entity, scope, kind, payload) with \
UNIQUE(id), (entity, seq), (kind, seq); W7 reader polls every 100 µs";

pub fn claim(durable: bool) -> String {
    format!(
        "journal_mode=wal synchronous={}",
        if durable { "2(FULL)" } else { "0(OFF)" }
    )
}

/// Busy handler: retry every 50 µs for up to ~30 s. SQLite's default handler
/// sleeps 1..100 ms between tries, which starves many concurrent writers.
fn busy(n: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    n < 600_000
}

/// Open and set up a connection; SQLite may answer BUSY during WAL setup
/// without calling the busy handler when many processes open at once: retry.
fn connect(ctx: &Ctx) -> Result<Connection> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect_once(ctx) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("locked") => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn connect_once(ctx: &Ctx) -> Result<Connection> {
    std::fs::create_dir_all(&ctx.dir)?;
    let conn = Connection::open(ctx.dir.join("events.db"))?;
    conn.busy_handler(Some(busy))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        bail!("sqlite refused WAL: {mode}");
    }
    let sync = if ctx.durable { "FULL" } else { "OFF" };
    conn.execute_batch(&format!("PRAGMA synchronous={sync};"))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events(
            seq INTEGER PRIMARY KEY, id BLOB NOT NULL, entity TEXT NOT NULL,
            scope TEXT NOT NULL, kind INTEGER NOT NULL, payload BLOB NOT NULL);
         CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events(id);
         CREATE INDEX IF NOT EXISTS events_entity ON events(entity, seq);
         CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);",
    )?;
    Ok(conn)
}

/// Read the live settings back from the connection.
fn verify(conn: &Connection) -> Result<String> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    let name = match sync {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "?",
    };
    Ok(format!("journal_mode={mode} synchronous={sync}({name})"))
}

struct SqliteWriter {
    conn: Connection,
}

fn insert(conn: &Connection, ev: &Event) -> Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO events(id, entity, scope, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    st.execute(params![
        &ev.id.to_be_bytes()[..],
        ev.entity,
        ev.scope,
        ev.kind,
        ev.payload
    ])?;
    Ok(())
}

impl Writer for SqliteWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        self.append_batch(std::slice::from_ref(ev))
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for ev in evs {
            insert(&tx, ev)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        self.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let conn = connect(ctx).context("sqlite open")?;
    let verified = verify(&conn)?;
    Ok((Box::new(SqliteWriter { conn }), verified))
}

struct SqliteReader {
    conn: Connection,
}

pub fn open_reader(ctx: &Ctx) -> Result<Box<dyn Reader>> {
    let conn = Connection::open_with_flags(
        ctx.dir.join("events.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(Box::new(SqliteReader { conn }))
}

impl Reader for SqliteReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let id = crate::common::event_id(i).to_be_bytes();
        let mut st = self
            .conn
            .prepare_cached("SELECT seq, entity, scope, kind, payload FROM events WHERE id = ?1")?;
        let len = st.query_row([&id[..]], |r| {
            let p = r.get_ref(4)?.as_blob()?;
            Ok(super::touched(p))
        })?;
        Ok(len)
    }

    fn stream(&mut self, entity: &str) -> Result<usize> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, id, kind, payload FROM events WHERE entity = ?1 ORDER BY seq",
        )?;
        let mut rows = st.query([entity])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let p = r.get_ref(3)?.as_blob()?;
            n += usize::from(!p.is_empty());
        }
        Ok(n)
    }

    fn count_kind(&mut self, kind: u16) -> Result<u64> {
        let mut st = self
            .conn
            .prepare_cached("SELECT count(*) FROM events WHERE kind = ?1")?;
        let n: i64 = st.query_row([kind], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn count_kind_in_scope(&mut self, kind: u16, scope: &str) -> Result<u64> {
        let mut st = self
            .conn
            .prepare_cached("SELECT count(*) FROM events WHERE kind = ?1 AND scope = ?2")?;
        let n: i64 = st.query_row(rusqlite::params![kind, scope], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn wait_next(&mut self, after: Option<u64>, timeout: Duration) -> Result<Option<u64>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.conn.prepare_cached("SELECT max(seq) FROM events")?;
        loop {
            let max: Option<i64> = st.query_row([], |r| r.get(0)).optional()?.flatten();
            // seq starts at 1 in a fresh store, so event i has seq i + 1.
            if let Some(m) = max.map(|m| m as u64 - 1)
                && after.is_none_or(|a| m > a)
            {
                return Ok(Some(m));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
