//! Reading length-prefixed frames from a connection, with the limits a
//! hostile peer cannot get around: the length is checked before anything is
//! allocated, the buffer grows with the bytes that arrive (not with the
//! length announced: a prefix alone costs nothing), and a frame that has
//! started must finish within the read timeout (one byte every few minutes
//! does not keep it alive).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read buffer kept between frames.
const BUF: usize = 64 << 10;

/// Why no frame came.
#[derive(Debug)]
pub(super) enum FrameError {
    /// The peer closed between frames.
    Eof,
    /// The frame's bytes were not admitted: the daemon stops.
    Stopped,
    /// The peer closed in the middle of a frame.
    Truncated {
        /// Bytes of the frame received.
        got: usize,
    },
    /// Nothing arrived for the whole timeout, and nothing was in flight.
    Idle,
    /// A frame started but did not finish within the timeout.
    Stuck {
        /// Bytes of the frame received.
        got: usize,
    },
    /// The length prefix is over the limit; nothing was allocated.
    TooLarge {
        /// Announced length.
        len: u32,
    },
    /// The socket failed.
    Io(io::Error),
}

/// Frames from one connection.
pub(super) struct FrameReader {
    /// The connection's socket, shared with its reply writer (one
    /// descriptor per connection).
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: u32,
    timeout: Duration,
    current_timeout: Option<Duration>,
    /// When the frame being read must be complete: set at its first byte,
    /// kept across the reads of its header and its body.
    deadline: Option<Instant>,
}

impl FrameReader {
    pub(super) fn new(stream: Arc<UnixStream>, max: u32, timeout: Duration) -> Self {
        Self {
            stream,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            max,
            timeout,
            current_timeout: None,
            deadline: None,
        }
    }

    /// Sets the largest frame body from now on.
    pub(super) fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// The next frame body. `busy` says whether replies are still owed to
    /// the peer: a connection that waits for its replies is not idle.
    /// `admit` is given the frame's length before its body is read, and
    /// may wait (for the daemon's budget): false stops reading.
    pub(super) fn next(
        &mut self,
        busy: &dyn Fn() -> bool,
        admit: &mut dyn FnMut(u32) -> bool,
    ) -> Result<&[u8], FrameError> {
        self.fill(4, busy)?;
        let len = u32::from_le_bytes(
            self.buf[self.start..self.start + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if len > self.max {
            return Err(FrameError::TooLarge { len });
        }
        let asked = Instant::now();
        if !admit(len) {
            return Err(FrameError::Stopped);
        }
        // A wait for admission is the daemon's, not the peer's: it does
        // not count against the frame's deadline.
        if let Some(d) = &mut self.deadline {
            *d += asked.elapsed();
        }
        let total = 4 + len as usize;
        self.fill(total, busy)?;
        let body = self.start + 4..self.start + total;
        self.start += total;
        self.deadline = None;
        Ok(&self.buf[body])
    }

    /// Buffers at least `need` bytes of the current frame.
    fn fill(&mut self, need: usize, busy: &dyn Fn() -> bool) -> Result<(), FrameError> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * BUF {
                // A big frame is gone: give its memory back.
                self.buf = vec![0; BUF];
            }
        }
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < need {
            let got = self.end - self.start;
            let wait = match self.deadline {
                Some(d) => d,
                None if got == 0 => Instant::now() + self.timeout,
                None => *self.deadline.insert(Instant::now() + self.timeout),
            };
            let left = wait.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrameError::Stuck { got });
            }
            self.set_timeout(left.max(Duration::from_millis(1)))?;
            if self.end == self.buf.len() {
                // Full: at most double, so the buffer stays within twice
                // what the peer has actually sent.
                let to = (self.buf.len() * 2).min(self.start + need);
                self.buf.resize(to, 0);
            }
            match (&*self.stream).read(&mut self.buf[self.end..]) {
                Ok(0) if got == 0 => return Err(FrameError::Eof),
                Ok(0) => return Err(FrameError::Truncated { got }),
                Ok(n) => {
                    self.end += n;
                    if self.deadline.is_none() {
                        self.deadline = Some(Instant::now() + self.timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if got > 0 {
                        return Err(FrameError::Stuck { got });
                    }
                    if !busy() {
                        return Err(FrameError::Idle);
                    }
                }
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(())
    }

    fn set_timeout(&mut self, t: Duration) -> Result<(), FrameError> {
        // One setsockopt per change, not per read: whole-frame reads keep the
        // full timeout.
        let coarse = if t >= self.timeout { self.timeout } else { t };
        if self.current_timeout != Some(coarse) {
            self.stream
                .set_read_timeout(Some(coarse))
                .map_err(FrameError::Io)?;
            self.current_timeout = Some(coarse);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use weir_protocol::wire::{Op, Request, decode, encode};

    fn pair(max: u32, timeout_ms: u64) -> (UnixStream, FrameReader) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            a,
            FrameReader::new(Arc::new(b), max, Duration::from_millis(timeout_ms)),
        )
    }

    #[test]
    fn frames_split_across_writes_are_joined() {
        let (mut a, mut r) = pair(1 << 20, 2000);
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &Request {
                id: 9,
                op: Op::Ping,
            },
        )
        .unwrap();
        encode(
            &mut buf,
            &Request {
                id: 10,
                op: Op::Stats,
            },
        )
        .unwrap();
        let (x, y) = buf.split_at(3);
        a.write_all(x).unwrap();
        let y = y.to_vec();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            a.write_all(&y).unwrap();
            a
        });
        let first: Request = decode(r.next(&|| false, &mut |_| true).unwrap()).unwrap();
        assert_eq!(first.id, 9);
        let second: Request = decode(r.next(&|| false, &mut |_| true).unwrap()).unwrap();
        assert_eq!(second.op, Op::Stats);
        drop(t.join().unwrap());
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Eof)
        ));
    }

    #[test]
    fn limits_and_timeouts_are_typed() {
        let (mut a, mut r) = pair(4096, 150);
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::TooLarge { len: u32::MAX })
        ));
        assert!(r.buf.len() <= BUF);

        let (mut a, mut r) = pair(4096, 150);
        a.write_all(&[10, 0, 0, 0, 1]).unwrap();
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Stuck { got: 5 })
        ));

        let (_a, mut r) = pair(4096, 150);
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Idle)
        ));

        let (mut a, mut r) = pair(4096, 150);
        a.write_all(&[10, 0, 0, 0, 1]).unwrap();
        drop(a);
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Truncated { got: 5 })
        ));
    }

    #[test]
    fn a_frame_has_one_deadline_for_header_and_body() {
        // The header takes 400 ms and the body 400 ms more: each within
        // the 600 ms timeout, the frame not.
        let (mut a, mut r) = pair(4096, 600);
        let sender = std::thread::spawn(move || {
            let pace = |ms| std::thread::sleep(Duration::from_millis(ms));
            a.write_all(&[10, 0]).unwrap();
            pace(400);
            a.write_all(&[0, 0]).unwrap();
            pace(400);
            let _ = a.write_all(&[7; 10]);
            a
        });
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Stuck { got: 4 })
        ));
        drop(sender.join().unwrap());
    }

    #[test]
    fn a_length_prefix_alone_costs_no_memory() {
        // 60 MiB announced, 10 bytes sent: the buffer grows with what
        // arrives, not with what is announced.
        let (mut a, mut r) = pair(64 << 20, 150);
        a.write_all(&(60u32 << 20).to_le_bytes()).unwrap();
        a.write_all(&[7; 10]).unwrap();
        assert!(matches!(
            r.next(&|| false, &mut |_| true),
            Err(FrameError::Stuck { got: 14 })
        ));
        assert!(r.buf.len() <= 2 * BUF, "{} bytes held", r.buf.len());
        // A large frame that does arrive is still read whole.
        let (mut a, mut r) = pair(64 << 20, 2000);
        let body: Vec<u8> = (0..(3 << 20)).map(|i| i as u8).collect();
        let sender = std::thread::spawn(move || {
            a.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
            a.write_all(&body).unwrap();
            body
        });
        let got = r.next(&|| false, &mut |_| true).unwrap().to_vec();
        assert_eq!(got, sender.join().unwrap());
    }
}
