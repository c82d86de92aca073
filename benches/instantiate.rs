//! Per-request cost of the Trellis host without HTTP: instantiating the
//! hello component from the pool, and a full `invoke` (instantiate, call
//! `wasi:http/incoming-handler.handle`, collect the response), each on one
//! thread, averaged over many iterations.
//!
//! Usage: `instantiate WASM [ITERATIONS] [--instantiate-only]`; the last
//! flag skips the invoke measurement, for components other than hello
//! (every grant is given, so any plugin loads).

use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis::capabilities::{Capabilities, GuestContext, Services};
use trellis::config::env::Env;
use trellis::config::manifest::{KNOWN_GRANTS, Limits, Manifest, RouteSpec};
use trellis::config::units::{ByteSize, Duration as Timeout};
use trellis::observability::metrics::Metrics;
use trellis::observability::trace::TraceContext;
use trellis::runtime::component::Loader;
use trellis::runtime::engine::{EpochTicker, new_engine};
use trellis::runtime::invoke::{Context, Lease, instantiate_once, invoke};
use trellis::runtime::linker::new_linker;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let wasm = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: instantiate WASM [ITERATIONS] [--instantiate-only]")
    })?;
    let iterations: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let instantiate_only = args.next().is_some_and(|a| a == "--instantiate-only");

    let engine = new_engine(1000).map_err(anyhow::Error::from)?;
    let _ticker = EpochTicker::start(&engine);
    let linker = new_linker(&engine).map_err(anyhow::Error::from)?;
    let cache = std::env::temp_dir().join(format!("trellis-bench-{}", std::process::id()));
    let loader = Loader::new(engine.clone(), linker, cache.clone());
    // Every grant, so any plugin loads (users.wasm, say, for its cost).
    let grants: Vec<String> = KNOWN_GRANTS.iter().map(|g| g.to_string()).collect();
    let (handler, _) = loader.load(&std::fs::read(&wasm)?, &grants, Some(&[]))?;
    let manifest = Manifest::parse("", std::path::Path::new("bench.toml"), cache.clone())?;
    let services = Services::new(&manifest, &Env::default())?;
    let spec = RouteSpec {
        name: "hello".into(),
        path: "/hello".into(),
        methods: None,
        grants,
        limits: Limits::default(),
        config: Default::default(),
        rate_limit: None,
        cache: None,
        cache_namespace: "hello".into(),
        outbound: Some(Vec::new()),
        auth: None,
        scopes: Vec::new(),
        cors: None,
        schema: None,
        summary: None,
        description: None,
        reuse: None,
        queues: Vec::new(),
        topics: Vec::new(),
        set_by_admin: Default::default(),
    };
    let capabilities = Arc::new(Capabilities::new(&services, &spec));
    let trace = Arc::new(TraceContext::from_request(None));
    let guest = GuestContext::new(
        capabilities,
        "hello".into(),
        handler.digest.clone(),
        "bench".into(),
        trace,
        None,
    );
    let handler = Arc::new(handler);
    let slow_slots = Arc::new(tokio::sync::Semaphore::new(4));
    let instances = Arc::new(tokio::sync::Semaphore::new(1));
    let metrics = Arc::new(Metrics::new());
    let series = Arc::new(metrics.route("hello"));
    let limits = Limits {
        timeout: Timeout(Duration::from_secs(5)),
        memory: ByteSize(16 << 20),
        max_body: ByteSize(1 << 20),
        max_concurrency: 1,
        queue_timeout: Timeout(Duration::from_millis(100)),
    };

    let instantiate = measure(iterations, || async {
        instantiate_once(&engine, &handler, &limits, guest.clone())
            .await
            .expect("instantiate");
    })
    .await;

    println!(
        "instantiate (store + pooled instance, then drop): {:>7.2} µs",
        micros(instantiate)
    );
    if instantiate_only {
        return Ok(());
    }

    let full = measure(iterations, || async {
        let req = http::Request::get("http://localhost/hello")
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let cx = Context {
            metrics: metrics.clone(),
            series: series.clone(),
            guest: guest.clone(),
            slow_slots: slow_slots.clone(),
            client_fault: Default::default(),
        };
        let slot = instances
            .clone()
            .try_acquire_owned()
            .expect("a free instance slot");
        let response = invoke(
            &engine,
            handler.clone(),
            &limits,
            req,
            (),
            Lease::Fresh(slot),
            cx,
        )
        .await
        .expect("invoke");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"Hello, world!\n");
    })
    .await;

    println!(
        "invoke (instantiate + handle + body):             {:>7.2} µs",
        micros(full)
    );
    let _ = std::fs::remove_dir_all(cache);
    Ok(())
}

/// Average wall time of `f` over `n` runs, after a warm-up of n/10.
async fn measure<F, Fut>(n: u32, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let started = Instant::now();
    for _ in 0..n {
        f().await;
    }
    started.elapsed() / n
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
