//! The `trellis` binary: read the configuration, load every component,
//! then serve (or, for `check`, report and exit).

use anyhow::Context as _;
use std::sync::Arc;
use trellis::app::App;
use trellis::config::{Config, Mode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log_guard = trellis::telemetry::init();
    let config = Config::load()?;
    let app = App::load(&config.manifest, &config.source)
        .with_context(|| format!("loading {}", config.origin))?;

    if config.mode == Mode::Check {
        for route in app.routes.iter() {
            println!(
                "ok  {} -> {}",
                route.name,
                route.label.to_str().unwrap_or_default()
            );
        }
        println!(
            "{}: {} route(s) valid",
            config.origin,
            app.routes.iter().count()
        );
        return Ok(());
    }

    let addr = app.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, manifest = %config.origin, "listening");
    trellis::run(Arc::new(app), listener, trellis::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
