//! `trellis new NAME --lang rust|js|python [--grants ...]`: a plugin
//! project whose handler answers `GET /` using the granted capabilities,
//! with the world it builds against, a `trellis.toml` and a README.

use std::fs;
use std::path::{Path, PathBuf};

use super::template::render;
use super::{ScaffoldError, wit};
use crate::config::cli::Lang;

/// Toolchain versions the projects pin: the ones `trellis build` and the
/// tests run, so a new project builds the same next month.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// `jco`, for `jco guest-types`.
pub const JCO: &str = "1.35.0";
/// TypeScript, for `tsc --noEmit` over the sources and declarations.
pub const TYPESCRIPT: &str = "~5.9.3";
/// componentize-py from PyPI.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The SDK in the checkout this binary was built from.
const CHECKOUT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// One file of a project: where it goes and its template.
type File = (&'static str, &'static str);

const COMMON: &[File] = &[
    ("trellis.toml", include_str!("templates/trellis.toml")),
    ("README.md", include_str!("templates/README.md")),
    (".gitignore", include_str!("templates/gitignore")),
];

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/lib.rs")),
];

/// The helper modules over the raw bindings. `trellis wit` rewrites them
/// with the world, as the JavaScript one may import only what it names.
const JS_HELPER: File = ("src/trellis.js", include_str!("templates/js/trellis.js"));
const PYTHON_HELPER: File = ("trellis.py", include_str!("templates/python/trellis.py"));

const JS: &[File] = &[
    ("package.json", include_str!("templates/js/package.json")),
    ("tsconfig.json", include_str!("templates/js/tsconfig.json")),
    ("src/index.js", include_str!("templates/js/index.js")),
    JS_HELPER,
    (
        "scripts/jco-preopen.mjs",
        include_str!("templates/js/jco-preopen.mjs"),
    ),
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("templates/python/app.py")),
    PYTHON_HELPER,
    (
        "pyproject.toml",
        include_str!("templates/python/pyproject.toml"),
    ),
];

/// Creates the project `name` under `parent`; returns its directory.
pub fn create(
    parent: &Path,
    name: &str,
    lang: Lang,
    grants: &[String],
    sdk: Option<PathBuf>,
) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let grants = wit::check_grants(grants)?;
    let dir = parent.join(name);
    if fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }

    let (lang_key, lang_name, files) = match lang {
        Lang::Rust => ("lang-rust", "Rust", RUST),
        Lang::Js => ("lang-js", "JavaScript", JS),
        Lang::Python => ("lang-python", "Python", PYTHON),
    };
    let sdk_dependency = match lang {
        Lang::Rust => sdk_dependency(sdk, grants.contains(&"log"))?,
        Lang::Js | Lang::Python => String::new(),
    };
    let mut enabled = grants.clone();
    enabled.push(lang_key);
    if lang != Lang::Rust {
        enabled.push("lang-wit");
    }
    let grants_list = if grants.is_empty() {
        "none".to_owned()
    } else {
        grants.join(", ")
    };
    let grants_flag = if grants.is_empty() {
        String::new()
    } else {
        format!(" --grants {}", grants.join(","))
    };
    let grants_toml = grants
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let example = if grants.contains(&"cache") {
        grants.join(",")
    } else {
        grants
            .iter()
            .copied()
            .chain(["cache"])
            .collect::<Vec<_>>()
            .join(",")
    };
    let lang_flag = format!("{lang:?}").to_lowercase();
    let vars = [
        ("name", name),
        ("lang", lang_flag.as_str()),
        ("lang_name", lang_name),
        ("grants_list", grants_list.as_str()),
        ("grants_flag", grants_flag.as_str()),
        ("grants_toml", grants_toml.as_str()),
        ("grants_csv_example", example.as_str()),
        ("sdk_dependency", sdk_dependency.as_str()),
        ("componentize_js_version", COMPONENTIZE_JS),
        ("jco_version", JCO),
        ("typescript_version", TYPESCRIPT),
        ("componentize_py_version", COMPONENTIZE_PY),
    ];
    for (path, template) in COMMON.iter().chain(files) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| ScaffoldError::write(parent, e))?;
        }
        fs::write(&target, render(template, &enabled, &vars))
            .map_err(|e| ScaffoldError::write(&target, e))?;
    }
    if lang != Lang::Rust {
        // The Rust SDK carries its own bindings; the others build from WIT.
        wit::write(&dir.join("wit"), &grants)?;
    }
    Ok(dir)
}

/// Rewrites the helper module of the JavaScript (`package.json`) or
/// Python (`pyproject.toml`) project at `root` for `grants`; the file it
/// wrote, or `None` in a project of neither kind.
pub fn write_helper(root: &Path, grants: &[&str]) -> Result<Option<PathBuf>, ScaffoldError> {
    let (path, template) = if root.join("package.json").is_file() {
        JS_HELPER
    } else if root.join("pyproject.toml").is_file() {
        PYTHON_HELPER
    } else {
        return Ok(None);
    };
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| ScaffoldError::write(parent, e))?;
    }
    fs::write(&target, render(template, grants, &[]))
        .map_err(|e| ScaffoldError::write(&target, e))?;
    Ok(Some(target))
}

/// Lower-case letters, digits and `-`, starting with a letter: valid as a
/// crate, an npm package, a Python distribution and a file name.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_owned()))
    }
}

/// The `trellis-sdk` line of a Rust project's Cargo.toml. The SDK is not
/// published, so it is a path dependency: `--sdk`, or the checkout this
/// binary was built from. Without the `log` grant the SDK's `log-errors`
/// feature is off, so the component does not import `log`.
fn sdk_dependency(sdk: Option<PathBuf>, log: bool) -> Result<String, ScaffoldError> {
    let path = sdk.unwrap_or_else(|| PathBuf::from(CHECKOUT_SDK));
    let path = path
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or(ScaffoldError::NoSdk(path))?;
    let path = path.display().to_string().replace('\\', "/");
    let features = if log {
        ""
    } else {
        ", default-features = false"
    };
    Ok(format!("trellis-sdk = {{ path = \"{path}\"{features} }}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trellis-new-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn names_must_suit_every_toolchain() {
        for good in ["hello", "my-api2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "2fast", "a_b", "a-", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_project_takes_only_its_grants() {
        let parent = temp("grants");
        let grants = ["log".to_owned(), "sql".to_owned()];
        let dir = create(&parent, "demo", Lang::Python, &grants, None).expect("created");
        let manifest = fs::read_to_string(dir.join("trellis.toml")).unwrap();
        assert!(
            manifest.contains("grants = [\"sql\", \"log\"]"),
            "{manifest}"
        );
        assert!(
            manifest.contains("component = \"dist/demo.wasm\""),
            "{manifest}"
        );
        assert!(!manifest.contains("rate_limits"), "{manifest}");
        let app = fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(app.contains("sql.query("), "{app}");
        assert!(app.contains("log.info("), "{app}");
        assert!(!app.contains("cache") && !app.contains("trellis:"), "{app}");
        let world = fs::read_to_string(dir.join("wit/world.wit")).unwrap();
        assert!(
            world.contains("with-sql") && world.contains("with-log"),
            "{world}"
        );
        assert!(!world.contains("with-cache"), "{world}");
        assert!(
            matches!(
                create(&parent, "demo", Lang::Js, &[], None),
                Err(ScaffoldError::Exists(_))
            ),
            "a second project of the same name is refused"
        );
        let _ = fs::remove_dir_all(&parent);
    }

    #[test]
    fn the_js_helper_follows_the_worlds_grants() {
        let parent = temp("helper");
        let dir = create(&parent, "web", Lang::Js, &["sql".to_owned()], None).expect("created");
        let helper = || fs::read_to_string(dir.join("src/trellis.js")).unwrap();
        assert!(helper().contains("trellis:api/sql@0.1.0"), "{}", helper());
        assert!(
            !helper().contains("trellis:api/cache@0.1.0"),
            "{}",
            helper()
        );
        let written = write_helper(&dir, &["sql", "cache"]).expect("written");
        assert_eq!(written, Some(dir.join("src/trellis.js")));
        assert!(helper().contains("trellis:api/cache@0.1.0"), "{}", helper());
        assert!(
            !helper().contains("trellis:if"),
            "markers never reach the file"
        );
        assert_eq!(
            write_helper(&parent, &["sql"]).expect("nothing to do"),
            None
        );
        let _ = fs::remove_dir_all(&parent);
    }

    #[test]
    fn rust_without_log_turns_off_the_sdks_log_import() {
        let parent = temp("rust");
        let dir = create(&parent, "r", Lang::Rust, &["sql".to_owned()], None).expect("created");
        let cargo = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("default-features = false"), "{cargo}");
        assert!(cargo.contains("trellis-sdk = { path = \"/"), "{cargo}");
        assert!(!dir.join("wit").exists());
        let _ = fs::remove_dir_all(&parent);
    }
}
