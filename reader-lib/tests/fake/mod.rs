//! What the fake daemons of the client tests share: frames in and out, and a
//! good hello.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use weir_protocol::wire::{ServerHello, encode};

pub type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Reads one frame from the client.
pub fn read_one(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// `msg` as one frame.
pub fn frame(msg: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode(&mut out, msg).map_err(std::io::Error::other)?;
    Ok(out)
}

/// A hello a daemon without the newer fields sends: instance 7, frames of
/// 1 MiB, payloads of 64 KiB, batches of 100 events or 1 MiB.
pub fn server_hello() -> ServerHello {
    ServerHello {
        version: 1,
        instance: 7,
        max_frame: 1 << 20,
        max_payload: 1 << 16,
        max_batch_events: 100,
        max_batch_bytes: 1 << 20,
        max_in_flight: None,
        starts: Vec::new(),
        data_dir: None,
    }
}

/// A fake daemon at `<dir>/fake.sock`: for each connection, reads the
/// client's hello and hands the stream to `serve`.
pub fn fake(
    dir: &tempfile::TempDir,
    serve: impl Fn(&mut UnixStream) -> std::io::Result<()> + Send + 'static,
) -> Res<PathBuf> {
    let path = dir.path().join("fake.sock");
    let l = UnixListener::bind(&path)?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            // The client may give up early: a broken pipe here is fine.
            let _ = read_one(&mut s).and_then(|_| serve(&mut s));
        }
    });
    Ok(path)
}

/// A socket at `<dir>/full.sock` whose listener never accepts and whose
/// listen backlog is full (as a stopped daemon's fills): a connect waits
/// for room. Keep both the listener and the queued connections.
pub fn full_backlog(dir: &tempfile::TempDir) -> Res<(PathBuf, UnixListener, Vec<OwnedFd>)> {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let path = dir.path().join("full.sock");
    let l = UnixListener::bind(&path)?;
    socket::listen(&l, Backlog::new(0)?)?;
    let addr = UnixAddr::new(&path)?;
    let mut queued = Vec::new();
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => queued.push(fd),
            Err(nix::errno::Errno::EAGAIN) => return Ok((path, l, queued)),
            Err(e) => return Err(e.into()),
        }
        assert!(queued.len() < 100, "the backlog never filled");
    }
}
