//! The `config` and `log` capabilities through the `sql-probe` component:
//! per-route variables and secrets from the manifest and the environment,
//! and guest records in the host's log, tagged and with secrets masked.
//! They share one fixture because masking is about the route's secrets.

use std::time::Duration;

use serde_json::{Value, json};

use crate::database::Db;
use crate::harness::{Manifest, Trellis, component, header, sha256_hex, wait_until};
use crate::probe::{GRANTS, err, launch, ok, op, post_script, script, script_at, variant};

/// The secret values of the config tests' route; none may reach a log.
const SECRET_FROM_ENV: &str = "env-secret-4f1c9a7e";

const SECRET_LITERAL: &str = "literal-secret-b82d";

/// Config and log need no particular database; they run on SQLite.
async fn config_host() -> (Db, Trellis) {
    let db = Db::sqlite();
    let manifest = db
        .manifest(Manifest::new())
        .route(
            "probe",
            "/probe",
            component::SQL_PROBE,
            &[
                GRANTS,
                r#"config = { page_size = "20", greeting = { env = "TRELLIS_E2E_UNSET_GREETING", default = "hi" }, region = { env = "TRELLIS_E2E_REGION" } }"#,
                &format!(
                    r#"secrets = {{ api_key = {{ env = "TRELLIS_E2E_API_KEY" }}, literal_secret = "{SECRET_LITERAL}" }}"#
                ),
            ],
        )
        .route(
            "other",
            "/probe/other",
            component::SQL_PROBE,
            &[GRANTS, r#"config = { color = "blue" }"#],
        );
    let trellis = launch(
        manifest,
        &[
            ("TRELLIS_E2E_REGION", "eu-west-3"),
            ("TRELLIS_E2E_API_KEY", SECRET_FROM_ENV),
        ],
    )
    .await;
    (db, trellis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_values_and_secrets() {
    let (_db, trellis) = config_host().await;
    let get = |key: &str| json!({ "op": "config_get", "key": key });
    let results = script(
        &trellis,
        json!([
            get("page_size"),
            get("greeting"),
            get("region"),
            get("api_key"),
            get("literal_secret"),
            get("color"),
            get("missing"),
            get("bad key!"),
            op("config_get_all"),
        ]),
    )
    .await;
    assert_eq!(ok(&results[0]), "20");
    assert_eq!(ok(&results[1]), "hi", "the default of an unset variable");
    assert_eq!(ok(&results[2]), "eu-west-3", "from the environment");
    assert_eq!(ok(&results[3]), SECRET_FROM_ENV);
    assert_eq!(ok(&results[4]), SECRET_LITERAL);
    assert_eq!(ok(&results[5]), &Value::Null, "another route's variable");
    assert_eq!(ok(&results[6]), &Value::Null);
    assert_eq!(variant(&results[7]), "invalid-key");
    let mut all: Vec<(String, String)> = serde_json::from_value(ok(&results[8]).clone()).unwrap();
    all.sort();
    let expected = [
        ("api_key", SECRET_FROM_ENV),
        ("greeting", "hi"),
        ("literal_secret", SECRET_LITERAL),
        ("page_size", "20"),
        ("region", "eu-west-3"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(all, expected);

    let results = script_at(
        &trellis,
        "/probe/other",
        json!([op("config_get_all"), get("api_key")]),
    )
    .await;
    assert_eq!(ok(&results[0]), &json!([["color", "blue"]]));
    assert_eq!(ok(&results[1]), &Value::Null);

    assert_no_secret_logged(&trellis);
}

fn assert_no_secret_logged(trellis: &Trellis) {
    let logs = serde_json::to_string(&trellis.logs()).unwrap();
    let stderr = trellis.stderr();
    for secret in [SECRET_FROM_ENV, SECRET_LITERAL] {
        assert!(!logs.contains(secret), "{secret} in the host's stdout");
        assert!(!stderr.contains(secret), "{secret} in the host's stderr");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_logs_carry_route_component_request_id_and_mask_secrets() {
    let (_db, trellis) = config_host().await;
    let log = |level: &str, message: &str, fields: Value| json!({ "op": "log", "level": level, "message": message, "fields": fields });
    let enabled = |level: &str| json!({ "op": "log_enabled", "level": level });
    let response = post_script(
        &trellis,
        "/probe",
        &json!([
            enabled("trace"),
            enabled("debug"),
            enabled("info"),
            enabled("warn"),
            enabled("error"),
            log(
                "info",
                "probe says hello",
                json!([["order", "42"], ["note", "ünïcode"]])
            ),
            log(
                "warn",
                &format!("leaking {SECRET_FROM_ENV} and {SECRET_LITERAL}"),
                json!([
                    ["auth", format!("Bearer {SECRET_FROM_ENV}")],
                    ["plain", "visible"]
                ])
            ),
            log("error", "probe error record", json!([])),
            log("debug", "probe debug record", json!([])),
            log("info", &"x".repeat(100_000), json!([])),
        ]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id = header(response.headers(), "x-request-id");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let results = body["results"].as_array().unwrap();
    let flags: Vec<&Value> = results[..5].iter().map(ok).collect();
    assert_eq!(
        flags,
        [
            &json!(false),
            &json!(false),
            &json!(true),
            &json!(true),
            &json!(true)
        ]
    );
    for result in &results[5..9] {
        assert_eq!(ok(result), &Value::Null);
    }
    assert_eq!(variant(&results[9]), "too-large");
    let limit = err(&results[9])["limit"].as_u64().unwrap();
    assert!(limit > 0 && limit < 100_000, "limit {limit}");

    let digest = sha256_hex(component::SQL_PROBE);
    let hello = trellis
        .wait_log("the guest's info record", |l| {
            l["message"] == "probe says hello"
        })
        .await;
    assert_eq!(hello["level"], "INFO");
    assert_eq!(hello["target"], "guest");
    assert_eq!(hello["route"], "probe");
    assert_eq!(hello["component"], digest);
    assert_eq!(hello["request_id"], request_id);
    let fields: Value =
        serde_json::from_str(hello["fields"].as_str().expect("fields as a string")).unwrap();
    assert_eq!(fields, json!({ "order": "42", "note": "ünïcode" }));

    let warn = trellis
        .wait_log("the guest's warn record", |l| {
            l["target"] == "guest" && l["level"] == "WARN"
        })
        .await;
    assert_eq!(warn["message"], "leaking [redacted] and [redacted]");
    let fields: Value = serde_json::from_str(warn["fields"].as_str().unwrap()).unwrap();
    assert_eq!(
        fields,
        json!({ "auth": "Bearer [redacted]", "plain": "visible" })
    );

    let error = trellis
        .wait_log("the guest's error record", |l| {
            l["message"] == "probe error record"
        })
        .await;
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["request_id"], request_id);

    // The request line comes after the guest's records; by then a debug
    // record would have been written too, and it was not.
    trellis.request_log(&request_id).await;
    assert!(
        !trellis
            .logs()
            .iter()
            .any(|l| l["message"] == "probe debug record"),
        "a debug record passed an info filter"
    );
    assert_no_secret_logged(&trellis);
}

/// What a guest prints reaches the log as structured lines: tagged like
/// its records, secrets masked, a partial line kept until the instance
/// ends, and a flood cut to the per-instance budget with one line saying
/// how much was left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stdout_and_stderr_become_log_lines() {
    let (_db, trellis) = config_host().await;
    let print = |stream: &str, text: &str, times: u32| json!({ "op": "print", "stream": stream, "text": text, "times": times });
    let response = post_script(
        &trellis,
        "/probe",
        &json!([
            print("stdout", "printed on stdout\nsecond line\n", 1),
            print("stderr", &format!("stderr says {SECRET_LITERAL}\n"), 1),
            print("stderr", "no newline at the end", 1),
        ]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id = header(response.headers(), "x-request-id");
    let digest = sha256_hex(component::SQL_PROBE);
    for (text, stream, level) in [
        ("printed on stdout", "stdout", "INFO"),
        ("second line", "stdout", "INFO"),
        ("stderr says [redacted]", "stderr", "WARN"),
        ("no newline at the end", "stderr", "WARN"),
    ] {
        let line = trellis
            .wait_log(text, |l| l["target"] == "guest" && l["message"] == text)
            .await;
        assert_eq!(line["stream"], stream, "{line}");
        assert_eq!(line["level"], level, "{line}");
        assert_eq!(line["route"], "probe", "{line}");
        assert_eq!(line["component"], digest, "{line}");
        assert_eq!(line["request_id"], request_id, "{line}");
    }

    // 5,000 lines in one request: the budget's worth are logged, the
    // rest counted in one warning, and the request is not held up.
    let response = post_script(
        &trellis,
        "/probe",
        &json!([print("stderr", "flood line\n", 5000)]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id = header(response.headers(), "x-request-id");
    // The budget is per second: a machine slow enough to spend more than
    // a second printing gets a summary per second, each counting its own.
    let (logged, summaries) = wait_until(
        "every flood line logged or counted",
        Duration::from_millis(50),
        async || {
            let logs = trellis.logs();
            let ours = || {
                logs.iter()
                    .filter(|l| l["request_id"] == request_id.as_str())
            };
            let logged = ours().filter(|l| l["message"] == "flood line").count() as u64;
            let counted: Vec<u64> = ours().filter_map(|l| l["suppressed"].as_u64()).collect();
            (logged + counted.iter().sum::<u64>() == 5000).then_some((logged, counted.len() as u64))
        },
    )
    .await;
    assert!(
        summaries >= 1,
        "the lines left out are counted in a warning"
    );
    assert!(
        (1..=100 * (summaries + 1)).contains(&logged),
        "{logged} flood lines logged over {summaries} summaries: the budget did not hold"
    );
    assert_no_secret_logged(&trellis);
}
