//! A tiny RESP2 client over a unix socket: enough for the Redis peer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Ok(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Ok(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn text(&self) -> String {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(path: &Path) -> Result<Self> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        Ok(Self {
            r: BufReader::with_capacity(1 << 16, s.try_clone()?),
            w: s,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Queue one command (not sent until `flush`).
    pub fn push(&mut self, args: &[&[u8]]) {
        self.buf
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.buf
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.buf.extend_from_slice(a);
            self.buf.extend_from_slice(b"\r\n");
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.w.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Send one command and read its reply; a Redis error becomes an Err.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Result<Value> {
        self.push(args);
        self.flush()?;
        self.read()
    }

    pub fn cmd_str(&mut self, args: &[&str]) -> Result<Value> {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&v)
    }

    pub fn read(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            bail!("redis: connection closed or bad reply");
        }
        let body = std::str::from_utf8(&line[1..line.len() - 2])?.to_string();
        match line[0] {
            b'+' => Ok(Value::Ok(body)),
            b'-' => bail!("redis error: {body}"),
            b':' => Ok(Value::Int(body.parse()?)),
            b'$' => {
                let n: i64 = body.parse()?;
                if n < 0 {
                    return Ok(Value::Nil);
                }
                let mut b = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Ok(Value::Bulk(b))
            }
            b'*' => {
                let n: i64 = body.parse()?;
                if n < 0 {
                    return Ok(Value::Nil);
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.read()?);
                }
                Ok(Value::Array(v))
            }
            c => bail!("redis: unknown reply type {:?}", c as char),
        }
    }
}
