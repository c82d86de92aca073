//! Plugin authoring: `trellis new` makes a project, `trellis build` runs
//! its language's toolchain, `trellis wit` writes the world it builds
//! against. None of it starts the host.
//!
//! Beside the layers: it calls only [`crate::config`] (the command line)
//! and nothing calls it but `main`.

pub mod build;
pub mod new;
mod template;
pub mod wit;

use std::path::{Path, PathBuf};

use crate::config::cli::Author;

/// Why a `new`, `build` or `wit` failed; each names the stage and, where
/// the user can fix it, the command to run.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// A grant that is not a `trellis:api` interface.
    #[error(
        "unknown grant {0:?}: the capabilities are sql, config, log, rate-limit, cache and metrics"
    )]
    UnknownGrant(String),
    /// The project name cannot name a crate, an npm package and a file.
    #[error(
        "invalid project name {0:?}: use lower-case letters, digits and `-`, starting with a letter"
    )]
    InvalidName(String),
    /// `trellis new` would overwrite something.
    #[error("{0} already exists and is not empty; pick another name or remove it")]
    Exists(PathBuf),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No trellis-sdk to point a Rust project at.
    #[error(
        "no trellis-sdk crate at {0}: it is not on crates.io, so pass `--sdk PATH` to a Trellis checkout's plugins/sdk"
    )]
    NoSdk(PathBuf),
    /// `trellis build` found no project.
    #[error(
        "{0} is not a plugin project: it has no Cargo.toml, package.json or pyproject.toml (make one with `trellis new NAME --lang rust|js|python`)"
    )]
    NotAProject(PathBuf),
    /// The project's manifest could not be read.
    #[error("reading {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A toolchain is missing and could not be installed.
    #[error(
        "{what} is not available ({reason}); install it with `{fix}`, then run `trellis build` again"
    )]
    Toolchain {
        /// What is missing.
        what: &'static str,
        /// Why it could not be found or installed.
        reason: String,
        /// The command that installs it.
        fix: String,
    },
    /// A build step failed; its output is above on the console.
    #[error("`{command}` failed ({status}); its output is above")]
    Step {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
    },
    /// The build ran but left no component.
    #[error("the build finished but {0} is missing")]
    NoComponent(PathBuf),
}

impl ScaffoldError {
    pub(crate) fn write(path: &Path, source: std::io::Error) -> ScaffoldError {
        ScaffoldError::Write {
            path: path.to_owned(),
            source,
        }
    }
}

/// Runs one author command, reporting on the console.
pub fn run(command: Author) -> Result<(), ScaffoldError> {
    match command {
        Author::New {
            name,
            lang,
            grants,
            sdk,
        } => {
            let dir = new::create(Path::new("."), &name, lang, &grants, sdk)?;
            println!("created {}", dir.display());
            println!(
                "next: cd {} && trellis build && trellis serve",
                dir.display()
            );
        }
        Author::Build { dir } => {
            let component = build::build(&dir)?;
            println!("{}", component.display());
        }
        Author::Wit { grants, dir } => {
            let grants = wit::check_grants(&grants)?;
            wit::write(&dir, &grants)?;
            println!(
                "wrote {} (world {}: wasi:http/proxy@{}{})",
                dir.display(),
                wit::WORLD,
                wit::WASI_VERSION,
                grants.iter().map(|g| format!(" + {g}")).collect::<String>()
            );
            // The project the world belongs to: the folder holding it.
            let root = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            if let Some(helper) = new::write_helper(root, &grants)? {
                println!("wrote {}", helper.display());
            }
        }
    }
    Ok(())
}
