//! Proves that signals do not hold `weir::Client`'s waits past the io
//! timeout: a signal arriving more often than it (a profiler's, a timer's,
//! SIGCHLD) makes each socket call fail with EINTR, and a retry must not
//! start the whole timeout again. Each call here gets a signal every
//! millisecond for 6 s and must end within 3 s (io timeout 300 ms): a hang
//! check, not a measurement.

mod fake;

use fake::{Res, fake, frame, full_backlog, server_hello};
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::os::unix::thread::JoinHandleExt;
use std::time::{Duration, Instant};
use weir::{Client, ClientError, ClientOptions, Coordinate, EventKind};
use weir_protocol::wire::{HelloReply, ServerHello};

/// How long the signals keep coming if the call does not end.
const SIGNALS_FOR: Duration = Duration::from_secs(6);
/// A call must end by then.
const ENDS_WITHIN: Duration = Duration::from_secs(3);

extern "C" fn ignore(_: libc::c_int) {}

/// Runs `f` on a thread of its own that gets SIGALRM every millisecond
/// (its handler does nothing; no `SA_RESTART`, which would change nothing:
/// a socket call with a timeout fails with EINTR either way) until `f`
/// returns or [`SIGNALS_FOR`] passed. Returns what `f` returned and how
/// long it took.
fn under_signals<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let on = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGALRM, &on) }.expect("sigaction");
    let t = std::thread::spawn(move || {
        let started = Instant::now();
        let r = f();
        (r, started.elapsed())
    });
    let started = Instant::now();
    while !t.is_finished() && started.elapsed() < SIGNALS_FOR {
        // SAFETY: the thread is not joined yet, so its id is valid (and
        // SIGALRM has a handler).
        unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGALRM) };
        std::thread::sleep(Duration::from_millis(1));
    }
    t.join().expect("the client thread panicked")
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .io_timeout(Duration::from_millis(300))
        .retry_for(Duration::ZERO)
}

/// A fake daemon that says hello (with `hello`) and then neither reads nor
/// answers.
fn silent(dir: &tempfile::TempDir, hello: ServerHello) -> Res<std::path::PathBuf> {
    fake(dir, move |s| {
        s.write_all(&frame(&HelloReply::Ok(hello.clone()))?)?;
        std::thread::sleep(SIGNALS_FOR * 2);
        Ok(())
    })
}

fn not_answering_in_time<T: std::fmt::Debug>(r: &Result<T, ClientError>, took: Duration) {
    assert!(
        matches!(r, Err(ClientError::NotAnswering { .. })) && took < ENDS_WITHIN,
        "expected NotAnswering within {ENDS_WITHIN:?}, got {r:?} after {took:?}"
    );
}

#[test]
fn a_reply_that_does_not_come_ends_at_the_io_timeout() -> Res {
    let dir = tempfile::tempdir()?;
    let path = silent(&dir, server_hello())?;
    let mut c = Client::connect_with(&path, opts())?;
    let (r, took) = under_signals(move || c.ping());
    not_answering_in_time(&r, took);
    Ok(())
}

#[test]
fn a_write_the_daemon_does_not_read_ends_at_the_io_timeout() -> Res {
    let dir = tempfile::tempdir()?;
    let path = silent(
        &dir,
        ServerHello {
            max_frame: 8 << 20,
            max_payload: 4 << 20,
            max_batch_bytes: 8 << 20,
            ..server_hello()
        },
    )?;
    let mut c = Client::connect_with(&path, opts())?;
    let at = Coordinate::new("e:1", "s")?;
    // Far more than the socket's buffers hold.
    let payload = vec![7u8; 3 << 20];
    let (r, took) = under_signals(move || c.append(&at, EventKind(0x1001), &payload));
    not_answering_in_time(&r, took);
    Ok(())
}

#[test]
fn a_hello_that_is_not_answered_ends_at_the_io_timeout() -> Res {
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |_| {
        std::thread::sleep(SIGNALS_FOR * 2);
        Ok(())
    })?;
    let (r, took) = under_signals(move || Client::connect_with(&path, opts()).map(|_| ()));
    not_answering_in_time(&r, took);
    Ok(())
}

#[test]
fn a_hello_that_is_not_read_ends_at_the_io_timeout() -> Res {
    // A daemon that stopped after listening: the connection waits in its
    // backlog, and the hello (made large by the client's name) fills it.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stopped.sock");
    let l = UnixListener::bind(&path)?;
    let o = opts().name("x".repeat(4 << 20));
    let (r, took) = under_signals(move || Client::connect_with(&path, o).map(|_| ()));
    not_answering_in_time(&r, took);
    drop(l);
    Ok(())
}

#[test]
fn a_connect_to_a_full_backlog_ends_at_the_io_timeout() -> Res {
    // Each signal interrupts the wait for room: not an error, and not a
    // new wait of the whole timeout.
    let dir = tempfile::tempdir()?;
    let (path, l, _queued) = full_backlog(&dir)?;
    let (r, took) = under_signals(move || Client::connect_with(&path, opts()).map(|_| ()));
    not_answering_in_time(&r, took);
    assert!(
        matches!(&r, Err(ClientError::NotAnswering { waited, .. }) if waited.is_zero()),
        "{r:?}"
    );
    drop(l);
    Ok(())
}
