//! Command line and manifest: everything `main` needs, read and validated
//! before any port is bound.

use crate::admin::{TOKEN_ENV, Token};
use crate::app::ManifestSource;
use crate::deploy::{Action, AdminCall};
use crate::manifest::Manifest;
use crate::quickstart;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `trellis`: serve HTTP routes from sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the routes of MANIFEST (default: ./trellis.toml, else the
    /// bundled quickstart).
    Serve {
        /// Path to trellis.toml.
        manifest: Option<PathBuf>,
        /// Listen on this address instead of `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve the admin API on this address instead of
        /// `server.admin_listen` (it also needs TRELLIS_ADMIN_TOKEN).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Reload routes when the manifest or a component file changes.
        #[arg(long)]
        watch: bool,
    },
    /// Validate MANIFEST and load every component it names, without serving.
    Check {
        /// Path to trellis.toml.
        manifest: PathBuf,
    },
    /// Upload COMPONENT as the next version of ROUTE to a running host.
    Deploy {
        /// Route name.
        route: String,
        /// The component (.wasm).
        component: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
        /// Route path; required when ROUTE is new.
        #[arg(long)]
        path: Option<String>,
        /// Other route settings, e.g. `--set methods=GET,HEAD --set timeout=2s`
        /// (methods, grants, timeout, memory, max_body, max_concurrency,
        /// queue_timeout).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        settings: Vec<(String, String)>,
    },
    /// Serve ROUTE's previous version again on a running host.
    Rollback {
        /// Route name.
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Base URL of the host's admin API, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    admin: String,
    /// Bearer token (default: env TRELLIS_ADMIN_TOKEN).
    #[arg(long)]
    token: Option<String>,
}

impl AdminArgs {
    fn call(self, action: Action) -> AdminCall {
        AdminCall {
            admin: self.admin,
            token: self.token.or_else(|| std::env::var(TOKEN_ENV).ok()),
            action,
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// What the command line asks for.
pub enum Invocation {
    /// Serve or check a manifest.
    Host(Box<Config>),
    /// Call a running host's admin API.
    Admin(AdminCall),
}

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve until SIGTERM/SIGINT.
    Serve,
    /// Validate and exit.
    Check,
}

/// A validated configuration.
pub struct Config {
    /// Serve or check.
    pub mode: Mode,
    /// The manifest, validated.
    pub manifest: Manifest,
    /// Where it came from.
    pub source: ManifestSource,
    /// Shown in logs: the manifest path or "bundled quickstart".
    pub origin: String,
    /// `serve --watch`: reload what changes on disk.
    pub watch: bool,
    /// The admin API's token (env `TRELLIS_ADMIN_TOKEN`); the API is off
    /// without one.
    pub admin_token: Option<Token>,
}

impl Config {
    /// Reads the command line, the environment and the manifest.
    pub fn load() -> anyhow::Result<Invocation> {
        let cli = Cli::parse();
        let (mode, path, listen, admin_listen, watch) = match cli.command {
            Command::Serve {
                manifest,
                listen,
                admin_listen,
                watch,
            } => (Mode::Serve, manifest, listen, admin_listen, watch),
            Command::Check { manifest } => (Mode::Check, Some(manifest), None, None, false),
            Command::Deploy {
                route,
                component,
                admin,
                path,
                mut settings,
            } => {
                settings.extend(path.map(|p| ("path".to_owned(), p)));
                let action = Action::Deploy {
                    route,
                    component,
                    settings,
                };
                return Ok(Invocation::Admin(admin.call(action)));
            }
            Command::Rollback { route, admin } => {
                return Ok(Invocation::Admin(admin.call(Action::Rollback { route })));
            }
        };
        let default = Path::new("trellis.toml");
        let path = path.or_else(|| default.exists().then(|| default.to_owned()));
        let (mut manifest, source, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading manifest {}", path.display()))?;
                let base = path.parent().unwrap_or(Path::new(".")).to_owned();
                let manifest = Manifest::parse(&text, &path, base)?;
                let origin = path.display().to_string();
                (manifest, ManifestSource::File { text, path }, origin)
            }
            None => {
                let name = Path::new("<bundled quickstart>");
                let manifest = Manifest::parse(quickstart::MANIFEST, name, PathBuf::new())?;
                (
                    manifest,
                    ManifestSource::Bundled,
                    "bundled quickstart".to_owned(),
                )
            }
        };
        if let Some(listen) = listen {
            manifest.server.listen = listen;
        }
        if let Some(addr) = admin_listen {
            manifest.server.admin_listen = Some(addr);
        }
        Ok(Invocation::Host(Box::new(Config {
            mode,
            manifest,
            source,
            origin,
            watch,
            admin_token: std::env::var(TOKEN_ENV)
                .ok()
                .as_deref()
                .and_then(Token::new),
        })))
    }
}
