//! Builds the guest components (`plugins/*`, `tests/plugins/*`) for
//! `wasm32-wasip2`, so `cargo build`/`cargo test` of the host always runs
//! against components built from the current sources.
//!
//! For each guest it emits `<NAME>_COMPONENT=<path to .wasm>` to the host's
//! compile environment, and writes `$OUT_DIR/components.rs` with a
//! `foreach_plugin!` macro listing them, so tests can insist that every
//! plugin has a test (STYLE.md item 17).
//!
//! The nested cargo uses its own target dir: the outer build holds the lock
//! on the usual one for as long as this script runs.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Directories whose children are guest crates.
const GUEST_DIRS: &[&str] = &["plugins", "tests/plugins"];

/// Variables that carry the outer build's settings (host flags, wrappers,
/// profile overrides, jobserver) and would be wrong, or break, for the nested
/// wasm build.
const LEAKY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in [
        "plugins",
        "tests/plugins",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let guests = find_guests(workspace);
    ensure_target();
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir).join("guests"), // `join` keeps absolute paths as they are.
        None => workspace.join("target/guests"),
    };
    build(workspace, &target_dir, &guests);

    let mut macro_body = String::new();
    for name in &guests {
        let ident = name.replace('-', "_");
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{ident}.wasm"));
        assert!(
            wasm.is_file(),
            "guest `{name}` built but {} is missing",
            wasm.display()
        );
        println!(
            "cargo:rustc-env={}_COMPONENT={}",
            ident.to_uppercase(),
            wasm.display()
        );
        writeln!(macro_body, "        $mac!({ident});").expect("writing to a String");
    }
    let generated = format!(
        "/// Calls `$mac!(name)` once per guest component built by `host/build.rs`.\n\
         #[allow(unused_macros, reason = \"not every test target iterates the plugins\")]\n\
         macro_rules! foreach_plugin {{\n    ($mac:ident) => {{\n{macro_body}    }};\n}}\n"
    );
    fs::write(out_dir.join("components.rs"), generated).expect("writing components.rs");
}

/// Package names of the guest crates, sorted so the output is stable.
fn find_guests(workspace: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in GUEST_DIRS {
        let Ok(entries) = fs::read_dir(workspace.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("reading a guest directory").path();
            let manifest = path.join("Cargo.toml");
            if path.file_name().is_some_and(|n| n == "sdk") || !manifest.is_file() {
                continue; // The SDK is a library for guests, not a guest.
            }
            let text = fs::read_to_string(&manifest).expect("reading a guest Cargo.toml");
            let name = package_name(&text)
                .unwrap_or_else(|| panic!("no [package] name in {}", manifest.display()));
            names.push(name);
        }
    }
    names.sort();
    names
}

/// The `name` of the `[package]` table. A line scan suffices for our own
/// manifests and keeps `toml` out of the build dependencies.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(rest) = line.strip_prefix("name").filter(|_| in_package) {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// Installs the `wasm32-wasip2` standard library when the toolchain lacks
/// it. `rust-toolchain.toml` lists the target, but rustup adds listed
/// targets only when it installs the toolchain itself: a toolchain that was
/// already there (or `RUSTUP_AUTO_INSTALL=0`) leaves it out, and the guest
/// build would fail with "can't find crate for `core`".
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let Some(sysroot) = sysroot else {
        return; // The guest build reports what is wrong with the toolchain.
    };
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return;
    }
    // `RUSTUP_TOOLCHAIN`, set by rustup's proxy, makes this the toolchain
    // the build runs on.
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    // Two builds adding it at once (a test build beside a bench build) race
    // on rustup's download directory: the loser fails although the target
    // is then there.
    let installed = sysroot.join("lib/rustlib").join(TARGET).is_dir();
    if !installed && !matches!(added, Ok(status) if status.success()) {
        panic!(
            "the {TARGET} target is not installed for {} and `rustup target add {TARGET}` \
             failed ({added:?}); install the target, then build again",
            sysroot.display()
        );
    }
}

/// One `cargo build` for all guests, with the outer build's settings removed.
fn build(workspace: &Path, target_dir: &Path, guests: &[String]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        // Guests ship without DWARF: components are 30x smaller and load
        // faster. The name section stays, so trap backtraces keep names.
        .args(["--config", "profile.release.debug=false"])
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        // The host's link-time optimization is for the host: guests are
        // small, and the tests build all of them.
        .args(["--config", "profile.release.lto=false"])
        .args(["--config", "profile.release.codegen-units=16"]);
    for name in guests {
        cmd.args(["-p", name]);
    }
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    for (var, _) in env::vars_os() {
        if var
            .to_str()
            .is_some_and(|v| v.starts_with("CARGO_PROFILE_"))
        {
            cmd.env_remove(var);
        }
    }

    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("running {cmd:?}: {err}"));
    if !output.status.success() {
        panic!(
            "building the guest components failed ({}):\n{cmd:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}
