//! The daemon serves on a socket that systemd passes it (`LISTEN_FDS`),
//! here via `systemd-socket-activate`: a client appends through it and a
//! reader sees the event, and the data directory still names the socket
//! after the daemon stops.
use anyhow::{Result, ensure};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::{Client, Coordinate, EventKind, Reader};
use weir_tests::{temp_root, weir_bin};

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serves_the_socket_systemd_passes() -> Result<()> {
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("systemd-socket-activate is not installed; nothing to test");
        return Ok(());
    };
    let root = temp_root()?;
    let sock = root.path().join("activated.sock");
    let data = root.path().join("data");
    let mut child = activated(&activate, &sock, &data, &[], Stdio::null())?;
    let mut client = Client::connect(&sock)?;
    let at = Coordinate::new("activated", "t")?;
    let r = client.append(&at, EventKind(0x1001), b"via fd 3")?;
    let reader = Reader::open(&data)?;
    let e = reader.get(weir::EventId(r.event_id))?;
    ensure!(
        e.is_some_and(|e| e.sequence() == r.sequence),
        "the appended event is not visible"
    );
    drop(client);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = child.0.wait()?;
    ensure!(status.success(), "the daemon exited with {status}");
    // The socket outlives the daemon under activation (clients queue on it
    // while it restarts), so the file that names it must too.
    let named = std::fs::read_to_string(data.join("socket"))?;
    ensure!(
        named.trim_end() == sock.to_str().unwrap_or_default(),
        "the discovery file names {named:?} after a stop, not {}",
        sock.display()
    );
    Ok(())
}

/// `weir serve --data-dir data [extra]` under `systemd-socket-activate -l
/// sock`, once the socket exists: systemd-socket-activate listens at once
/// and starts the daemon on the first connection, whose client retries
/// until the daemon answers.
fn activated(
    activate: &std::path::Path,
    sock: &std::path::Path,
    data: &std::path::Path,
    extra: &[&std::ffi::OsStr],
    stderr: Stdio,
) -> Result<Reap> {
    let child = Command::new(activate)
        .arg("-l")
        .arg(sock)
        .arg(weir_bin()?)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let child = Reap(child);
    let until = Instant::now() + Duration::from_secs(15);
    while !sock.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn which(name: &str) -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("{name} not found"))
}

/// A socket weir cannot name in `<data_dir>/socket` (here one in the
/// abstract namespace) is refused before the store is opened: the data
/// directory is not even created.
#[test]
fn a_socket_without_a_path_is_refused_before_the_store_opens() -> Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("systemd-socket-activate is not installed; nothing to test");
        return Ok(());
    };
    let root = temp_root()?;
    let data = root.path().join("data");
    let name = format!("weir-test-{}", std::process::id());
    let child = Command::new(activate)
        .arg("-l")
        .arg(format!("@{name}"))
        .arg(weir_bin()?)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut child = Reap(child);
    // systemd-socket-activate starts the daemon on the first connection.
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)?;
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let _ = std::os::unix::net::UnixStream::connect_addr(&addr);
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < until, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("piped"), &mut said)?;
    ensure!(!status.success(), "the daemon served: {said}");
    ensure!(
        said.contains("not a Unix socket with a path"),
        "the refusal does not say why: {said}"
    );
    ensure!(
        !data.exists(),
        "the store was created before the refusal: {said}"
    );
    Ok(())
}

/// The socket systemd passed is taken before `weir serve` opens anything of
/// its own: with `LISTEN_FDS=1` naming this process but fd 3 closed, the
/// metrics listener (opened before the daemon's socket code) must not be
/// taken for systemd's socket (the unit's error said "not a Unix socket with
/// a path" about weir's own TCP listener, and closed a descriptor another
/// owner held).
#[test]
fn the_metrics_listener_is_not_taken_for_the_socket_systemd_passes() -> Result<()> {
    let root = temp_root()?;
    let data = root.path().join("data");
    // `exec` keeps the shell's pid, which LISTEN_PID names; `3<&-` closes
    // fd 3 for the daemon.
    let out = Command::new("sh")
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --data-dir \"$1\" 3<&-")
        .arg(weir_bin()?)
        .arg(&data)
        .env("WEIR_METRICS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "the daemon served: {said}");
    ensure!(
        said.contains("socket activation") && said.contains("Bad file descriptor"),
        "the refusal does not say that fd 3 is not open: {said}"
    );
    ensure!(
        !said.contains("serving Prometheus metrics"),
        "the metrics listener started before the socket was taken: {said}"
    );
    Ok(())
}

/// A socket systemd passes is bound already: the limit on the directory of
/// a socket the daemon binds itself (it binds in a private directory beside
/// it first) does not apply to it, even when the configuration names it
/// (`--socket`). A 107-byte socket path in a 100-byte directory is served.
#[test]
fn a_passed_socket_in_a_long_directory_is_served() -> Result<()> {
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("systemd-socket-activate is not installed; nothing to test");
        return Ok(());
    };
    let root = temp_root()?;
    let base = root.path().as_os_str().len();
    let dir = root.path().join("d".repeat(100 - base - 1));
    std::fs::create_dir(&dir)?;
    let sock = dir.join("w.sock");
    ensure!(sock.as_os_str().len() == 107, "{}", sock.display());
    let data = root.path().join("data");
    let extra = [std::ffi::OsStr::new("--socket"), sock.as_os_str()];
    let mut child = activated(&activate, &sock, &data, &extra, Stdio::piped())?;
    let answered = Client::connect(&sock).and_then(|mut c| c.ping());
    if answered.is_err() {
        let _ = child.0.kill();
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().expect("piped"), &mut said)?;
        anyhow::bail!("the daemon did not serve the passed socket: {said}");
    }
    Ok(())
}
