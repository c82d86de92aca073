//! Hostile clients on raw sockets: slowloris, idle keep-alive connections,
//! more connections than `max_connections`, and a host out of file
//! descriptors. Each must cost the host one connection, for a bounded
//! time, and never its ability to serve everyone else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{Manifest, Trellis, component};

fn manifest() -> Manifest {
    Manifest::new().route(
        "hello",
        "/hello",
        component::HELLO,
        &[r#"methods = ["GET"]"#],
    )
}

/// A keep-alive `GET path` on the wire.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: trellis\r\n\r\n")
}

/// Reads one response with a `content-length` off `stream` and returns its
/// status; fails the test after `within`.
async fn read_response(stream: &mut TcpStream, within: Duration) -> u16 {
    tokio::time::timeout(within, read_response_inner(stream))
        .await
        .expect("a response in time")
}

async fn read_response_inner(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.expect("reading a response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head[9..12].parse().expect("a status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a content-length"))
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.expect("reading a body");
        assert!(n > 0, "closed mid-body");
        have += n;
    }
    status
}

/// Waits until the server closes `stream` (EOF or reset) and returns when,
/// or `None` if it is still open after `within`. Fails if the server sends
/// anything.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0; 1024];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0) | Err(_)) => Some(Instant::now()),
        Ok(Ok(n)) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// `GET /hello` on a fresh connection; returns how long it took.
async fn hello_takes(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    stream.write_all(get("/hello").as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await,
        200
    );
    started.elapsed()
}

#[tokio::test]
async fn slowloris_is_closed_after_header_timeout() {
    let trellis = Trellis::start(manifest().server(r#"header_timeout = "1s""#)).await;
    let addr = trellis.addr;

    // A head sent in pieces but whole within the timeout is served.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for piece in ["GET /hel", "lo HTTP/1.1\r\nhost: t", "rellis\r\n\r\n"] {
        stream.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await,
        200
    );

    // Ten clients trickle a head at a byte a second.
    let mut loris = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for byte in get("/hello").bytes() {
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let closed = tokio::spawn(async move {
            let mut buf = [0; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await;
            match read {
                Ok(Ok(0) | Err(_)) => Ok(started.elapsed()),
                Ok(Ok(n)) => Err(format!("got {:?}", String::from_utf8_lossy(&buf[..n]))),
                Err(_) => Err("still open after 5s".to_owned()),
            }
        });
        loris.push((trickle, closed));
    }

    // Meanwhile everyone else is served promptly.
    for _ in 0..5 {
        let took = hello_takes(addr).await;
        assert!(took < Duration::from_millis(500), "hello took {took:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (trickle, closed) in loris {
        let after = closed.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
            "a slowloris was closed after {after:?}, header_timeout is 1s"
        );
        trickle.abort();
    }
    assert!(hello_takes(addr).await < Duration::from_millis(500));
}

#[tokio::test]
async fn idle_keep_alive_is_closed_after_idle_timeout() {
    // An idle timeout longer than the header timeout: idle time between
    // requests is not counted against the head.
    let trellis = Trellis::start(
        manifest()
            .server(r#"header_timeout = "1s""#)
            .server(r#"idle_timeout = "2s""#),
    )
    .await;
    let mut stream = TcpStream::connect(trellis.addr).await.unwrap();
    stream.write_all(get("/hello").as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await,
        200
    );

    // Idle for longer than header_timeout: still open, and serves again.
    assert_eq!(
        closed_within(&mut stream, Duration::from_millis(1500)).await,
        None,
        "closed while idle for less than idle_timeout"
    );
    stream.write_all(get("/hello").as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await,
        200
    );

    // Then idle until the server closes it.
    let idle_since = Instant::now();
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle connection is closed");
    let after = closed - idle_since;
    assert!(
        after >= Duration::from_millis(1800) && after < Duration::from_millis(3500),
        "closed after {after:?} idle, idle_timeout is 2s"
    );
    // The host serves on.
    assert!(hello_takes(trellis.addr).await < Duration::from_millis(500));
}

#[tokio::test]
async fn beyond_max_connections_clients_wait_for_a_free_slot() {
    let trellis = Trellis::start(manifest().server("max_connections = 20")).await;
    let addr = trellis.addr;

    // Twenty keep-alive connections, each served once and then held idle.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(get("/health/live").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut stream, Duration::from_secs(5)).await,
            200
        );
        held.push(stream);
    }

    // The 21st connects (the kernel queues it) but is not served...
    let mut waiting = TcpStream::connect(addr)
        .await
        .expect("the 21st connection is queued, not refused");
    waiting
        .write_all(get("/health/live").as_bytes())
        .await
        .unwrap();
    let mut buf = [0; 64];
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the 21st connection got {early:?} while 20 were open"
    );

    // ...until one of the twenty closes.
    drop(held.pop());
    assert_eq!(
        read_response(&mut waiting, Duration::from_secs(3)).await,
        200
    );

    drop(held);
    drop(waiting);
    let response = tokio::time::timeout(Duration::from_secs(5), trellis.get("/health/live"))
        .await
        .expect("/health/live answers after the connections close");
    assert_eq!(response.status(), 200);
}

/// The process's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a command name") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn out_of_file_descriptors_is_logged_and_recovered_from() {
    let trellis = Trellis::start(manifest()).await;
    let pid = trellis.pid();
    assert!(hello_takes(trellis.addr).await < Duration::from_secs(5));

    // Leave the host a few descriptors to spare, as a low `ulimit -n` would.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing the host's fds")
        .count();
    let limit = open + 8;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("running prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");

    // More idle clients than that: the host accepts a few, then runs out.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(TcpStream::connect(trellis.addr).await.unwrap());
    }
    let first = trellis
        .wait_log("an accept error", |l| {
            l["message"] == "accepting connections failed; retrying"
        })
        .await;
    assert_eq!(first["level"], "ERROR", "{first}");
    assert!(
        first["cause"]
            .as_str()
            .is_some_and(|c| c.contains("os error 24")),
        "{first}"
    );

    // While it stays out of descriptors: retried with a pause, not in a
    // busy loop, and logged at most once a second with a count.
    let cpu_before = cpu_time(pid);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cpu = cpu_time(pid) - cpu_before;
    assert!(
        cpu < Duration::from_millis(600),
        "the host used {cpu:?} of CPU in 2.5s while out of descriptors"
    );
    let lines: Vec<_> = trellis
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "accepting connections failed; retrying")
        .collect();
    let seconds = window.elapsed().as_secs() + 2;
    assert!(
        lines.len() >= 2 && lines.len() as u64 <= seconds,
        "{} accept-error lines: {lines:#?}",
        lines.len()
    );
    assert!(
        lines[1..].iter().any(|l| l["errors"].as_u64() > Some(1)),
        "later lines count the errors they stand for: {lines:#?}"
    );

    // Once the clients go, the host serves again.
    drop(held);
    let response = tokio::time::timeout(Duration::from_secs(5), trellis.get("/health/live"))
        .await
        .expect("/health/live answers once descriptors are free");
    assert_eq!(response.status(), 200);
    assert!(hello_takes(trellis.addr).await < Duration::from_secs(1));
    trellis
        .wait_log("recovery", |l| {
            l["message"] == "accepting connections again"
        })
        .await;
}
