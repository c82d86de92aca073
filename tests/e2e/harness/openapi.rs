//! Checking a served `/openapi.json` with `openapi-spec-validator` (the
//! CI installs it), as a client generator would read it.

use super::scratch::TempDir;

/// Fails the test unless `text` is a valid OpenAPI document.
pub(crate) async fn assert_valid_openapi(text: &str) {
    let dir = TempDir::new();
    let path = dir.write("openapi.json", text);
    let output = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
            path.to_str().unwrap(),
        ])
        .output()
        .await
        .expect("running python3 (the CI installs openapi-spec-validator)");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
}
