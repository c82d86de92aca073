//! The `trellis` binary: read the configuration, load every component,
//! then serve (or, for `check`, report and exit; for `deploy`/`rollback`,
//! call a running host's admin API).

use anyhow::Context as _;
use std::sync::Arc;
use trellis::app::App;
use trellis::capabilities::Services;
use trellis::config::{Config, Invocation, Mode};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log_guard = trellis::telemetry::init();
    let config = match Config::load()? {
        Invocation::Admin(call) => return Ok(trellis::deploy::run(call).await?),
        Invocation::Host(config) => config,
    };
    trellis::trace::start_exporter().context("starting the trace exporter")?;
    let services = Arc::new(Services::new(&config.manifest).context("starting services")?);
    let app = App::load(&config.manifest, &config.source, services.clone())
        .with_context(|| format!("loading {}", config.origin))?;
    let app = Arc::new(app);

    if config.mode == Mode::Check {
        let routes = app.routes.load();
        for route in routes.iter() {
            let label = route.label.to_str().unwrap_or_default();
            println!("ok  {} -> {label}", route.name);
        }
        println!(
            "{}: {} route(s) valid",
            config.origin,
            routes.iter().count()
        );
        return Ok(());
    }

    services
        .database
        .open_if_wanted()
        .await
        .context("opening the database")?;
    let addr = app.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let admin = trellis::admin::bind(app.server.admin_listen, config.admin_token.as_ref())
        .await
        .context("binding the admin listener")?;
    if let (Some(admin), Some(token)) = (admin, config.admin_token.clone()) {
        let serve = trellis::admin::serve(app.clone(), admin, token, std::future::pending());
        tokio::spawn(serve);
    }
    if config.watch {
        trellis::watch::spawn(app.clone(), &config);
    }
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, manifest = %config.origin, "listening");
    trellis::run(app, listener, trellis::shutdown_signal()).await?;
    services.database.close().await;
    tracing::info!("stopped");
    Ok(())
}
