//! Running the host: the public listener, the admin listener, watch mode
//! and (with shared deployments) following the fleet's store, started
//! together and stopped together.
//!
//! On shutdown the public server stops accepting and readiness turns 503;
//! both servers give requests in flight `server.shutdown_grace`, workers
//! stop claiming jobs and give theirs the same grace, and the watch task
//! stops.

use crate::app::App;
use crate::config::Config;
use crate::http::server;
use crate::ops::deployments::Deployments;
use crate::ops::fleet::Fleet;
use crate::ops::{admin, endpoints, watch};
use futures::FutureExt as _;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The sockets the host serves, bound before [`run`] so that a port in
/// use fails startup, not serving.
pub struct Listeners {
    /// The public HTTP listener.
    pub public: TcpListener,
    /// The admin API's listener, when the API is on.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and, when the admin API is on (an address and
    /// a token), `server.admin_listen`.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        use anyhow::Context as _;
        let addr = config.manifest.server.listen;
        let public = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let admin = admin::bind(
            config.manifest.server.admin_listen,
            config.admin_token.as_ref(),
        )
        .await
        .context("binding the admin listener")?;
        Ok(Listeners { public, admin })
    }
}

/// Serves `app` on `listeners` (and, with `--watch`, reloads what changes
/// on disk; with `[deployments] shared`, follows the fleet's store) until
/// `shutdown` resolves and the servers have drained.
pub async fn run(
    app: Arc<App>,
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let fleet = config
        .manifest
        .deployments
        .shared
        .then(|| Arc::new(Fleet::new(config, app.services.database.clone())));
    let deployments = Arc::new(Deployments::with_fleet(app.clone(), fleet.clone()));
    let addr = listeners.public.local_addr()?;
    // The fleet's versions are loaded before the first request is taken:
    // connections wait in the listen backlog meanwhile.
    let following = match &fleet {
        Some(fleet) => {
            let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
            fleet
                .start(deployments.clone(), addr, admin_addr)
                .await
                .map_err(|e| std::io::Error::other(format!("shared deployments: {e:#}")))?
        }
        None => Vec::new(),
    };
    // What the loaded versions need is pinned now (the fleet's included):
    // the rest of the cache directory may be pruned, off the request path;
    // again after every change to what is loaded, and every hour for what
    // a version still in use at its change released later.
    let pruning = tokio::spawn(crate::services::disk_cache::prune_periodically(
        app.services.disk_cache.clone(),
    ));
    tracing::info!(addr = %addr, manifest = %config.origin, "listening");
    let watching = config
        .watch
        .then(|| watch::spawn(deployments.clone(), config))
        .flatten();
    let admin = match (listeners.admin, config.admin_token.clone()) {
        (Some(listener), Some(token)) => {
            let grace = app.server.shutdown_grace.0;
            let stop = shutdown.clone();
            let serve = admin::serve(deployments, listener, token, stop.clone());
            Some(tokio::spawn(async move {
                tokio::select! {
                    result = serve => result,
                    () = async { stop.await; tokio::time::sleep(grace).await } => Ok(()),
                }
            }))
        }
        _ => None,
    };
    let background = crate::jobs::Background::start(app.clone()).await;
    let grace = app.server.shutdown_grace.0;
    let host = endpoints::router(app.clone());
    let stop_jobs = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Workers stop claiming as soon as shutdown begins, and get
            // the same grace as requests in flight.
            shutdown.await;
            background.stop(grace).await;
        })
    };
    let served = server::serve(app, host, listeners.public, shutdown).await;
    if let Err(err) = stop_jobs.await {
        tracing::warn!(cause = %err, "the jobs' shutdown task failed");
    }
    if let Some(task) = watching {
        task.abort();
    }
    pruning.abort();
    for task in following {
        task.abort();
    }
    if let Some(fleet) = &fleet {
        fleet.leave().await;
    }
    if let Some(admin) = admin {
        match admin.await {
            Ok(Err(err)) => tracing::warn!(cause = %err, "admin server stopped with an error"),
            Err(err) => tracing::warn!(cause = %err, "admin server task failed"),
            Ok(Ok(())) => {}
        }
    }
    served
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
