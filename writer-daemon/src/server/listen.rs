//! The listening socket: inherited from systemd, or bound here (replacing a
//! stale socket file only when nothing answers on it), its mode set, and its
//! path recorded in `<data_dir>/socket` for discovery.

use super::ServeError;
use crate::config::Config;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// File in the data directory that names the socket.
pub const SOCKET_FILE: &str = "socket";

/// A listener and what to clean up when it closes.
#[derive(Debug)]
pub(super) struct Listening {
    pub(super) listener: UnixListener,
    /// The socket path clients connect to.
    pub(super) path: PathBuf,
    /// Bound by us (so removed on stop); false under socket activation.
    pub(super) owned: bool,
}

/// Adopts systemd's socket (taken by [`super::activation::inherited_listener`]
/// before anything else ran) or binds `config.socket_path()`.
pub(super) fn open(
    config: &Config,
    inherited: Option<(UnixListener, PathBuf)>,
) -> Result<Listening, ServeError> {
    if let Some((listener, path)) = inherited {
        tracing::info!(socket = %path.display(), "using the socket passed by systemd");
        return Ok(Listening {
            listener,
            path,
            owned: false,
        });
    }
    let path = config.socket_path();
    let bind_err = |source| ServeError::Bind {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::modes::create_dir_all(parent).map_err(bind_err)?;
    }
    remove_stale(&path)?;
    let listener = bind_with_mode(&path, config.socket_mode).map_err(bind_err)?;
    Ok(Listening {
        listener,
        path,
        owned: true,
    })
}

/// Binds a socket that has `mode` from the moment `path` names it. bind(2)
/// creates the file under the process umask, so a chmod after it left a
/// window in which other users could connect (and keep that connection).
/// Instead the socket is bound in a private 0700 directory beside `path`
/// (same file system), its mode set there, and hard-linked to `path`; link,
/// like bind, fails if `path` exists, so a live socket that appeared since
/// [`remove_stale`] is never replaced (rename would replace it). The bound
/// path is at most `BIND_DIR_EXTRA` (12) bytes longer than the directory,
/// which `Config::validate_socket` checks.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let parent = crate::config::bind_parent(path);
    remove_dead_private_dirs(parent);
    let private = parent.join(format!(".wb{:x}", std::process::id()));
    let tmp = private.join("s");
    // A leftover of an earlier process with this pid that died right here.
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::hard_link(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Removes the private directories ([`bind_with_mode`]) that daemons killed
/// between making one and removing it left in `parent`: `.wb<pid in hex>`
/// directories of our user whose process is gone, with the socket `s` in
/// them. One of a running process (another daemon binding right now) is
/// left alone, as is one of another user or holding anything else.
fn remove_dead_private_dirs(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".wb"))
            .filter(|hex| {
                !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .and_then(|hex| i32::from_str_radix(hex, 16).ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let dir = e.path();
        // Not followed: a symlink of that name is not ours to clear.
        let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == me);
        // ESRCH: no such process. (EPERM: it runs, as another user.)
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if !ours || !gone {
            continue;
        }
        let _ = std::fs::remove_file(dir.join("s"));
        match std::fs::remove_dir(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the socket directory a dead daemon left");
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "left a dead daemon's socket directory");
            }
        }
    }
}

/// Removes a socket file nobody listens on; refuses a live one or a file
/// that is not a socket.
fn remove_stale(path: &Path) -> Result<(), ServeError> {
    if !stale_socket(path)? {
        return Ok(());
    }
    tracing::info!(socket = %path.display(), "removing a stale socket file");
    std::fs::remove_file(path).map_err(|source| ServeError::Bind {
        path: path.into(),
        source,
    })
}

/// What is at the socket path: nothing (`false`; also when a parent is no
/// directory, which the bind then reports), or a socket nobody listens on
/// (`true`). Refuses a file that is not a socket and a socket a live
/// process answers on.
pub(super) fn stale_socket(path: &Path) -> Result<bool, ServeError> {
    let bind = |source| ServeError::Bind {
        path: path.into(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(bind(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket { path: path.into() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::SocketInUse { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) => Err(bind(e)),
    }
}

/// Writes `<data_dir>/socket` atomically: the socket path and a newline.
pub(super) fn record_path(data_dir: &Path, socket: &Path) -> Result<(), ServeError> {
    let target = data_dir.join(SOCKET_FILE);
    let tmp = data_dir.join("socket.tmp");
    let absolute = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let write = || -> io::Result<()> {
        let mut f = crate::modes::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(absolute.as_os_str().as_encoded_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|source| ServeError::Io {
        path: target.clone(),
        source,
    })
}

/// Raises the soft open-file limit to the hard one: every connection holds
/// a descriptor. Returns the limit in force.
pub(super) fn raise_nofile_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced_but_a_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            remove_stale(&path),
            Err(ServeError::SocketInUse { .. })
        ));
        drop(live);
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(
            remove_stale(&path),
            Err(ServeError::NotASocket { .. })
        ));
        assert!(path.exists());
    }

    #[test]
    fn binding_removes_the_socket_directories_of_dead_daemons_only() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited (and been waited for): its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = dir.path().join(format!(".wb{:x}", child.id()));
        std::fs::create_dir(&dead).unwrap();
        let _left = UnixListener::bind(dead.join("s")).unwrap();
        // Our parent runs: its directory may be a daemon binding right now.
        let live = dir
            .path()
            .join(format!(".wb{:x}", nix::unistd::getppid().as_raw()));
        std::fs::create_dir(&live).unwrap();
        // Not a private directory's name, or not a directory.
        let other = dir.path().join(".wbxyz");
        std::fs::create_dir(&other).unwrap();
        let file = dir.path().join(format!(".wb{:x}1", child.id()));
        std::fs::write(&file, b"").unwrap();
        let path = dir.path().join("s.sock");
        let _bound = bind_with_mode(&path, 0o660).unwrap();
        assert!(!dead.exists(), "the dead daemon's directory was left");
        assert!(live.exists() && other.exists() && file.exists());
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn binding_over_a_live_socket_fails_and_leaves_it_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();
        let err = bind_with_mode(&path, 0o660).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        UnixStream::connect(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        drop(live);
        std::fs::remove_file(&path).unwrap();
        let _bound = bind_with_mode(&path, 0o640).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn a_socket_whose_bind_path_is_too_long_is_refused_and_one_at_the_limit_binds() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory whose path is `len` bytes.
        let dir_of = |len: usize| {
            let base = tmp.path();
            base.join("d".repeat(len - base.as_os_str().len() - 1))
        };
        let socket = |path: &Path| Config {
            socket: Some(path.to_owned()),
            ..Config::default()
        };
        // 107 bytes, as a Unix socket path may be; but bound first as
        // `<dir>/.wb<pid>/s`, up to 117 bytes. A configuration with it is
        // valid (under socket activation nothing is bound), but the daemon
        // cannot bind it itself.
        for dir_len in [105, 96] {
            let path = dir_of(dir_len).join("s");
            socket(&path).validate().unwrap();
            let err = socket(&path).validate_bind_path().unwrap_err();
            assert_eq!(err.field, "socket", "{err}");
            assert!(err.reason.contains("at most 95 bytes"), "{err}");
            assert!(err.reason.contains(".wb<pid in hex>/s"), "{err}");
        }
        let dir = dir_of(95);
        std::fs::create_dir(&dir).unwrap();
        for name in ["s", &"n".repeat(11)] {
            let path = dir.join(name);
            socket(&path).validate().unwrap();
            socket(&path).validate_bind_path().unwrap();
            let _bound = bind_with_mode(&path, 0o600).unwrap();
            UnixStream::connect(&path).unwrap();
        }
        assert_eq!(dir.join("n".repeat(11)).as_os_str().len(), 107);
    }
}
