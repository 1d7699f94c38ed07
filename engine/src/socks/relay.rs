//! The byte relay between a client and its outbound connection.
//!
//! Two pumps, one per direction, run in the connection's task. Each waits for its source to be
//! readable *before* it takes a buffer, and gives the buffer back as soon as the source has
//! nothing more to read, so an idle relayed connection holds no buffer at all (a few hundred
//! bytes of task state), while a busy one reads and writes 64 KiB at a time.
//!
//! End of stream on one side becomes a write shutdown on the other (half-close in both
//! directions); an error on either side ends both. Byte counts survive errors, go to the
//! interface's live counters as they move, and an idle deadline closes connections silent in
//! both directions.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::iface::LiveCounters;

/// Bytes one read may move.
const BUF_SIZE: usize = 64 * 1024;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
}

/// Relays until both sides have closed, an error ends it, or nothing moved for `idle`.
pub async fn relay(
    client: &TcpStream,
    outbound: &TcpStream,
    counters: &LiveCounters,
    idle: Option<Duration>,
) -> Totals {
    let start = Instant::now();
    let activity = Activity {
        start,
        last_ms: AtomicU64::new(0),
        ended: std::sync::atomic::AtomicU8::new(0),
    };
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let both = async {
        tokio::try_join!(
            pump(client, outbound, &up, &counters.bytes_up, &activity),
            pump(outbound, client, &down, &counters.bytes_down, &activity),
        )
    };
    match idle {
        None => {
            let _ = both.await;
        }
        Some(idle) => {
            tokio::select! {
                _ = both => {}
                () = activity.idle_for(idle) => {
                    tracing::debug!(idle_secs = idle.as_secs(), "Relay idle; closing.");
                }
            }
        }
    }
    Totals {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
    }
}

/// What the two directions share: when data last moved (for the idle deadline), and how many
/// have ended.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    /// Directions that reached end of stream.
    ended: std::sync::atomic::AtomicU8,
}

impl Activity {
    /// `src` finished sending: pass the half-close on to `dst`, unless the other direction has
    /// already ended too — then both sockets are about to be closed, and closing sends the FIN
    /// (one system call fewer per connection). A peer that is already gone makes the shutdown
    /// fail, which is no error for the relay.
    fn pass_end_of_stream(&self, dst: &TcpStream) {
        if self.ended.fetch_add(1, Ordering::AcqRel) == 0 {
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let mut wait = idle;
        loop {
            tokio::time::sleep(wait).await;
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let since = self.start.elapsed().saturating_sub(last);
            if since >= idle {
                return;
            }
            wait = idle - since;
        }
    }
}

/// Copies `src` to `dst` until end of stream (then shuts `dst`'s write side) or an error.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    moved: &AtomicU64,
    total: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    // Capacity only, never zero-filled: `try_read_buf` writes into the spare capacity.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        src.readable().await?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if moved.load(Ordering::Relaxed) >= SPLICE_AFTER
            && splice_enabled()
            && let Some(pipe) = super::splice::Pipe::take()
        {
            buf = Vec::new();
            match splice_burst(src, dst, pipe, moved, total, activity).await? {
                Burst::Ended => {
                    activity.pass_end_of_stream(dst);
                    return Ok(());
                }
                Burst::Drained => continue,
            }
        }
        if buf.capacity() == 0 {
            buf.reserve_exact(BUF_SIZE);
        }
        buf.clear();
        match src.try_read_buf(&mut buf) {
            Ok(0) => {
                activity.pass_end_of_stream(dst);
                return Ok(());
            }
            Ok(n) => {
                write_all(dst, &buf[..n]).await?;
                moved.fetch_add(n as u64, Ordering::Relaxed);
                total.fetch_add(n as u64, Ordering::Relaxed);
                activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more for now: an idle direction holds no buffer.
                buf = Vec::new();
            }
            Err(e) => return Err(e),
        }
    }
}

/// A direction splices once it has moved this much by copying (a bulk transfer; small
/// exchanges never take a pipe).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SPLICE_AFTER: u64 = 128 * 1024;

/// Zero-copy unless `NETMIX_SPLICE=off` (for comparing the two paths).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn splice_enabled() -> bool {
    static ENABLED: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var("NETMIX_SPLICE").map_or(true, |v| v != "off"));
    *ENABLED
}

/// How a splice burst ended.
#[cfg(any(target_os = "linux", target_os = "android"))]
enum Burst {
    /// The source has nothing more for now; everything read was delivered.
    Drained,
    /// The source reached end of stream; everything read was delivered.
    Ended,
}

/// Splices `src` to `dst` through `pipe` while `src` has data, then gives the pipe back.
#[cfg(any(target_os = "linux", target_os = "android"))]
async fn splice_burst(
    src: &TcpStream,
    dst: &TcpStream,
    mut pipe: super::splice::Pipe,
    moved: &AtomicU64,
    total: &AtomicU64,
    activity: &Activity,
) -> io::Result<Burst> {
    let result = async {
        loop {
            match pipe.fill_from(src) {
                Ok(0) => return Ok(Burst::Ended),
                Ok(_) => {
                    while pipe.held() > 0 {
                        dst.writable().await?;
                        match pipe.drain_to(dst) {
                            Ok(n) => {
                                moved.fetch_add(n as u64, Ordering::Relaxed);
                                total.fetch_add(n as u64, Ordering::Relaxed);
                                activity.touch();
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    pipe.give_back();
    result
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback TCP streams.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn counts_both_ways_and_half_closes() {
        let (mut c_app, c_proxy) = pair().await;
        let (o_proxy, mut o_app) = pair().await;
        let counters = std::sync::Arc::new(LiveCounters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move { relay(&c_proxy, &o_proxy, &c, None).await });
        c_app.write_all(b"hello").await.unwrap();
        c_app.shutdown().await.unwrap(); // client half-closes
        let mut got = Vec::new();
        o_app.read_to_end(&mut got).await.unwrap(); // destination sees EOF
        assert_eq!(got, b"hello");
        o_app.write_all(b"world!").await.unwrap(); // and can still answer
        o_app.shutdown().await.unwrap();
        let mut back = Vec::new();
        c_app.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        assert_eq!(task.await.unwrap(), Totals { up: 5, down: 6 });
        assert_eq!(counters.bytes_up.load(Ordering::Relaxed), 5);
        assert_eq!(counters.bytes_down.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn large_transfer_is_intact() {
        let (mut c_app, c_proxy) = pair().await;
        let (o_proxy, mut o_app) = pair().await;
        let task =
            tokio::spawn(
                async move { relay(&c_proxy, &o_proxy, &LiveCounters::default(), None).await },
            );
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            o_app.write_all(&sent).await.unwrap();
            o_app.shutdown().await.unwrap();
            o_app
        });
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let spliced = super::super::splice::spliced_bytes();
        let mut got = Vec::new();
        c_app.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "5 MB arrive in order, then the end of stream");
        drop(c_app);
        drop(writer.await.unwrap());
        assert_eq!(task.await.unwrap().down, 5_000_000);
        // Past the first SPLICE_AFTER bytes, the bulk went through the kernel, not a buffer.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(
            super::super::splice::spliced_bytes() - spliced >= 5_000_000 - SPLICE_AFTER,
            "spliced {}",
            super::super::splice::spliced_bytes() - spliced
        );
    }

    #[tokio::test]
    async fn bulk_upload_then_half_close_then_answer() {
        let (mut c_app, c_proxy) = pair().await;
        let (o_proxy, mut o_app) = pair().await;
        let task =
            tokio::spawn(
                async move { relay(&c_proxy, &o_proxy, &LiveCounters::default(), None).await },
            );
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        let sent = data.clone();
        let uploader = tokio::spawn(async move {
            c_app.write_all(&sent).await.unwrap();
            c_app.shutdown().await.unwrap();
            let mut answer = Vec::new();
            c_app.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        o_app.read_to_end(&mut got).await.unwrap(); // the half-close arrives after the bulk
        assert!(got == data, "3 MB arrive in order");
        o_app.write_all(b"thanks").await.unwrap();
        o_app.shutdown().await.unwrap();
        assert_eq!(uploader.await.unwrap(), b"thanks");
        assert_eq!(
            task.await.unwrap(),
            Totals {
                up: 3_000_000,
                down: 6
            }
        );
    }

    #[tokio::test]
    async fn idle_relay_is_closed() {
        // Real sockets need the real clock (a paused clock would jump past their I/O).
        let (mut c_app, c_proxy) = pair().await;
        let (o_proxy, _o_app) = pair().await;
        let idle = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            relay(&c_proxy, &o_proxy, &LiveCounters::default(), Some(idle)).await
        });
        c_app.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c_app.write_all(b"y").await.unwrap(); // activity pushes the deadline back
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!task.is_finished(), "not idle yet");
        assert_eq!(task.await.unwrap().up, 2);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
