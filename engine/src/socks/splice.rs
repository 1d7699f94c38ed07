//! Zero-copy relaying on Linux: `splice(2)` moves a bulk direction's bytes socket → pipe →
//! socket inside the kernel, never through a user-space buffer.
//!
//! A pipe costs two file descriptors, so pipes come from a small process-wide pool: a
//! direction borrows one only while it has bytes in flight, and gives it back (empty) as
//! soon as its source has nothing more to read. An idle connection holds no pipe, and when
//! the pool is exhausted a direction keeps copying through a buffer, as before.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipes in use or pooled, at most (each is two file descriptors, counted in the listener's
/// reserve).
pub const MAX_PIPES: usize = 64;
/// Pipe capacity asked for (the kernel may round it or refuse; the default is 64 KiB).
const PIPE_SIZE: usize = 1024 * 1024;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
static CREATED: AtomicUsize = AtomicUsize::new(0);
/// Bytes relayed by splice since start (counted in tests only: a shared counter has no place on
/// the relay's hot path).
#[cfg(test)]
static SPLICED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes relayed by splice (rather than copied) since start, all connections together.
#[cfg(test)]
pub fn spliced_bytes() -> u64 {
    SPLICED.load(Ordering::Relaxed)
}

/// A pipe, empty whenever it is in the pool.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe now.
    held: usize,
    capacity: usize,
}

impl Pipe {
    /// One from the pool, or a new one while fewer than [`MAX_PIPES`] exist; `None` otherwise
    /// (or when the OS refuses one).
    pub fn take() -> Option<Pipe> {
        if let Some(p) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(p);
        }
        if CREATED.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
            CREATED.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match Pipe::create() {
            Ok(p) => Some(p),
            Err(error) => {
                CREATED.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(%error, "No pipe for splice; copying instead.");
                None
            }
        }
    }

    fn create() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
            .ok()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(64 * 1024);
        Ok(Pipe {
            read,
            write,
            held: 0,
            capacity,
        })
    }

    /// Back to the pool when empty; closed (dropped) when it still holds bytes (after an error).
    pub fn give_back(self) {
        if self.held == 0 {
            POOL.lock().unwrap_or_else(|e| e.into_inner()).push(self);
        }
    }

    /// Bytes waiting in the pipe.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves what `src` has (up to the pipe's capacity) into the pipe: `Ok(0)` at end of
    /// stream, `WouldBlock` when nothing is there. Only called on an empty pipe.
    pub fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0);
        let n = src.try_io(Interest::READABLE, || {
            splice(
                src,
                None,
                &self.write,
                None,
                self.capacity,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        self.held = n;
        Ok(n)
    }

    /// Moves bytes from the pipe to `dst`, as many as it takes now; `WouldBlock` when full.
    pub fn drain_to(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_io(Interest::WRITABLE, || {
            splice(
                &self.read,
                None,
                dst,
                None,
                self.held,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.held -= n;
        #[cfg(test)]
        SPLICED.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Only pipes leaving for good are dropped (the pool keeps the others).
        CREATED.fetch_sub(1, Ordering::Relaxed);
    }
}
