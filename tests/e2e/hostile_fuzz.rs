//! A mutation fuzzer for the HTTP edge, against the real binary: valid
//! requests with bytes flipped, cut, repeated or spliced with tokens that
//! break parsers, each on its own connection. Garbage must get a 4xx or a
//! closed connection, never a 5xx, and the host must keep serving.
//! `TRELLIS_FUZZ_CASES` sets the number of cases (default 300) and
//! `TRELLIS_FUZZ_SEED` replays a run; a failure prints both.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{Manifest, Trellis, component};

/// Requests to start from: plain, with a body, chunked, and the host's own.
const SEEDS: &[&[u8]] = &[
    b"GET /hello HTTP/1.1\r\nhost: localhost\r\nx-request-id: abc\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nhello world",
    b"POST /echo HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /health/ready HTTP/1.1\r\nhost: localhost\r\naccept-encoding: gzip, br\r\n\r\n",
    b"PUT /echo?x=%00&y=%zz HTTP/1.1\r\nhost: localhost\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nabc",
];

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b":",
    b" ",
    b"\0",
    b"\xff\xfe",
    b"chunked",
    b"content-length: ",
    b"transfer-encoding: chunked\r\n",
    b"host: x\r\n",
    b"-1",
    b"18446744073709551616",
    b"ffffffffffffffff",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"/../../",
    b"%",
    b"GET",
    b"CONNECT",
    b"expect: 100-continue\r\n",
];

/// xorshift64: the test's own, so a seed replays on any machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                for _ in 0..rng.below(64) {
                    bytes.splice(at..at, copy.iter().copied());
                }
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
        }
    }
    bytes
}

/// Sends `request`, half-closes, and reads until the host closes or a
/// second passes; the status of the first response, if one came.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut bytes = Vec::new();
    let read = async {
        let mut buf = [0; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
    let line = bytes.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn garbage_requests_get_4xx_and_the_host_keeps_serving() {
    let cases: usize = std::env::var("TRELLIS_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("TRELLIS_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
            nanos.map_or(1, |d| d.as_nanos() as u64) | 1
        });
    let manifest = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        .route("echo", "/echo", component::ECHO, &[r#"timeout = "2s""#]);
    let trellis = Trellis::start(manifest).await;
    let mut rng = Rng(seed);
    let mut answered = 0;
    for case in 0..cases {
        let request = mutate(&mut rng, SEEDS[case % SEEDS.len()]);
        if let Some(status) = exchange(trellis.addr, &request).await {
            answered += 1;
            assert!(
                status < 500,
                "seed {seed}, case {case}: {status} for {:?}",
                String::from_utf8_lossy(&request)
            );
        }
    }
    assert!(
        answered > cases / 4,
        "seed {seed}: only {answered} of {cases} got any answer"
    );
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200, "seed {seed}: the host still serves");
    let live = trellis.get("/health/live").await;
    assert_eq!(live.status(), 200);
}
