//! A client process for the multi-process tests. Modes:
//!
//! - `append SOCKET ENTITY COUNT RETRY_MS`: COUNT appends with automatic
//!   idempotency keys, payload `ENTITY:i`; one JSON line per append;
//!   stops after three failures.
//! - `txn-hang SOCKET ENTITY N`: stage N events in a transaction, print
//!   `staged`, then wait to be killed.
//! - `try-append SOCKET`: ping, then one append; prints `ping ok` and
//!   `append ok` or `append err CODE`.
//! - `big-frame SOCKET`: a good hello, then the 4-byte head of a 1 MiB
//!   frame and nothing more; prints `big frame refused CODE` if the daemon
//!   answers within 5 s, else `big frame no answer`.
//! - `watch DATA_DIR MILLIS`: repeatedly checks prefix visibility with a
//!   Reader; prints `checks N` or exits 1 with the violation.

use std::io::Write;
use std::time::{Duration, Instant};
use weir::{Client, ClientOptions, Coordinate, EventKind, Reader, Region};
use weir_tests::{Line, hex};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match arg(0).as_str() {
        "append" => append(
            &arg(1),
            &arg(2),
            arg(3).parse().unwrap_or(1),
            arg(4).parse().unwrap_or(20_000),
        ),
        "txn-hang" => txn_hang(&arg(1), &arg(2), arg(3).parse().unwrap_or(1)),
        "try-append" => try_append(&arg(1)),
        "big-frame" => big_frame(&arg(1)),
        "watch" => watch(&arg(1), arg(2).parse().unwrap_or(1000)),
        other => {
            eprintln!("unknown mode {other:?}");
            2
        }
    };
    std::process::exit(code);
}

fn kind() -> EventKind {
    EventKind(0x1001)
}

fn append(socket: &str, entity: &str, count: u64, retry_ms: u64) -> i32 {
    let opts = ClientOptions::default()
        .retry_for(Duration::from_millis(retry_ms))
        .io_timeout(Duration::from_secs(5));
    let mut client = match Client::connect_with(socket, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect: {e}");
            return 1;
        }
    };
    let at = Coordinate::new(entity, "test").expect("valid coordinate");
    let out = std::io::stdout();
    let mut failures = 0;
    for i in 0..count {
        if failures >= 3 {
            break;
        }
        let payload = format!("{entity}:{i}");
        let line = match client.append(&at, kind(), payload.as_bytes()) {
            Ok(r) => Line {
                i,
                seq: Some(r.sequence),
                id: Some(r.event_id.to_string()),
                hash: Some(hex(&r.event_hash)),
                err: None,
            },
            Err(e) => Line {
                i: {
                    failures += 1;
                    i
                },
                seq: None,
                id: None,
                hash: None,
                err: Some(e.code().map_or_else(|| e.to_string(), |c| format!("{c:?}"))),
            },
        };
        let mut o = out.lock();
        let _ = writeln!(o, "{}", serde_json::to_string(&line).expect("json"));
        let _ = o.flush();
    }
    0
}

fn txn_hang(socket: &str, entity: &str, n: u32) -> i32 {
    let Ok(mut client) = Client::connect(socket) else {
        return 1;
    };
    let at = Coordinate::new(entity, "test").expect("valid coordinate");
    let mut tx = client.transaction();
    for i in 0..n {
        if let Err(e) = tx.append(&at, kind(), format!("{entity}:{i}").as_bytes()) {
            eprintln!("stage: {e}");
            return 1;
        }
    }
    println!("staged");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn try_append(socket: &str) -> i32 {
    let opts = ClientOptions::default().retry_for(Duration::from_secs(2));
    let mut client = match Client::connect_with(socket, opts) {
        Ok(c) => c,
        Err(e) => {
            println!("connect err {e}");
            return 1;
        }
    };
    match client.ping() {
        Ok(_) => println!("ping ok"),
        Err(e) => println!("ping err {e}"),
    }
    let at = Coordinate::new("uid:test", "test").expect("valid coordinate");
    match client.append(&at, kind(), b"x") {
        Ok(_) => println!("append ok"),
        Err(e) => println!(
            "append err {}",
            e.code().map_or_else(|| e.to_string(), |c| format!("{c:?}"))
        ),
    }
    0
}

fn big_frame(socket: &str) -> i32 {
    use weir_protocol::wire::{
        ClientHello, HELLO_MAGIC, HelloReply, PROTOCOL_VERSION, Response, decode, read_frame_bytes,
        write_frame,
    };
    let run = || -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let hello = ClientHello {
            magic: HELLO_MAGIC,
            versions: vec![PROTOCOL_VERSION],
            client: "big-frame".into(),
        };
        write_frame(&mut s, &hello)?;
        let mut body = Vec::new();
        read_frame_bytes(&mut s, 1 << 20, &mut body).map_err(std::io::Error::other)?;
        if let Ok(HelloReply::Err(e)) = decode::<HelloReply>(&body) {
            return Ok(format!("hello err {:?}", e.code));
        }
        s.write_all(&(1u32 << 20).to_le_bytes())?;
        match read_frame_bytes(&mut s, 1 << 20, &mut body) {
            Ok(()) => match decode::<Response>(&body) {
                Ok(r) => Ok(match r.result {
                    Err(e) => format!("big frame refused {:?}", e.code),
                    Ok(_) => "big frame answered ok".to_owned(),
                }),
                Err(e) => Ok(format!("big frame garbled {e}")),
            },
            Err(_) => Ok("big frame no answer".to_owned()),
        }
    };
    match run() {
        Ok(said) => println!("{said}"),
        Err(e) => println!("big frame err {e}"),
    }
    0
}

fn watch(dir: &str, millis: u64) -> i32 {
    let until = Instant::now() + Duration::from_millis(millis);
    let mut checks = 0u64;
    while Instant::now() < until {
        let reader = match Reader::open(dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("open: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let snap = reader.snapshot();
        let w = snap.visible();
        let seqs: Vec<u64> = match snap.query(&Region::all()) {
            Ok(v) => v.iter().map(weir::Entry::sequence).collect(),
            Err(e) => {
                println!("query failed: {e}");
                return 1;
            }
        };
        let cancelled = match snap.cancelled() {
            Ok(c) => c.to_vec(),
            Err(e) => {
                println!("cancelled failed: {e}");
                return 1;
            }
        };
        let expected: Vec<u64> = (0..w)
            .filter(|s| !cancelled.iter().any(|&(a, b)| (a..b).contains(s)))
            .collect();
        if seqs != expected {
            println!(
                "prefix violated at watermark {w}: {} entries, expected {}",
                seqs.len(),
                expected.len()
            );
            return 1;
        }
        checks += 1;
    }
    println!("checks {checks}");
    0
}
