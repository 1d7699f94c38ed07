//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) and for their run over
//! a seeded corpus on the stable toolchain in the test suite: every parser of untrusted input,
//! driven with arbitrary bytes, must answer (an error is fine) and never panic, and what it
//! produces must hold its invariants.
//!
//! Not a stable API: it exists for `fuzz/` and the tests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Config;
use crate::socks::handshake::{self, Credentials};
use crate::socks::{http, socks4};

/// A client that sends `data` and then closes; what the server writes is counted, not kept.
struct Scripted<'a> {
    data: &'a [u8],
    written: usize,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Hand over at most 7 bytes a read, so that messages split across reads are covered.
        let n = self.data.len().min(buf.remaining()).min(7);
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Accepts `user`/`pass` only.
struct OneUser;

impl Credentials for OneUser {
    fn check(&self, username: &[u8], password: &[u8]) -> bool {
        username == b"user" && password == b"pass"
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

/// The SOCKS5 handshake (greeting, RFC 1929 login when the first byte is odd, request) over
/// `data` as the client's bytes.
pub fn socks5_handshake(data: &[u8]) {
    let (with_auth, data) = match data.split_first() {
        Some((flags, rest)) => (flags & 1 == 1, rest),
        None => (false, data),
    };
    let creds = with_auth.then_some(&OneUser as &dyn Credentials);
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut client = Scripted { data, written: 0 };
            let total = client.data.len();
            if let Ok(request) = handshake::negotiate(&mut client, creds).await {
                assert!(
                    request.early_data.len() <= total,
                    "early data longer than the input"
                );
                let shown = request.target.to_string();
                assert!(!shown.is_empty(), "a target always has a name");
            }
            assert!(
                client.written <= 2 + 2 + 512,
                "the server wrote {}",
                client.written
            );
        });
    });
}

/// The SOCKS4/4a request reader over `data` as the client's bytes.
pub fn socks4_request(data: &[u8]) {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut client = Scripted { data, written: 0 };
            match socks4::read_request(&mut client).await {
                Ok(request) => {
                    assert!(
                        request.early_data.len() < data.len(),
                        "a request takes at least its header"
                    );
                    assert!(!request.target.to_string().is_empty());
                    let read = data.len() - client.data.len();
                    let used = read - request.early_data.len();
                    assert!(
                        matches!(socks4::parse(&data[..used]), Ok(Some((_, n))) if n == used),
                        "the request parses alone to the same length"
                    );
                }
                Err(e) => {
                    let _ = e.wants_reply();
                }
            }
            assert_eq!(client.written, 0, "reading a request writes nothing");
        });
    });
}

/// The HTTP proxy's first-head parser over `data`: a complete head parses the same alone, and
/// every refusal has an HTTP answer.
pub fn http_head(data: &[u8]) {
    match http::parse_head(data) {
        Ok(Some(head)) => {
            let n = head.head_len();
            assert!(n <= data.len());
            let alone = http::parse_head(&data[..n]);
            assert!(
                matches!(&alone, Ok(Some(h)) if h.head_len() == n),
                "the head parses alone to the same length"
            );
        }
        Ok(None) => {}
        Err(e) => {
            if let Some(answer) = e.response() {
                assert!(answer.starts_with(b"HTTP/1.1 4"), "a refusal is a 4xx");
            }
        }
    }
}

/// The SOCKS5 UDP request header parser (RFC 1928 §7) over `data` as a datagram a client
/// sent to its relay. What it reads lies inside the datagram, and an IP target's header
/// encodes back to the same bytes' meaning (the relay's answers use the same layout).
pub fn socks5_udp_header(data: &[u8]) {
    let Ok(header) = handshake::parse_udp_header(data) else {
        return;
    };
    assert!(
        header.len >= 4 + 1 + 2 && header.len <= data.len(),
        "header of {} bytes in a {}-byte datagram",
        header.len,
        data.len()
    );
    assert!(
        header.len <= 4 + 1 + 255 + 2,
        "header of {} bytes",
        header.len
    );
    match &header.target {
        handshake::TargetAddr::Ip(addr) => {
            let (bytes, len) = handshake::encode_udp_header(*addr);
            assert_eq!(len, header.len, "an address header has one length");
            let again = handshake::parse_udp_header(&bytes[..len]).expect("re-encoded header");
            assert_eq!(again.target, header.target, "round trip");
            assert_eq!(again.frag, 0);
            assert_eq!(&bytes[3..len], &data[3..len], "ATYP, address, port as sent");
        }
        handshake::TargetAddr::Domain(host, _) => {
            assert!(!host.is_empty(), "an empty name is refused");
            assert_eq!(header.len, 4 + 1 + host.len() + 2, "the name's length byte");
        }
    }
}

/// The config parser over `data` (UTF-8 only: the loader reads text). An error is one line
/// that names the key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml(text) {
        let shown = e.to_string();
        assert!(
            !shown.contains('\n'),
            "a config error is one line: {shown:?}"
        );
        assert!(!e.key.is_empty(), "a config error names a key: {shown:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use super::*;

    /// A small deterministic generator (xorshift64*), so a failure is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// One mutation of `seed`: flips, overwrites, inserts, deletes, truncates, or splices in
    /// interesting bytes.
    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] = [0, 1, 3, 4, 5, 0x7f, 0xff][rng.below(7)];
                }
                2 => v.insert(at, rng.next() as u8),
                3 if at < v.len() => {
                    v.remove(at);
                }
                4 => v.truncate(at),
                _ => {
                    let chunk: &[u8] =
                        [&b"[[interface]]\n"[..], b"\"", b"=", b"\n[", b"\xff\xfe"][rng.below(5)];
                    v.splice(at..at, chunk.iter().copied());
                }
            }
        }
        v
    }

    fn seeds(dir: &Path) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// Runs `target` over every seed and then over mutations, for `budget` at most.
    fn run(target: fn(&[u8]), seeds: &[Vec<u8>], budget: Duration) -> usize {
        assert!(!seeds.is_empty());
        for s in seeds {
            target(s);
        }
        let mut rng = Rng(0x6e65_746d_6978);
        let started = Instant::now();
        let mut runs = seeds.len();
        while started.elapsed() < budget && runs < 2_000_000 {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed);
            target(&input);
            runs += 1;
        }
        runs
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn socks5_corpus_and_mutations_never_panic() {
        let seeds = seeds(&root().join("fuzz/corpus/socks5_handshake"));
        let runs = run(socks5_handshake, &seeds, Duration::from_secs(10));
        assert!(runs > 10_000, "only {runs} inputs in the budget");
    }

    #[test]
    fn socks4_corpus_and_mutations_never_panic() {
        let seeds = seeds(&root().join("fuzz/corpus/socks4_request"));
        let runs = run(socks4_request, &seeds, Duration::from_secs(5));
        assert!(runs > 10_000, "only {runs} inputs in the budget");
    }

    #[test]
    fn http_head_corpus_and_mutations_never_panic() {
        let seeds = seeds(&root().join("fuzz/corpus/http_head"));
        let runs = run(http_head, &seeds, Duration::from_secs(5));
        assert!(runs > 10_000, "only {runs} inputs in the budget");
    }

    #[test]
    fn socks5_udp_header_corpus_and_mutations_never_panic() {
        let seeds = seeds(&root().join("fuzz/corpus/socks5_udp_header"));
        let runs = run(socks5_udp_header, &seeds, Duration::from_secs(5));
        assert!(runs > 10_000, "only {runs} inputs in the budget");
    }

    #[test]
    fn config_corpus_and_mutations_never_panic() {
        let mut all = seeds(&root().join("fuzz/corpus/config"));
        all.extend(seeds(&root().join("configs")));
        let runs = run(config, &all, Duration::from_secs(10));
        assert!(runs > 1_000, "only {runs} inputs in the budget");
    }
}
