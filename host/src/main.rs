//! The `trellis` binary: read the configuration, load every component,
//! then serve (or, for `check`, report and exit; for `deploy`/`rollback`,
//! call a running host's admin API; for `new`/`build`/`wit`, work on a
//! plugin project).

use anyhow::Context as _;
use std::sync::Arc;
use trellis::app::App;
use trellis::config::{Config, Invocation, Mode};
use trellis::services::Services;
use trellis::{Listeners, observability};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load()? {
        Invocation::Admin(call) => return Ok(trellis::ops::client::run(call).await?),
        Invocation::Author(command) => return Ok(trellis::scaffold::run(command)?),
        Invocation::Keys(call) => return trellis::ops::keys::run(*call).await,
        Invocation::Push(call) => return Ok(trellis::ops::push::run(*call).await?),
        Invocation::Host(config) => config,
    };
    let _log_guard = observability::telemetry::init(&config.env);
    observability::trace::start_exporter(
        config.env.otlp_endpoint.as_deref(),
        config.env.otlp_ca.as_deref(),
    )
    .context("starting the trace exporter")?;
    let services =
        Arc::new(Services::new(&config.manifest, &config.env).context("starting services")?);
    services
        .registries
        .prefetch(&config.manifest, config.source.text())
        .await
        .with_context(|| format!("pulling the components of {}", config.origin))?;
    let app = Arc::new(
        App::load(&config, services.clone())
            .with_context(|| format!("loading {}", config.origin))?,
    );
    if config.mode == Mode::Check {
        return trellis::ops::report_check(&app, &config.origin).await;
    }
    services
        .database
        .open_if_wanted()
        .await
        .context("opening the database")?;
    services.reach_redis().await;
    // JWKS URLs are fetched before serving; one that is down is logged and
    // retried when tokens arrive (they get 503 until it answers).
    services.auth.warm_up().await;
    let listeners = Listeners::bind(&config).await?;
    trellis::run(app, &config, listeners, trellis::shutdown_signal()).await?;
    services.database.close().await;
    tracing::info!("stopped");
    Ok(())
}
