//! Who may append: the peer's credentials from `SO_PEERCRED` and its
//! supplementary groups from `SO_PEERGROUPS`, checked against the daemon's
//! own uid and gid and the configured allow-lists.
//! Root is not special: uid 0 appends only if it is listed or is the daemon.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io;
use std::os::unix::net::UnixStream;

/// The process on the other end of a connection, as the kernel saw it at
/// `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) pid: i32,
    pub(super) uid: u32,
    /// The primary gid.
    pub(super) gid: u32,
    /// The supplementary groups (a user added with `usermod -aG`).
    pub(super) groups: Vec<u32>,
}

/// Reads the peer's credentials.
pub(super) fn peer(stream: &UnixStream) -> io::Result<Peer> {
    let c = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
    Ok(Peer {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
        groups: super::peer_groups::peer_groups(stream)?,
    })
}

/// uids and gids allowed to append.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Policy {
    /// The daemon's effective uid and gid plus the configured extras.
    pub(super) fn new(allow_uids: &[u32], allow_gids: &[u32]) -> Self {
        let mut uids = vec![nix::unistd::geteuid().as_raw()];
        uids.extend_from_slice(allow_uids);
        let mut gids = vec![nix::unistd::getegid().as_raw()];
        gids.extend_from_slice(allow_gids);
        Self { uids, gids }
    }

    /// May this peer append? Its primary gid or any supplementary group
    /// may be the allowed one.
    pub(super) fn may_append(&self, p: &Peer) -> bool {
        self.uids.contains(&p.uid)
            || self.gids.contains(&p.gid)
            || p.groups.iter().any(|g| self.gids.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_credentials_are_seen_and_allowed() {
        let (a, _b) = UnixStream::pair().unwrap();
        let p = peer(&a).unwrap();
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(p.pid, std::process::id() as i32);
        assert!(Policy::new(&[], &[]).may_append(&p));
        let stranger = Peer {
            pid: 1,
            uid: p.uid.wrapping_add(12345),
            gid: p.gid.wrapping_add(12345),
            groups: vec![p.gid.wrapping_add(777)],
        };
        assert!(!Policy::new(&[], &[]).may_append(&stranger));
        assert!(Policy::new(&[stranger.uid], &[]).may_append(&stranger));
        assert!(Policy::new(&[], &[stranger.gid]).may_append(&stranger));
        assert!(Policy::new(&[], &[p.gid.wrapping_add(777)]).may_append(&stranger));
    }
}
