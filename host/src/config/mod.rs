//! Configuration: the command line, the environment and the manifest,
//! read and fully validated by [`Config::load`] before any port is bound.
//!
//! The bottom layer: calls nothing else in the crate.

pub mod cli;
pub mod cron;
pub mod env;
pub mod manifest;
pub mod quickstart;
pub mod reference;
pub mod units;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Action, AdminCall, Author, Cli, Command, ComponentSource, KeysCall, PushCall};
use env::Env;
use manifest::Manifest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the command line asks for.
pub enum Invocation {
    /// Serve or check a manifest.
    Host(Box<Config>),
    /// Call a running host's admin API.
    Admin(AdminCall),
    /// Make, build or type a plugin project (`new`, `build`, `wit`).
    Author(Author),
    /// Add, list or revoke API keys in the manifest's database.
    Keys(Box<KeysCall>),
    /// Publish a component to an OCI registry.
    Push(Box<PushCall>),
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
    /// What the environment says, read once.
    pub env: Env,
}

impl Config {
    /// Reads the command line, the environment and the manifest.
    pub fn load() -> anyhow::Result<Invocation> {
        let env = Env::read();
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
                wait,
            } => {
                settings.extend(path.map(|p| ("path".to_owned(), p)));
                let component = if reference::Reference::is_oci(&component) {
                    ComponentSource::Oci(
                        reference::Reference::parse(&component).map_err(anyhow::Error::msg)?,
                    )
                } else {
                    ComponentSource::File(PathBuf::from(component))
                };
                let action = Action::Deploy {
                    route,
                    component,
                    settings,
                };
                return Ok(Invocation::Admin(admin.call(action, env.admin_token, wait)));
            }
            Command::Push {
                file,
                reference,
                manifest,
                insecure,
            } => {
                let reference = reference::Reference::parse(&reference)
                    .map_err(|m| anyhow::anyhow!("trellis push: {m}"))?;
                let registries = match &manifest {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("reading manifest {}", path.display()))?;
                        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
                        Manifest::parse(&text, path, base)?.registries
                    }
                    None => Default::default(),
                };
                let cache_dir = env
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("trellis"));
                return Ok(Invocation::Push(Box::new(PushCall {
                    file,
                    reference,
                    registries,
                    insecure,
                    cache_dir,
                })));
            }
            Command::Rollback { route, admin, wait } => {
                let action = Action::Rollback { route };
                return Ok(Invocation::Admin(admin.call(action, env.admin_token, wait)));
            }
            Command::New {
                name,
                lang,
                grants,
                sdk,
            } => {
                return Ok(Invocation::Author(Author::New {
                    name,
                    lang,
                    grants,
                    sdk,
                }));
            }
            Command::Keys { manifest, action } => {
                let text = std::fs::read_to_string(&manifest)
                    .with_context(|| format!("reading manifest {}", manifest.display()))?;
                let base = manifest.parent().unwrap_or(Path::new(".")).to_owned();
                let manifest = Manifest::parse(&text, &manifest, base)?;
                return Ok(Invocation::Keys(Box::new(KeysCall {
                    manifest,
                    database_url: env.database_url,
                    action,
                })));
            }
            Command::Build { dir } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from("."));
                return Ok(Invocation::Author(Author::Build { dir }));
            }
            Command::Wit { grants, dir } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from("wit"));
                return Ok(Invocation::Author(Author::Wit { grants, dir }));
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
        if let Some(size) = &env.cache_dir_max_size {
            manifest.server.cache_dir_max_size = cache_dir_max_size(size)?;
        }
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
            admin_token: env.admin_token.as_deref().and_then(Token::new),
            env,
        })))
    }
}

/// `TRELLIS_CACHE_DIR_MAX_SIZE` as written: a size (`"2GiB"`, `1048576`)
/// checked like `[server] cache_dir_max_size`; the error names the
/// variable.
fn cache_dir_max_size(value: &str) -> anyhow::Result<units::ByteSize> {
    let size: units::ByteSize = value
        .parse()
        .map_err(|m| anyhow::anyhow!("{}: {m}", env::CACHE_DIR_MAX_SIZE))?;
    manifest::check_cache_dir_max_size(size)
        .map_err(|m| anyhow::anyhow!("{}: {m}", env::CACHE_DIR_MAX_SIZE))?;
    Ok(size)
}

/// Where the manifest came from.
#[derive(Clone)]
pub enum ManifestSource {
    /// A file the operator wrote; its text is kept for line numbers.
    File {
        /// The manifest's text.
        text: String,
        /// Its path, watched by `serve --watch`.
        path: PathBuf,
    },
    /// The quickstart compiled into the binary.
    Bundled,
}

impl ManifestSource {
    /// The manifest's text, for line numbers in errors.
    pub fn text(&self) -> Option<&str> {
        match self {
            ManifestSource::File { text, .. } => Some(text),
            ManifestSource::Bundled => Some(quickstart::MANIFEST),
        }
    }
}

/// The admin API's bearer token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// A token; `None` for an empty one, which would protect nothing.
    pub fn new(secret: &str) -> Option<Token> {
        (!secret.is_empty()).then(|| Token(secret.as_bytes().into()))
    }

    /// Whether `given` is the token, in time independent of where they
    /// differ (a length mismatch is rejected outright: the length is not
    /// the secret).
    pub fn matches(&self, given: &[u8]) -> bool {
        if given.len() != self.0.len() {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
        diff == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_size_variable_is_checked_like_the_manifest_key() {
        assert_eq!(cache_dir_max_size("2GiB").unwrap().0, 2 << 30);
        assert_eq!(cache_dir_max_size("1048576").unwrap().0, 1 << 20);
        for (value, want) in [
            ("lots", "TRELLIS_CACHE_DIR_MAX_SIZE: invalid size \"lots\""),
            (
                "10KiB",
                "TRELLIS_CACHE_DIR_MAX_SIZE: 10KiB is too small: at least 1MiB",
            ),
        ] {
            let err = cache_dir_max_size(value).unwrap_err().to_string();
            assert!(err.contains(want), "{value:?}: {err}");
        }
    }
}
