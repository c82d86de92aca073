//! `trellis wit`: the WIT a handler builds against, written into a project.
//!
//! The files are the repository's `wit/` compiled into the binary, so a
//! project made anywhere gets the exact interfaces this host implements.
//! Layout (what wit-parser, jco, componentize-js and componentize-py read):
//!
//! ```text
//! DIR/world.wit               package local:plugin; world plugin { ... }
//! DIR/deps/trellis-api/*.wit  trellis:api@0.1.0
//! DIR/deps/{cli,clocks,...}/  the WASI 0.2.10 packages
//! ```

use std::fs;
use std::path::Path;

use super::ScaffoldError;

/// The capabilities a scaffold's world can import: the `trellis:api`
/// interfaces, in the order worlds list them. `identity` is left out: it
/// needs an `[auth]` policy, which a scaffold cannot choose (its world is
/// `trellis:api/with-identity` for authors who add one).
pub const GRANTS: &[&str] = &[
    "sql",
    "config",
    "log",
    "rate-limit",
    "cache",
    "metrics",
    "queue",
];

/// The world's fully qualified name, for `-w` / `--world-name`.
pub const WORLD: &str = "local:plugin/plugin";

/// The WASI version the authors' world names: the newest StarlingMonkey
/// (componentize-js, jco) builds against. The host accepts any 0.2.x.
pub const WASI_VERSION: &str = "0.2.10";

include!("wit_files.rs");

/// `grants` checked against [`GRANTS`], deduplicated, in [`GRANTS`] order.
pub fn check_grants(grants: &[String]) -> Result<Vec<&'static str>, ScaffoldError> {
    for grant in grants {
        if !GRANTS.contains(&grant.as_str()) {
            return Err(ScaffoldError::UnknownGrant(grant.clone()));
        }
    }
    Ok(GRANTS
        .iter()
        .copied()
        .filter(|g| grants.iter().any(|asked| asked == g))
        .collect())
}

/// The text of `world.wit` for `grants` (checked).
pub fn world(grants: &[&str]) -> String {
    let mut text = String::from(
        "/// The world this handler builds against: the standard wasi:http proxy\n\
         /// world plus the trellis:api capabilities its route grants. Written by\n\
         /// `trellis wit`; run it again with other `--grants` to change them.\n\
         package local:plugin;\n\nworld plugin {\n",
    );
    text.push_str(&format!("    include wasi:http/proxy@{WASI_VERSION};\n"));
    for grant in grants {
        text.push_str(&format!("    include trellis:api/with-{grant}@0.1.0;\n"));
    }
    text.push_str("}\n");
    text
}

/// Writes the world for `grants` and every package it needs into `dir`,
/// replacing what an earlier run wrote there.
pub fn write(dir: &Path, grants: &[&str]) -> Result<(), ScaffoldError> {
    let deps = dir.join("deps");
    let trellis = deps.join("trellis-api");
    let put = |path: &Path, text: &str| {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| ScaffoldError::write(parent, e))?;
        }
        fs::write(path, text).map_err(|e| ScaffoldError::write(path, e))
    };
    for (name, text) in TRELLIS_API {
        put(&trellis.join(name), text)?;
    }
    for (name, text) in WASI {
        put(&deps.join(name), text)?;
    }
    put(&dir.join("world.wit"), &world(grants))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Every `.wit` file under `wit/` is compiled in, so none is missing
    /// from what `trellis wit` writes.
    #[test]
    fn every_wit_file_is_embedded() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk = Vec::new();
        let mut visit = vec![root.clone()];
        while let Some(dir) = visit.pop() {
            for entry in fs::read_dir(&dir).expect("reading wit/") {
                let path = entry.expect("a wit/ entry").path();
                if path.is_dir() {
                    visit.push(path);
                } else if path.extension().is_some_and(|e| e == "wit") {
                    let rel = path.strip_prefix(&root).expect("under wit/");
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut embedded: Vec<String> = TRELLIS_API
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .chain(WASI.iter().map(|(n, _)| format!("deps/{n}")))
            .collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn unknown_grants_are_refused_and_known_ones_ordered() {
        let asked = ["log".to_owned(), "sql".to_owned(), "log".to_owned()];
        assert_eq!(check_grants(&asked).unwrap(), ["sql", "log"]);
        let err = check_grants(&["kv".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("\"kv\""), "{err}");
        assert!(err.to_string().contains("rate-limit"), "{err}");
    }

    /// The written package resolves, for no grant, one grant and all of
    /// them, and the world imports exactly the granted capabilities.
    #[test]
    fn written_worlds_resolve_with_just_their_grants() {
        let cases: [&[&str]; 3] = [&[], &["sql", "log"], GRANTS];
        for grants in cases {
            let dir = std::env::temp_dir().join(format!(
                "trellis-wit-test-{}-{}",
                std::process::id(),
                grants.len()
            ));
            let _ = fs::remove_dir_all(&dir);
            write(&dir, grants).expect("writing the wit dir");
            let mut resolve = wit_parser::Resolve::default();
            let (package, _) = resolve.push_dir(&dir).expect("the written WIT resolves");
            let world = resolve
                .select_world(&[package], Some("plugin"))
                .expect("world plugin");
            let imports: Vec<String> = resolve.worlds[world]
                .imports
                .keys()
                .map(|key| resolve.name_world_key(key))
                .filter(|name| name.starts_with("trellis:api/"))
                .collect();
            let expected: Vec<String> = grants
                .iter()
                .map(|g| format!("trellis:api/{g}@0.1.0"))
                .collect();
            assert_eq!(imports, expected);
            let exports: Vec<String> = resolve.worlds[world]
                .exports
                .keys()
                .map(|key| resolve.name_world_key(key))
                .collect();
            assert_eq!(
                exports,
                [format!("wasi:http/incoming-handler@{WASI_VERSION}")]
            );
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
