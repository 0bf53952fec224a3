//! Helpers for weir's multi-process tests: start the real daemon binary on a
//! temporary directory and socket, and always stop it.
//!
//! The daemon is `target/<profile>/weir`, which `cargo test --workspace`
//! builds (the `weir-cli` package has integration tests). When running this
//! crate alone, `cargo build -p weir-cli` first, or set `WEIR_BIN`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary.
pub fn weir_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?;
    let bin = profile_dir.join("weir");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo test --workspace` or `cargo build -p weir-cli` first (or set WEIR_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running daemon; killed and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    log: PathBuf,
}

/// Where and how to run a daemon.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Socket path.
    pub socket: PathBuf,
    /// Extra TOML lines for the configuration file.
    pub toml: String,
    /// RLIMIT_NOFILE (soft and hard) for the daemon; unset: inherited.
    pub nofile: Option<u64>,
    /// The daemon's umask (unset: this process's).
    pub umask: Option<u32>,
    /// The uid and gid the daemon runs as, with no supplementary groups
    /// (unset: this process's; setting it needs root).
    pub user: Option<(u32, u32)>,
}

impl Setup {
    /// Data dir `<root>/data`, socket `<root>/weir.sock`.
    pub fn in_dir(root: &Path) -> Self {
        Self {
            data_dir: root.join("data"),
            socket: root.join("weir.sock"),
            toml: String::new(),
            nofile: None,
            umask: None,
            user: None,
        }
    }

    /// Runs the daemon as `uid`/`gid` (the test must run as root).
    #[must_use]
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Starts the daemon with this open-file limit (soft and hard, so that it
    /// cannot raise it).
    #[must_use]
    pub fn with_nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Runs the daemon under `umask` (e.g. 0 for `umask 000`).
    #[must_use]
    pub fn with_umask(mut self, umask: u32) -> Self {
        self.umask = Some(umask);
        self
    }

    /// Adds configuration lines.
    #[must_use]
    pub fn with(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }
}

impl Daemon {
    /// Starts `weir serve` and waits until a client can ping it.
    pub fn start(setup: &Setup) -> Result<Self> {
        let root = setup.socket.parent().context("socket has no parent")?;
        let conf = root.join("weir-test.toml");
        std::fs::write(&conf, &setup.toml)?;
        let log = root.join(format!("daemon-{}.log", unique()));
        let err = std::fs::File::create(&log)?;
        let mut cmd = Command::new(weir_bin()?);
        if let Some(n) = setup.nofile {
            // SAFETY: the closure runs in the forked child before exec and
            // only makes one system call (setrlimit), which is
            // async-signal-safe; it allocates nothing and takes no lock.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        if let Some(mask) = setup.umask {
            let mask = nix::sys::stat::Mode::from_bits_truncate(mask);
            // SAFETY: umask(2) is async-signal-safe and allocates nothing, so
            // it may run between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    nix::sys::stat::umask(mask);
                    Ok(())
                });
            }
        }
        if let Some((uid, gid)) = setup.user {
            // SAFETY: setgroups, setgid and setuid are async-signal-safe
            // system calls; the closure allocates nothing (an empty slice)
            // and takes no lock between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    nix::unistd::setgroups(&[])?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(&setup.data_dir)
            .arg("--socket")
            .arg(&setup.socket)
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "weir_daemon=debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start the weir binary")?;
        let mut d = Self {
            child: Some(child),
            data_dir: setup.data_dir.clone(),
            socket: setup.socket.clone(),
            log,
        };
        d.wait_ready(Duration::from_secs(15))?;
        Ok(d)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let until = Instant::now() + limit;
        loop {
            if let Ok(mut c) = weir::Client::connect(&self.socket)
                && c.ping().is_ok()
            {
                return Ok(());
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the daemon exited with {st}:\n{}", self.log_text());
            }
            if Instant::now() > until {
                bail!("the daemon did not get ready:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// A client with a short retry budget.
    pub fn client(&self) -> Result<weir::Client> {
        Ok(weir::Client::connect_with(
            &self.socket,
            weir::ClientOptions::default().retry_for(Duration::from_secs(5)),
        )?)
    }

    /// Sends `sig` and waits (up to `limit`) for the exit.
    pub fn signal_and_wait(
        &mut self,
        sig: nix::sys::signal::Signal,
        limit: Duration,
    ) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)?;
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the daemon did not exit after {sig}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9, and reap.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10))
            .map(drop)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A configuration of small files (4 MiB segments, 1,024-row index chunks)
/// for tests that want several of each without writing much.
pub const SMALL_STORE: &str = "segment-max-bytes = 4194304\nchunk-rows-log2 = 10\n\
                               max-payload-bytes = 1048576\nmax-batch-bytes = 1050624";

/// Appends `n` events to entity `e` in scope `tenant:a` (kind 0x1001), with
/// payloads `"0"`, `"1"`, ...: the subscription tests' log.
pub fn append_numbered(d: &Daemon, n: usize) -> Result<()> {
    let mut c = d.client()?;
    for i in 0..n {
        c.append_with(weir::AppendRequest {
            entity: "e".into(),
            scope: "tenant:a".into(),
            kind: 0x1001,
            payload: format!("{i}").into_bytes(),
            ..weir::AppendRequest::default()
        })?;
    }
    Ok(())
}

/// SIGTERM, and a clean exit (status 0) within 20 s.
pub fn stop_cleanly(d: &mut Daemon) -> Result<()> {
    let st = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    if !st.success() {
        bail!("stop: {st}");
    }
    Ok(())
}

/// The sequences `sub` delivers until none comes within 500 ms.
pub fn drain(sub: &mut weir::Subscription<'_>) -> Result<Vec<u64>> {
    let mut got = Vec::new();
    while let Some(e) = sub.next_timeout(Duration::from_millis(500))? {
        got.push(e.sequence());
    }
    Ok(got)
}

/// A raw connection to `socket` (reads time out after 5 s) that has sent
/// a `ClientHello` naming `client`, and the daemon's answer to it.
pub fn raw_hello(
    socket: &Path,
    client: &str,
) -> Result<(
    std::os::unix::net::UnixStream,
    weir_protocol::wire::HelloReply,
)> {
    use weir_protocol::wire::{ClientHello, HELLO_MAGIC, PROTOCOL_VERSION};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let hello = ClientHello {
        magic: HELLO_MAGIC,
        versions: vec![PROTOCOL_VERSION],
        client: client.into(),
    };
    weir_protocol::wire::write_frame(&mut s, &hello)?;
    let mut body = Vec::new();
    weir_protocol::wire::read_frame_bytes(&mut s, 1 << 24, &mut body)
        .map_err(|e| anyhow::anyhow!("no hello reply: {e}"))?;
    Ok((s, weir_protocol::wire::decode(&body)?))
}

/// `cp -a from to`: a directory copied with its modes and times, as an
/// operator copies a data directory.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !st.success() {
        bail!("cp -a {} {}: {st}", from.display(), to.display());
    }
    Ok(())
}

/// [`copy_dir`] of a directory a running store may change meanwhile (its
/// background threads create and rename files under `index/`; `cp` fails
/// when one vanishes under it): copies again, into a clean place, until a
/// copy sees no file vanish.
pub fn copy_dir_live(from: &Path, to: &Path) -> Result<()> {
    let name = from.file_name().context("a directory to copy")?;
    let mut tries = 0;
    loop {
        match copy_dir(from, to) {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 20 => return Err(e),
            Err(_) => {
                tries += 1;
                let _ = std::fs::remove_dir_all(to.join(name));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits up to 10 s for `done` to hold (for what the daemon does on a
/// thread of its own after it is ready), failing with `what`.
pub fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while !done()? {
        if Instant::now() >= until {
            bail!("not within 10 s: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A temporary root whose permissions let other users traverse it.
pub fn temp_root() -> Result<tempfile::TempDir> {
    let t = tempfile::Builder::new().prefix("weir-t").tempdir()?;
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(t)
}

/// The helper client binary's path (call from integration tests with
/// `env!("CARGO_BIN_EXE_weir-test-client")`).
pub fn spawn_client(bin: &str, args: &[&str]) -> Result<Child> {
    Ok(Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// One line a helper client printed for an append.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Line {
    /// The append's index within its client.
    pub i: u64,
    /// Sequence, when it succeeded.
    pub seq: Option<u64>,
    /// Event id, when it succeeded.
    pub id: Option<String>,
    /// Event hash (hex), when it succeeded.
    pub hash: Option<String>,
    /// Error code, when it failed.
    pub err: Option<String>,
}

/// Waits for a child and parses its stdout lines.
pub fn collect(child: Child) -> Result<(ExitStatus, Vec<Line>)> {
    let out = child.wait_with_output()?;
    let mut lines = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if l.starts_with('{') {
            lines.push(serde_json::from_str(l)?);
        }
    }
    Ok((out.status, lines))
}

/// Overwrites an entity's head word (newest sequence + 1) and/or count word
/// in the newest index generation's first strings file: the words carry no
/// CRC, as damage or a stale copy may leave them (FORMAT.md, `strings-{n}`).
pub fn set_name_words(
    data_dir: &Path,
    entity: &str,
    head: Option<u64>,
    count: Option<u64>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let generation = std::fs::read_dir(data_dir.join("index"))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .max()
        .context("no index generation")?;
    let path = generation.join("strings-0000");
    let bytes = std::fs::read(&path)?;
    let mut at = 4096;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        anyhow::ensure!(len != 0, "{entity} not in {}", path.display());
        if bytes[at + 4] == 1 && &bytes[at + 32..at + 32 + len] == entity.as_bytes() {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            for (word, off) in [(head, 8), (count, 16)] {
                if let Some(word) = word {
                    f.write_all_at(&word.to_le_bytes(), (at + off) as u64)?;
                }
            }
            return Ok(());
        }
        at += 32 + len.div_ceil(8) * 8;
    }
}

/// Hex of a hash.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The README's Rust examples, compiled (not run) as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
