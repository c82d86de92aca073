//! Bodies far larger than memory stream through the host in both directions,
//! and the host's resident memory stays flat while they do.
//!
//! Each test holds `HEAVY`, so they never run at the same time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use crate::harness::{HEAVY, MIB, Manifest, Memory, Trellis, client_builder, component};

const GIB: u64 = 1024 * MIB;
/// How much the host's RSS may grow while a body streams through it.
const MAX_GROWTH: u64 = 200 * MIB;
/// Bounds each transfer, so a stalled stream fails rather than hangs.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
const BLOCK: usize = 64 * 1024;

fn manifest() -> Manifest {
    Manifest::new()
        .route(
            "stream",
            "/stream",
            component::STREAM,
            &[r#"timeout = "300s""#],
        )
        .route(
            "echo",
            "/echo",
            component::ECHO,
            &[r#"timeout = "300s""#, r#"max_body = "1GiB""#],
        )
        // The WASI 0.3 echo: `/echo3?echo`.
        .route(
            "echo3",
            "/echo3",
            component::P3_COUNTER,
            &[
                r#"grants = ["log"]"#,
                r#"timeout = "300s""#,
                r#"max_body = "1GiB""#,
            ],
        )
}

/// A client for big transfers: no compression, long overall timeout.
fn client() -> reqwest::Client {
    client_builder()
        .no_gzip()
        .no_brotli()
        .timeout(TRANSFER_TIMEOUT)
        .build()
        .expect("building a client")
}

/// Tracks the host's memory from a baseline while a transfer runs.
struct MemoryWatch<'a> {
    trellis: &'a Trellis,
    baseline: Memory,
    max_rss: u64,
}

impl<'a> MemoryWatch<'a> {
    fn start(trellis: &'a Trellis) -> MemoryWatch<'a> {
        let baseline = trellis.memory();
        MemoryWatch {
            trellis,
            baseline,
            max_rss: baseline.rss,
        }
    }

    fn sample(&mut self) {
        self.max_rss = self.max_rss.max(self.trellis.memory().rss);
    }

    /// Fails if RSS grew by `MAX_GROWTH` or more at a sample, or at its peak.
    fn assert_flat(mut self, what: &str) {
        self.sample();
        let end = self.trellis.memory();
        let sampled = self.max_rss.saturating_sub(self.baseline.rss);
        let peak = end.hwm.saturating_sub(self.baseline.hwm);
        assert!(
            sampled < MAX_GROWTH && peak < MAX_GROWTH,
            "{what}: host RSS grew {} MiB (sampled) / {} MiB (peak); baseline {:?}, end {end:?}",
            sampled / MIB,
            peak / MIB,
            self.baseline,
        );
    }
}

/// Warms the host up (first instantiations, connection, buffers), so the
/// baseline includes what any request costs.
async fn warm_up(trellis: &Trellis, client: &reqwest::Client) {
    for _ in 0..3 {
        let body = client
            .get(trellis.url("/stream?bytes=1048576"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
        assert_eq!(body.unwrap().len(), MIB as usize);
        for echo in ["/echo", "/echo3?echo"] {
            let echo = client
                .post(trellis.url(echo))
                .body(vec![1; BLOCK])
                .send()
                .await
                .unwrap();
            assert_eq!(echo.bytes().await.unwrap().len(), BLOCK);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_one_gib_in_constant_memory() {
    let _heavy = HEAVY.lock().await;
    let trellis = Trellis::start(manifest()).await;
    let client = client();
    warm_up(&trellis, &client).await;

    let mut watch = MemoryWatch::start(&trellis);
    let expected = [b'x'; BLOCK];
    let received = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        let response = client
            .get(trellis.url(&format!("/stream?bytes={GIB}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("the body streams to its end");
            for part in chunk.chunks(BLOCK) {
                assert!(
                    part == &expected[..part.len()],
                    "wrong byte near offset {received}"
                );
            }
            // Sample every 32 MiB.
            if (received + chunk.len() as u64) / (32 * MIB) != received / (32 * MIB) {
                watch.sample();
            }
            received += chunk.len() as u64;
        }
        received
    })
    .await
    .expect("1 GiB streams within the timeout");
    assert_eq!(received, GIB);
    watch.assert_flat("streaming 1 GiB out");
}

/// The upload: 64 KiB blocks, block `k` being a 64 KiB window into a random
/// 128 KiB buffer at an offset that depends on `k`, so a lost, repeated or
/// reordered block shows up as a mismatch, and checking costs one `memcmp`.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Pattern {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let random = (0..BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>();
        Pattern(random.repeat(2))
    }

    /// Bytes `pos..pos + len` of the upload, for a range within one block.
    fn at(&self, pos: u64, len: usize) -> &[u8] {
        let block = pos / BLOCK as u64;
        let start = (block * 4099 % BLOCK as u64) as usize + (pos % BLOCK as u64) as usize;
        &self.0[start..start + len]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_512_mib_upload_in_constant_memory() {
    echo_in_constant_memory("/echo", 512 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_p3_echo_256_mib_upload_in_constant_memory() {
    echo_in_constant_memory("/echo3?echo", 256 * MIB).await;
}

/// Uploads `total` bytes to `path`, which streams them back, and checks
/// every byte of the answer and the host's memory while it runs.
async fn echo_in_constant_memory(path: &str, total: u64) {
    let _heavy = HEAVY.lock().await;
    let trellis = Trellis::start(manifest()).await;
    let client = client();
    warm_up(&trellis, &client).await;

    let pattern = Arc::new(Pattern::new());
    let source = pattern.clone();
    let upload = futures::stream::iter(0..total / BLOCK as u64).map(move |block| {
        Ok::<_, std::io::Error>(Bytes::copy_from_slice(
            source.at(block * BLOCK as u64, BLOCK),
        ))
    });

    let mut watch = MemoryWatch::start(&trellis);
    let received = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        let response = client
            .post(trellis.url(path))
            .body(reqwest::Body::wrap_stream(upload))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("the echo streams to its end");
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let len = rest.len().min(BLOCK - (received % BLOCK as u64) as usize);
                assert!(
                    rest[..len] == *pattern.at(received, len),
                    "echo differs near offset {received}"
                );
                if (received + len as u64) / (32 * MIB) != received / (32 * MIB) {
                    watch.sample();
                }
                received += len as u64;
                rest = &rest[len..];
            }
        }
        received
    })
    .await
    .unwrap_or_else(|_| panic!("{path}: {} MiB echo within the timeout", total / MIB));
    assert_eq!(received, total);
    watch.assert_flat(&format!("{path}: echoing {} MiB", total / MIB));
}
