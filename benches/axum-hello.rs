//! Native baseline for `benches/run.sh`: a plain axum app serving the same
//! `GET /hello` response as the `hello` component (`200`, `content-type:
//! text/plain`, body `Hello, world!\n`).
//!
//! It runs on tokio's default multi-threaded runtime (one worker per core),
//! as the Trellis host does, with axum's stock HTTP/1 server and no tuning.
//!
//! Usage: `axum-hello [LISTEN_ADDR]` (default `127.0.0.1:8081`).

mod shutdown;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
const BODY: &str = "Hello, world!\n";

async fn hello() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain")], BODY)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let app = Router::new().route("/hello", get(hello));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("axum-hello listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    Ok(())
}
