//! Bad requests cost the operator nothing: 403s, 404s and connections dropped mid-request are
//! not WARN or ERROR lines (they were one line each, 1,059 in one abuse run).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_aborted_requests_are_not_warnings() {
    let out = Captured::default();
    let writer = out.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let (addr, stop_tx, server) = common::start_serving().await;
    for i in 0..40 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = match i % 4 {
            0 => "GET /api/feed HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
                .to_owned(),
            1 => format!("GET /no/such/page HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
            2 => format!(
                "POST /api/strategy HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
            _ => "GET /api/feed HTTP/1.1\r\nHost: ".to_owned(), // dropped mid-headers
        };
        s.write_all(request.as_bytes()).await.unwrap();
        if i % 4 != 3 {
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut all)).await;
            assert!(
                all.starts_with(b"HTTP/1.1 4"),
                "{}",
                String::from_utf8_lossy(&all)
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "{} loud lines:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(
        text.contains("Dashboard listening"),
        "the capture works: {text}"
    );
}
