//! Redis Streams: a `redis-server` from Debian's packages that the suite starts
//! itself on a unix socket (`appendonly yes`, `appendfsync always` for durable
//! rows), spoken to with the tiny RESP client in `resp.rs`.
//!
//! Data model, one Lua script per append or batch (atomic, one round trip):
//! `events` (the log, server-assigned stream ids), `ids` (event id -> stream id),
//! `e:{entity}` (the entity's stream, same stream ids), `k:{kind}` (kind index).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::resp::{Conn, Value};
use super::{Ctx, Reader, Writer};
use crate::common::{Event, event_id};

pub const DESCRIBE: &str = "redis-server (Debian package) started by the suite on a unix socket \
in a temp dir, appendonly yes, appendfsync always for durable rows (no for W2b), save \"\" (no \
RDB); each append/batch is one EVALSHA of a Lua script: XADD events * + HSET ids + XADD e:{entity} \
+ XADD k:{kind}; reads: HGET+XRANGE (script), XRANGE e:{entity}, XLEN k:{kind}; W7 XREAD BLOCK; \
clients are separate processes";

const APPEND_LUA: &str = r"
local sid
for j = 0, #ARGV / 6 - 1 do
  local b = j * 6
  local id, ent, sc, k, p, i = ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5], ARGV[b+6]
  sid = redis.call('XADD', 'events', '*', 'i', i, 'id', id, 'e', ent, 's', sc, 'k', k, 'p', p)
  redis.call('HSET', 'ids', id, sid)
  redis.call('XADD', 'e:' .. ent, sid, 'id', id, 'p', p)
  redis.call('XADD', 'k:' .. k, sid, 'id', id)
end
return sid
";

const GET_LUA: &str = r"
local sid = redis.call('HGET', 'ids', ARGV[1])
if not sid then return nil end
return redis.call('XRANGE', 'events', sid, sid)
";

pub fn claim(durable: bool) -> String {
    format!(
        "appendonly=yes appendfsync={}",
        if durable { "always" } else { "no" }
    )
}

/// The server this process started, if any.
static SERVER: Mutex<Option<(Child, PathBuf)>> = Mutex::new(None);

pub fn server_pid(_ctx: &Ctx) -> Option<u32> {
    SERVER
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(|(c, _)| c.id()))
}

fn ensure_installed() -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .stdout(Stdio::null())
        .status()?
        .success();
    if found {
        return Ok(());
    }
    eprintln!("redis-server missing: apt-get install -y redis-server");
    let ok = Command::new("sh")
        .args([
            "-c",
            "(apt-get install -y -q redis-server || (apt-get update -q && apt-get install -y -q \
             redis-server)) >/dev/null",
        ])
        .status()?
        .success();
    if !ok {
        bail!("could not install redis-server with apt-get");
    }
    Ok(())
}

/// Start the suite's own redis-server under `dir`; returns its socket path.
pub fn start_server(dir: &Path) -> Result<PathBuf> {
    ensure_installed()?;
    std::fs::create_dir_all(dir)?;
    let sock = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&sock)
        .args(["--unixsocketperm", "700", "--dir"])
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--databases",
            "4",
            "--logfile",
        ])
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .spawn()
        .context("start redis-server")?;
    *SERVER.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some((child, sock.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Conn::connect(&sock)
            && c.cmd_str(&["PING"]).is_ok()
        {
            return Ok(sock);
        }
        if Instant::now() > deadline {
            bail!(
                "redis-server did not come up (see {}/redis.log)",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stop the server this process started (SHUTDOWN, then kill our own child).
pub fn stop_server() {
    let Ok(mut g) = SERVER.lock() else { return };
    if let Some((mut child, sock)) = g.take() {
        if let Ok(mut c) = Conn::connect(&sock) {
            let _ = c.cmd_str(&["SHUTDOWN", "NOSAVE"]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn connect(ctx: &Ctx) -> Result<Conn> {
    let sock = ctx.redis_socket.as_ref().context("no redis socket")?;
    let mut c = Conn::connect(sock)?;
    c.cmd_str(&["SELECT", &ctx.redis_db.to_string()])?;
    Ok(c)
}

/// Parent side: set the durability this row claims before a run.
pub fn prepare(ctx: &Ctx) -> Result<()> {
    let mut c = connect(ctx)?;
    let fsync = if ctx.durable { "always" } else { "no" };
    c.cmd_str(&["CONFIG", "SET", "appendfsync", fsync])?;
    Ok(())
}

/// Parent side: empty the database a write run used.
pub fn reset(ctx: &Ctx) -> Result<()> {
    connect(ctx)?.cmd_str(&["FLUSHDB"])?;
    Ok(())
}

fn config_get(c: &mut Conn, key: &str) -> Result<String> {
    match c.cmd_str(&["CONFIG", "GET", key])? {
        Value::Array(v) if v.len() == 2 => Ok(v[1].text()),
        other => bail!("CONFIG GET {key}: {other:?}"),
    }
}

fn load(c: &mut Conn, script: &str) -> Result<String> {
    Ok(c.cmd_str(&["SCRIPT", "LOAD", script])?.text())
}

struct RedisWriter {
    c: Conn,
    sha: String,
}

impl Writer for RedisWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        self.append_batch(std::slice::from_ref(ev))
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let cols: Vec<[Vec<u8>; 6]> = evs
            .iter()
            .map(|e| {
                [
                    e.id.to_be_bytes().to_vec(),
                    e.entity.clone().into_bytes(),
                    e.scope.clone().into_bytes(),
                    e.kind.to_string().into_bytes(),
                    e.payload.clone(),
                    e.i.to_string().into_bytes(),
                ]
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", self.sha.as_bytes(), b"0"];
        for c in &cols {
            args.extend(c.iter().map(Vec::as_slice));
        }
        self.c.cmd(&args)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let mut c = connect(ctx)?;
    let verified = format!(
        "appendonly={} appendfsync={}",
        config_get(&mut c, "appendonly")?,
        config_get(&mut c, "appendfsync")?
    );
    let sha = load(&mut c, APPEND_LUA)?;
    Ok((Box::new(RedisWriter { c, sha }), verified))
}

struct RedisReader {
    c: Conn,
    get_sha: String,
    last_sid: Option<Vec<u8>>,
}

pub fn open_reader(ctx: &Ctx) -> Result<Box<dyn Reader>> {
    let mut c = connect(ctx)?;
    let get_sha = load(&mut c, GET_LUA)?;
    Ok(Box::new(RedisReader {
        c,
        get_sha,
        last_sid: None,
    }))
}

/// Field `name` of a stream entry `[sid, [k, v, k, v...]]`.
fn field<'a>(entry: &'a Value, name: &[u8]) -> Option<&'a [u8]> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let Value::Array(kv) = parts.get(1)? else {
        return None;
    };
    kv.chunks(2)
        .find(|p| p[0].as_bytes() == Some(name))
        .and_then(|p| p.get(1)?.as_bytes())
}

impl Reader for RedisReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let id = event_id(i).to_be_bytes();
        let v = self
            .c
            .cmd(&[b"EVALSHA", self.get_sha.as_bytes(), b"0", &id])?;
        let Value::Array(entries) = v else {
            bail!("redis: id not found")
        };
        let e = entries.first().context("redis: id not found")?;
        Ok(field(e, b"p").map_or(0, super::touched))
    }

    fn stream(&mut self, entity: &str) -> Result<usize> {
        let key = format!("e:{entity}");
        let Value::Array(entries) = self.c.cmd_str(&["XRANGE", &key, "-", "+"])? else {
            bail!("redis: XRANGE")
        };
        Ok(entries
            .iter()
            .filter(|e| field(e, b"p").is_some_and(|p| !p.is_empty()))
            .count())
    }

    fn count_kind(&mut self, kind: u16) -> Result<u64> {
        match self.c.cmd_str(&["XLEN", &format!("k:{kind}")])? {
            Value::Int(n) => Ok(n as u64),
            v => bail!("XLEN: {v:?}"),
        }
    }

    fn wait_next(&mut self, _after: Option<u64>, timeout: Duration) -> Result<Option<u64>> {
        let from = self.last_sid.clone().unwrap_or_else(|| b"0-0".to_vec());
        let ms = timeout.as_millis().max(1).to_string();
        let v = self.c.cmd(&[
            b"XREAD",
            b"BLOCK",
            ms.as_bytes(),
            b"STREAMS",
            b"events",
            &from,
        ])?;
        // [[stream, [entries...]]]
        let Value::Array(streams) = v else {
            return Ok(None);
        };
        let Some(Value::Array(s)) = streams.first() else {
            return Ok(None);
        };
        let Some(Value::Array(entries)) = s.get(1) else {
            return Ok(None);
        };
        let Some(last) = entries.last() else {
            return Ok(None);
        };
        if let Value::Array(p) = last {
            self.last_sid = p.first().and_then(Value::as_bytes).map(<[u8]>::to_vec);
        }
        let i = field(last, b"i").context("no i field")?;
        Ok(Some(std::str::from_utf8(i)?.parse()?))
    }
}
