//! The command line: `serve`, `check`, `deploy` and `rollback`, the
//! admin-API calls the last two describe, `keys` (API keys in the
//! manifest's database), and the plugin author's `new`, `build` and `wit`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `trellis`: serve HTTP routes from sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Upload COMPONENT as the next version of ROUTE to a running host,
    /// or have the host pull it from a registry (oci://…).
    Deploy {
        /// Route name.
        route: String,
        /// The component: a .wasm file, or
        /// oci://HOST[:PORT]/NAMESPACE/NAME:TAG (or @sha256:…), which the
        /// host pulls and pins to its digest.
        component: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Route path; required when ROUTE is new.
        #[arg(long)]
        path: Option<String>,
        /// Other route settings, e.g. `--set methods=GET,HEAD --set timeout=2s`
        /// (any admin query parameter: methods, grants, the limits,
        /// rate_limit, auth, cache_ttl, config.KEY, secret.KEY=NAME, ...).
        /// `schema_body`, `schema_query` and `cors` take `@FILE` to send a
        /// file's contents.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        settings: Vec<(String, String)>,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Publish the component FILE to an OCI registry as REFERENCE
    /// (oci://HOST[:PORT]/NAMESPACE/NAME:TAG), in the wasm OCI artifact
    /// layout; prints the manifest digest.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where to: oci://HOST[:PORT]/NAMESPACE/NAME:TAG.
        reference: String,
        /// Take the registry's credentials (and `insecure`) from this
        /// manifest's `[registries]`.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Plain HTTP: only for a registry on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Serve ROUTE's previous version again on a running host.
    Rollback {
        /// Route name.
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Manage the API keys of a `store = "database"` api-key policy, in
    /// the manifest's database (TRELLIS_DATABASE_URL wins, as for serve).
    Keys {
        /// Path to trellis.toml.
        #[arg(long, global = true, default_value = "trellis.toml")]
        manifest: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Create a plugin project in ./NAME: a handler answering `GET /`, the
    /// world it builds against, a trellis.toml serving it and a README.
    New {
        /// Project name: lower-case letters, digits and `-`.
        name: String,
        /// The language of the handler.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Capabilities the handler uses and its route grants, e.g.
        /// `sql,log` (sql, config, log, rate-limit, cache, metrics).
        #[arg(long, value_delimiter = ',')]
        grants: Vec<String>,
        /// Rust: the trellis-sdk crate to depend on (default: the SDK in
        /// the Trellis checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin project in DIR (default: .) with its language's
    /// toolchain, installing it when missing; prints the component's path.
    Build {
        /// The project directory.
        dir: Option<PathBuf>,
    },
    /// Write the WIT a handler builds against to DIR (default: ./wit): a
    /// world importing the wasi:http proxy world and just the granted
    /// capabilities, with every package it needs in DIR/deps.
    Wit {
        /// Capabilities the world imports, e.g. `sql,log`.
        #[arg(long, value_delimiter = ',')]
        grants: Vec<String>,
        /// Where to write it.
        dir: Option<PathBuf>,
    },
}

/// What `trellis keys` does.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Make a new random key for POLICY, store its SHA-256 and print the
    /// key (once: it cannot be shown again).
    Add {
        /// The api-key policy (`[auth.POLICY]` with `store = "database"`).
        policy: String,
        /// A label for the key (default `key-` and 8 hex digits of its
        /// digest); unique within the policy.
        #[arg(long)]
        name: Option<String>,
    },
    /// List POLICY's keys: name, digest prefix, created, revoked.
    List {
        /// The api-key policy.
        policy: String,
    },
    /// Revoke one of POLICY's keys, by name or by digest prefix (at least
    /// 6 hex digits).
    Revoke {
        /// The api-key policy.
        policy: String,
        /// The key's name, or the start of its digest.
        key: String,
    },
}

/// A `trellis keys` command with the manifest it works against.
pub struct KeysCall {
    /// The manifest, validated.
    pub manifest: super::manifest::Manifest,
    /// `TRELLIS_DATABASE_URL`, which wins over `[database] url`.
    pub database_url: Option<String>,
    /// What to do.
    pub action: KeysAction,
}

/// The languages `trellis new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with trellis-sdk, built by cargo.
    Rust,
    /// JavaScript, built by componentize-js.
    #[value(alias = "javascript")]
    Js,
    /// Python, built by componentize-py.
    #[value(alias = "py")]
    Python,
}

/// What a plugin author asked for: runs apart from the host.
#[derive(Debug)]
pub enum Author {
    /// `trellis new`.
    New {
        /// Project name and directory.
        name: String,
        /// Its language.
        lang: Lang,
        /// The capabilities it uses.
        grants: Vec<String>,
        /// `--sdk`.
        sdk: Option<PathBuf>,
    },
    /// `trellis build`.
    Build {
        /// The project directory.
        dir: PathBuf,
    },
    /// `trellis wit`.
    Wit {
        /// The capabilities the world imports.
        grants: Vec<String>,
        /// Where to write it.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// Base URL of the host's admin API, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    pub(crate) admin: String,
    /// Bearer token (default: env TRELLIS_ADMIN_TOKEN).
    #[arg(long)]
    pub(crate) token: Option<String>,
}

/// `--wait [DURATION]`.
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArg {
    /// With shared deployments: return only once every live host serves
    /// the new version (GET /admin/fleet), or fail after DURATION naming
    /// the hosts that do not (default 60s).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "60s")]
    pub(crate) wait: Option<crate::config::units::Duration>,
}

impl AdminArgs {
    /// The call, with `env_token` (`TRELLIS_ADMIN_TOKEN`) when `--token`
    /// is not given.
    pub(crate) fn call(
        self,
        action: Action,
        env_token: Option<String>,
        wait: WaitArg,
    ) -> AdminCall {
        AdminCall {
            admin: self.admin,
            token: self.token.or(env_token),
            action,
            wait: wait.wait.map(|d| d.0),
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    // Documents are kept in files; these settings take one as `@FILE`.
    if let Some(file) = value.strip_prefix('@')
        && matches!(key, "schema_body" | "schema_query" | "cors")
    {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{key}: {file}: {e}"))?;
        return Ok((key.to_owned(), text));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// One call to the admin API.
#[derive(Debug)]
pub struct AdminCall {
    /// Base URL of the admin listener, e.g. `http://127.0.0.1:9090`.
    pub admin: String,
    /// Bearer token (`--token` or `TRELLIS_ADMIN_TOKEN`).
    pub token: Option<String>,
    /// What to do.
    pub action: Action,
    /// `--wait`: how long to wait for every live host of the fleet to
    /// serve the result.
    pub wait: Option<std::time::Duration>,
}

/// What an [`AdminCall`] asks for.
#[derive(Debug)]
pub enum Action {
    /// Upload `component` as the next version of `route`.
    Deploy {
        /// Route name.
        route: String,
        /// The `.wasm` file, or the registry reference the host pulls.
        component: ComponentSource,
        /// Route settings (`path`, `methods`, `timeout`...) as query
        /// parameters.
        settings: Vec<(String, String)>,
    },
    /// Serve `route`'s previous version again.
    Rollback {
        /// Route name.
        route: String,
    },
}

/// Where a deployed component comes from.
#[derive(Debug, Clone)]
pub enum ComponentSource {
    /// A file the client uploads.
    File(PathBuf),
    /// A registry reference the host pulls (`oci://…`).
    Oci(crate::config::reference::Reference),
}

/// `trellis push FILE REFERENCE`.
#[derive(Debug)]
pub struct PushCall {
    /// The component file.
    pub file: PathBuf,
    /// Where it goes (names a tag).
    pub reference: crate::config::reference::Reference,
    /// `[registries]` from `--manifest`, validated.
    pub registries:
        std::collections::BTreeMap<String, toml::Spanned<crate::config::manifest::RegistryEntry>>,
    /// `--insecure`.
    pub insecure: bool,
    /// Where pulled blobs are cached (unused by a push, but the client
    /// shares its setup with pulls).
    pub cache_dir: PathBuf,
}
