//! The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13 and later),
//! which nix does not wrap. `SO_PEERCRED` gives only the primary gid, so a
//! user added to a group with `usermod -aG` would not be seen without it.
#![allow(unsafe_code)]

use nix::libc;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The supplementary groups the peer had at `connect`, as the kernel
/// recorded them. Empty on a kernel without `SO_PEERGROUPS` (then only the
/// primary gid counts, as before).
pub(super) fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    // Most processes have a few groups; the kernel says how many when this
    // is too small (ERANGE), and the list cannot grow after `connect`.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes
        // (gid_t elements, so aligned for the gid_t values the kernel
        // writes), and `len` is a valid socklen_t the kernel updates in
        // place. The kernel writes at most `len` bytes and fails with ERANGE
        // instead of writing past them. The fd is open for the call: the
        // stream is borrowed.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n.min(groups.len()));
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if n > groups.len() => groups.resize(n, 0),
            Some(libc::ENOPROTOOPT) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_groups_are_seen() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(&a).unwrap();
        let mut own: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        own.sort_unstable();
        assert_eq!(got, own);
    }
}
