//! `trellis build`: runs a project's toolchain and leaves its component at
//! `dist/NAME.wasm`, the path its `trellis.toml` routes to.
//!
//! The project's kind is told by its manifest: `Cargo.toml` (Rust: cargo),
//! `package.json` (JavaScript: npm scripts running jco and
//! componentize-js), `pyproject.toml` (Python: componentize-py in a
//! project-local `.venv`). What is missing is installed from the package
//! registries (`rustup target add`, `npm install`, `pip install`), with
//! the tools' own progress on the console; what cannot be installed is
//! named with the command that would install it.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ScaffoldError, new, wit};

const TARGET: &str = "wasm32-wasip2";

/// Builds the project in `dir`; returns the component's path.
pub fn build(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let (name, component) = if dir.join("Cargo.toml").is_file() {
        let name = rust_name(dir)?;
        let built = rust(dir)?;
        let component = dist(dir, &name)?;
        fs::copy(&built, &component).map_err(|e| ScaffoldError::write(&component, e))?;
        (name, component)
    } else if dir.join("package.json").is_file() {
        let name = js_name(dir)?;
        let component = dist(dir, &name)?;
        js(dir)?;
        (name, component)
    } else if dir.join("pyproject.toml").is_file() {
        let name = python_name(dir)?;
        let component = dist(dir, &name)?;
        python(dir, &component)?;
        (name, component)
    } else {
        return Err(ScaffoldError::NotAProject(dir.to_owned()));
    };
    let size = fs::metadata(&component)
        .map_err(|_| ScaffoldError::NoComponent(component.clone()))?
        .len();
    eprintln!(
        "==> built {name}: {} ({:.1} MB)",
        component.display(),
        size as f64 / 1e6
    );
    Ok(component)
}

/// `dir/dist/NAME.wasm`, its directory created.
fn dist(dir: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let dist = dir.join("dist");
    fs::create_dir_all(&dist).map_err(|e| ScaffoldError::write(&dist, e))?;
    Ok(dist.join(format!("{name}.wasm")))
}

/// Announces and runs one step with the console inherited.
fn step(command: &mut Command) -> Result<(), ScaffoldError> {
    let shown = show(command);
    eprintln!("==> {shown}");
    let status = command.status().map_err(|e| ScaffoldError::Step {
        command: shown.clone(),
        status: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ScaffoldError::Step {
            command: shown,
            status: status.to_string(),
        })
    }
}

fn show(command: &Command) -> String {
    let mut shown = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

/// Whether `program --version` runs.
fn runs(program: &str) -> Result<(), String> {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{program} --version` exited with {status}")),
        Err(err) => Err(format!("`{program}`: {err}")),
    }
}

fn read(path: &Path) -> Result<String, ScaffoldError> {
    fs::read_to_string(path).map_err(|e| ScaffoldError::Manifest {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn manifest_error(path: &Path, reason: impl ToString) -> ScaffoldError {
    ScaffoldError::Manifest {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

// --- Rust ---

fn rust_name(dir: &Path) -> Result<String, ScaffoldError> {
    let path = dir.join("Cargo.toml");
    let manifest: toml::Table = read(&path)?.parse().map_err(|e| manifest_error(&path, e))?;
    manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| manifest_error(&path, "no [package] name"))
}

/// `cargo build --release --target wasm32-wasip2`; the built `.wasm`,
/// found in cargo's JSON messages, so `CARGO_TARGET_DIR` is honoured.
fn rust(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    runs("cargo").map_err(|reason| ScaffoldError::Toolchain {
        what: "cargo",
        reason,
        fix: "curl --proto '=https' -sSf https://sh.rustup.rs | sh".to_owned(),
    })?;
    ensure_wasm_target()?;
    let mut command = Command::new("cargo");
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let shown = show(&command);
    eprintln!("==> {shown}");
    let mut child = command.spawn().map_err(|e| ScaffoldError::Step {
        command: shown.clone(),
        status: e.to_string(),
    })?;
    let mut wasm = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        for file in files.filter_map(|f| f.as_str()) {
            if file.ends_with(".wasm") {
                wasm = Some(PathBuf::from(file));
            }
        }
    }
    let status = child.wait().map_err(|e| ScaffoldError::Step {
        command: shown.clone(),
        status: e.to_string(),
    })?;
    if !status.success() {
        return Err(ScaffoldError::Step {
            command: shown,
            status: status.to_string(),
        });
    }
    wasm.ok_or_else(|| ScaffoldError::NoComponent(dir.join("target").join(TARGET)))
}

/// Adds the wasm32-wasip2 standard library when the toolchain lacks it.
fn ensure_wasm_target() -> Result<(), ScaffoldError> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if sysroot.is_some_and(|root| root.join("lib/rustlib").join(TARGET).is_dir()) {
        return Ok(());
    }
    step(Command::new("rustup").args(["target", "add", TARGET])).map_err(|err| {
        ScaffoldError::Toolchain {
            what: "the wasm32-wasip2 target",
            reason: err.to_string(),
            fix: format!("rustup target add {TARGET}"),
        }
    })
}

// --- JavaScript ---

fn js_name(dir: &Path) -> Result<String, ScaffoldError> {
    let path = dir.join("package.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&path)?).map_err(|e| manifest_error(&path, e))?;
    manifest["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| manifest_error(&path, "no \"name\""))
}

/// `npm install` when the toolchain is not in `node_modules`, then the
/// project's `types` (jco guest-types) and `build` (componentize-js)
/// scripts, so `npm run build` alone does the same.
fn js(dir: &Path) -> Result<(), ScaffoldError> {
    let fix = format!("cd {} && npm install", dir.display());
    runs("npm").map_err(|reason| ScaffoldError::Toolchain {
        what: "npm (Node.js 18 or later)",
        reason,
        fix: format!("apt-get install nodejs npm` (or see nodejs.org), then `{fix}"),
    })?;
    let bin = dir.join("node_modules/.bin");
    if !bin.join("componentize-js").exists() || !bin.join("jco").exists() {
        step(
            Command::new("npm")
                .current_dir(dir)
                .args(["install", "--no-audit", "--no-fund"]),
        )
        .map_err(|err| ScaffoldError::Toolchain {
            what: "componentize-js and jco",
            reason: err.to_string(),
            fix: fix.clone(),
        })?;
    }
    step(Command::new("npm").current_dir(dir).args(["run", "types"]))?;
    step(Command::new("npm").current_dir(dir).args(["run", "build"]))
}

// --- Python ---

fn python_name(dir: &Path) -> Result<String, ScaffoldError> {
    let path = dir.join("pyproject.toml");
    let manifest: toml::Table = read(&path)?.parse().map_err(|e| manifest_error(&path, e))?;
    manifest
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| manifest_error(&path, "no [project] name"))
}

/// componentize-py from PyPI in `.venv` (created when missing), then
/// `componentize-py -d wit -w local:plugin/plugin componentize app`.
fn python(dir: &Path, component: &Path) -> Result<(), ScaffoldError> {
    let venv = dir.join(".venv");
    let tool = venv.join("bin/componentize-py");
    let pin = format!("componentize-py=={}", new::COMPONENTIZE_PY);
    let fix = format!(
        "cd {} && python3 -m venv .venv && .venv/bin/pip install {pin}",
        dir.display()
    );
    if !tool.exists() {
        if !venv.join("bin/python").exists() {
            runs("python3").map_err(|reason| ScaffoldError::Toolchain {
                what: "python3 (3.10 or later, with venv)",
                reason,
                fix: format!("apt-get install python3 python3-venv`, then `{fix}"),
            })?;
            step(
                Command::new("python3")
                    .current_dir(dir)
                    .args(["-m", "venv", ".venv"]),
            )
            .map_err(|err| ScaffoldError::Toolchain {
                what: "a Python virtual environment",
                reason: err.to_string(),
                fix: fix.clone(),
            })?;
        }
        step(
            Command::new(venv.join("bin/python"))
                .current_dir(dir)
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .arg(&pin),
        )
        .map_err(|err| ScaffoldError::Toolchain {
            what: "componentize-py",
            reason: err.to_string(),
            fix: fix.clone(),
        })?;
    }
    let out = component.strip_prefix(dir).unwrap_or(component).to_owned();
    step(
        Command::new(&tool)
            .current_dir(dir)
            .args(["-d", "wit", "-w", wit::WORLD, "componentize", "app", "-o"])
            .arg(out),
    )
}
