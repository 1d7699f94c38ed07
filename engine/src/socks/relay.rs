//! The byte relay between a client and its outbound connection: `copy_bidirectional`
//! (half-close in both directions) with byte counts that survive errors and an idle deadline.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::iface::LiveCounters;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
}

/// Relays until both sides have closed, an error ends it, or nothing moved for `idle`.
pub async fn relay<C, O>(
    client: &mut C,
    outbound: &mut O,
    counters: &LiveCounters,
    idle: Option<Duration>,
) -> Totals
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last_activity_ms = AtomicU64::new(0);
    let mut client = Watched {
        inner: client,
        start,
        last_activity_ms: &last_activity_ms,
        read: 0,
        total: &counters.bytes_up,
    };
    let mut outbound = Watched {
        inner: outbound,
        start,
        last_activity_ms: &last_activity_ms,
        read: 0,
        total: &counters.bytes_down,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut outbound);
    match idle {
        None => {
            let _ = copy.await;
        }
        Some(idle) => {
            let watchdog = async {
                let mut wait = idle;
                loop {
                    tokio::time::sleep(wait).await;
                    let since = start.elapsed().saturating_sub(Duration::from_millis(
                        last_activity_ms.load(Ordering::Relaxed),
                    ));
                    if since >= idle {
                        return;
                    }
                    wait = idle - since;
                }
            };
            tokio::select! {
                _ = copy => {}
                () = watchdog => tracing::debug!(idle_secs = idle.as_secs(), "Relay idle; closing."),
            }
        }
    }
    Totals {
        up: client.read,
        down: outbound.read,
    }
}

/// Counts bytes read and notes the time of the last activity.
struct Watched<'a, S> {
    inner: &'a mut S,
    start: Instant,
    last_activity_ms: &'a AtomicU64,
    read: u64,
    total: &'a AtomicU64,
}

impl<S> Watched<'_, S> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.total.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn counts_both_ways_and_half_closes() {
        let (mut c_app, mut c_proxy) = duplex(1024);
        let (mut o_proxy, mut o_app) = duplex(1024);
        let task = tokio::spawn(async move {
            relay(&mut c_proxy, &mut o_proxy, &LiveCounters::default(), None).await
        });
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
    }

    #[tokio::test(start_paused = true)]
    async fn idle_relay_is_closed() {
        let (mut c_app, mut c_proxy) = duplex(1024);
        let (mut o_proxy, _o_app) = duplex(1024);
        let task = tokio::spawn(async move {
            relay(
                &mut c_proxy,
                &mut o_proxy,
                &LiveCounters::default(),
                Some(Duration::from_secs(30)),
            )
            .await
        });
        c_app.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(task.await.unwrap().up, 1);
    }
}
