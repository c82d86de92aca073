//! Command line and manifest: everything `main` needs, read and validated
//! before any port is bound.

use crate::app::ManifestSource;
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
    },
    /// Validate MANIFEST and load every component it names, without serving.
    Check {
        /// Path to trellis.toml.
        manifest: PathBuf,
    },
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
}

impl Config {
    /// Reads the command line and the manifest.
    pub fn load() -> anyhow::Result<Config> {
        let cli = Cli::parse();
        let (mode, path, listen) = match cli.command {
            Command::Serve { manifest, listen } => (Mode::Serve, manifest, listen),
            Command::Check { manifest } => (Mode::Check, Some(manifest), None),
        };
        let default = Path::new("trellis.toml");
        let path = path.or_else(|| default.exists().then(|| default.to_owned()));
        let (mut manifest, source, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading manifest {}", path.display()))?;
                let base = path.parent().unwrap_or(Path::new(".")).to_owned();
                let manifest = Manifest::parse(&text, &path, base)?;
                (
                    manifest,
                    ManifestSource::File { text },
                    path.display().to_string(),
                )
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
        Ok(Config {
            mode,
            manifest,
            source,
            origin,
        })
    }
}
