//! The `sql` capability through the `sql-probe` component, on SQLite and
//! on the real PostgreSQL (`name::sqlite`, `name::postgres`): every value
//! type, statements, parameters that stay data, and errors as values.

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::database::{Db, PgProxy, on_both};
use crate::harness::{Manifest, component};
use crate::probe::{
    GRANTS, ddl, err, execute, int, launch, ok, op, query, rows, script, start, text, tx_execute,
    variant,
};

on_both!(
    dialect_and_isolation,
    values_round_trip,
    execute_and_query,
    injection_stays_data,
    conflicts_and_database_errors
);

async fn dialect_and_isolation(db: Db) {
    let trellis = start(&db).await;
    let results = script(&trellis, json!([op("dialect")])).await;
    assert_eq!(ok(&results[0]), db.dialect());
    if let Db::Postgres(schema) = &db {
        // The host's connections land in this test's own schema.
        let results = script(
            &trellis,
            json!([query("SELECT current_schema()::text AS s", json!([]))]),
        )
        .await;
        assert_eq!(rows(&results[0])[0][0], text(schema.name()));
    } else {
        // The file named in the manifest is the one the host writes.
        script(
            &trellis,
            json!([execute("CREATE TABLE marker (x INTEGER)", json!([]))]),
        )
        .await;
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'marker'")
                .await,
            1
        );
    }
}

async fn values_round_trip(db: Db) {
    let trellis = start(&db).await;
    let create = ddl(
        &db,
        "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, flag BOOLEAN)",
        "CREATE TABLE vals (id BIGINT PRIMARY KEY, i BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA, flag BOOLEAN)",
    );
    let all_bytes: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    let long_text = "long ".repeat(20_000);
    let float = |f: f64| json!({ "float_bits": format!("{:016x}", f.to_bits()) });
    // SQLite stores a REAL with no fraction as an integer, so -0.0 comes
    // back as 0.0 there: a property of SQLite, not of the host.
    let negative_zero_or = |sqlite: f64| if db.is_postgres() { -0.0 } else { sqlite };
    let third = negative_zero_or(-2.5);
    // One row per line: i, f, s, b, flag.
    let cases = [
        (
            int(i64::MIN),
            float(f64::MIN_POSITIVE),
            text(""),
            json!({ "blob": "" }),
            json!({ "bool": true }),
        ),
        (
            int(i64::MAX),
            float(5e-324),
            text("héllo wörld — 世界 🦀 \u{202e}"),
            json!({ "blob": all_bytes }),
            json!({ "bool": false }),
        ),
        (
            int(0),
            float(third),
            text("a'b\"c\\d\ne\tf %s $1 ?"),
            json!({ "blob": "00" }),
            json!("null"),
        ),
        (
            int(-1),
            float(0.1),
            text(&long_text),
            json!("null"),
            json!({ "bool": true }),
        ),
        (
            int(42),
            float(f64::MAX),
            json!("null"),
            json!({ "blob": "deadbeef" }),
            json!("null"),
        ),
        (
            json!("null"),
            json!("null"),
            json!("null"),
            json!("null"),
            json!("null"),
        ),
        (
            int(7),
            json!({ "float": std::f64::consts::PI }),
            text("π"),
            json!({ "blob": "ff" }),
            json!({ "bool": false }),
        ),
    ];
    let mut steps = vec![execute(create, json!([]))];
    for (id, (i, f, s, b, flag)) in cases.iter().enumerate() {
        steps.push(execute(
            "INSERT INTO vals (id, i, f, s, b, flag) VALUES ($1, $2, $3, $4, $5, $6)",
            json!([int(id as i64), i, f, s, b, flag]),
        ));
    }
    steps.push(query(
        "SELECT id, i, f, s, b, flag FROM vals ORDER BY id",
        json!([]),
    ));
    // Every type also works as a parameter in a WHERE clause.
    steps.push(query(
        "SELECT id FROM vals WHERE i = $1",
        json!([int(i64::MIN)]),
    ));
    steps.push(query(
        "SELECT id FROM vals WHERE s = $1",
        json!([cases[1].2]),
    ));
    steps.push(query(
        "SELECT id FROM vals WHERE b = $1",
        json!([cases[1].3]),
    ));
    steps.push(query(
        "SELECT id FROM vals WHERE f = $1",
        json!([float(third)]),
    ));
    steps.push(query(
        "SELECT id FROM vals WHERE flag = $1 ORDER BY id",
        json!([{ "bool": false }]),
    ));
    steps.push(query(
        "SELECT id FROM vals WHERE b = $1",
        json!([{ "blob": "" }]),
    ));
    let results = script(&trellis, Value::Array(steps)).await;
    for result in &results[1..=cases.len()] {
        assert_eq!(ok(result), 1, "{result}");
    }

    let read = &results[cases.len() + 1];
    assert_eq!(
        ok(read)["columns"],
        json!(["id", "i", "f", "s", "b", "flag"])
    );
    let read = rows(read);
    assert_eq!(read.len(), cases.len());
    for (id, ((i, f, s, b, flag), row)) in cases.iter().zip(read).enumerate() {
        assert_eq!(row[0], int(id as i64));
        assert_eq!(&row[1], i, "row {id}: int");
        let sent_bits = match (f.get("float_bits"), f.get("float")) {
            (Some(bits), _) => Some(bits.as_str().unwrap().to_owned()),
            (None, Some(float)) => Some(format!("{:016x}", float.as_f64().unwrap().to_bits())),
            (None, None) => None,
        };
        match sent_bits {
            Some(bits) => assert_eq!(
                row[2]["bits"], bits,
                "row {id}: float {f} came back as {}",
                row[2]
            ),
            None => assert_eq!(row[2], json!("null"), "row {id}: float"),
        }
        assert!(&row[3] == s, "row {id}: text came back as {}", row[3]);
        assert_eq!(&row[4], b, "row {id}: blob");
        assert_eq!(&row[5], flag, "row {id}: boolean");
    }
    let ids = |r: &Value| rows(r).iter().map(|row| row[0].clone()).collect::<Vec<_>>();
    let base = cases.len() + 2;
    assert_eq!(ids(&results[base]), [int(0)], "WHERE int");
    assert_eq!(ids(&results[base + 1]), [int(1)], "WHERE text");
    assert_eq!(ids(&results[base + 2]), [int(1)], "WHERE blob");
    assert_eq!(ids(&results[base + 3]), [int(2)], "WHERE float");
    assert_eq!(ids(&results[base + 4]), [int(1), int(6)], "WHERE boolean");
    assert_eq!(ids(&results[base + 5]), [int(0)], "WHERE empty blob");

    // Narrower integer and float columns read as the same cases.
    let results = script(
        &trellis,
        json!([query(
            "SELECT CAST(7 AS SMALLINT) AS a, CAST(-8 AS INTEGER) AS b, CAST(1.5 AS REAL) AS c",
            json!([])
        )]),
    )
    .await;
    assert_eq!(rows(&results[0])[0][0], int(7));
    assert_eq!(rows(&results[0])[0][1], int(-8));
    assert_eq!(rows(&results[0])[0][2]["float"], 1.5);
}

async fn execute_and_query(db: Db) {
    let trellis = start(&db).await;
    let results = script(
        &trellis,
        json!([
            execute(
                ddl(
                    &db,
                    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)",
                    "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty BIGINT NOT NULL)",
                ),
                json!([])
            ),
            execute("INSERT INTO items (id, name, qty) VALUES ($1, $2, $3)", json!([int(1), text("bolt"), int(10)])),
            execute(
                "INSERT INTO items (id, name, qty) VALUES ($1, $2, $3), ($4, $5, $6)",
                json!([int(2), text("nut"), int(5), int(3), text("gear"), int(1)])
            ),
            execute("UPDATE items SET qty = qty + 1 WHERE qty >= $1", json!([int(5)])),
            execute("DELETE FROM items WHERE id = $1", json!([int(99)])),
            query("SELECT id, name, qty AS \"Quantity\" FROM items ORDER BY id", json!([])),
            query("SELECT id FROM items WHERE name = $1", json!([text("nobody")])),
            query(
                "INSERT INTO items (id, name, qty) VALUES ($1, $2, $3) RETURNING id, name",
                json!([int(4), text("cog"), int(0)])
            ),
            execute("DELETE FROM items WHERE qty < $1", json!([int(2)])),
            query("SELECT COUNT(*) AS n FROM items", json!([])),
        ]),
    )
    .await;
    assert_eq!(ok(&results[1]), 1);
    assert_eq!(ok(&results[2]), 2);
    assert_eq!(ok(&results[3]), 2, "bolt and nut have qty >= 5");
    assert_eq!(ok(&results[4]), 0);
    assert_eq!(
        ok(&results[5])["columns"],
        json!(["id", "name", "Quantity"])
    );
    assert_eq!(
        rows(&results[5]),
        &vec![
            json!([int(1), text("bolt"), int(11)]),
            json!([int(2), text("nut"), int(6)]),
            json!([int(3), text("gear"), int(1)]),
        ]
    );
    assert!(rows(&results[6]).is_empty());
    assert_eq!(ok(&results[7])["columns"], json!(["id", "name"]));
    assert_eq!(rows(&results[7]), &vec![json!([int(4), text("cog")])]);
    assert_eq!(ok(&results[8]), 2, "gear and cog");
    assert_eq!(rows(&results[9])[0][0], int(2));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM items").await, 2);
}

async fn injection_stays_data(db: Db) {
    let trellis = start(&db).await;
    let payloads = [
        "'); DROP TABLE notes; --",
        "' OR '1'='1",
        "1; DELETE FROM notes",
        "Robert'); DROP TABLE students;--",
        "$1",
        "?",
        "\\'; SELECT pg_sleep(5); --",
    ];
    let mut steps = vec![execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        json!([]),
    )];
    for (id, payload) in payloads.iter().enumerate() {
        steps.push(execute(
            "INSERT INTO notes (id, body) VALUES ($1, $2)",
            json!([int(id as i64), text(payload)]),
        ));
    }
    steps.push(query(
        "SELECT body FROM notes WHERE body = $1",
        json!([text("' OR '1'='1")]),
    ));
    steps.push(query(
        "SELECT COUNT(*) AS n FROM notes WHERE body = $1",
        json!([text("x' OR '1'='1")]),
    ));
    steps.push(query("SELECT body FROM notes ORDER BY id", json!([])));
    // A parameter is a value, never an identifier.
    steps.push(query("SELECT * FROM $1", json!([text("notes")])));
    let results = script(&trellis, Value::Array(steps)).await;
    let n = payloads.len();
    for result in &results[1..=n] {
        assert_eq!(ok(result), 1);
    }
    assert_eq!(rows(&results[n + 1]), &vec![json!([text("' OR '1'='1")])]);
    assert_eq!(rows(&results[n + 2])[0][0], int(0));
    let stored: Vec<Value> = rows(&results[n + 3]).iter().map(|r| r[0].clone()).collect();
    let expected: Vec<Value> = payloads.iter().map(|p| text(p)).collect();
    assert_eq!(stored, expected, "stored verbatim");
    assert_eq!(variant(&results[n + 4]), "database");
    // The table is intact, seen from outside the host.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM notes").await, n as i64);
}

async fn conflicts_and_database_errors(db: Db) {
    let trellis = start(&db).await;
    let results = script(
        &trellis,
        json!([
            execute(
                ddl(
                    &db,
                    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
                    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
                ),
                json!([])
            ),
            execute(
                "INSERT INTO accounts (id, email) VALUES ($1, $2)",
                json!([int(1), text("a@x")])
            ),
            execute(
                "INSERT INTO accounts (id, email) VALUES ($1, $2)",
                json!([int(2), text("a@x")])
            ),
            execute(
                "INSERT INTO accounts (id, email) VALUES ($1, $2)",
                json!([int(1), text("b@x")])
            ),
            execute(
                "INSERT INTO accounts (id, email) VALUES ($1, $2)",
                json!([int(3), "null"])
            ),
            execute("SELEC 1", json!([])),
            query("SELECT * FROM no_such_table", json!([])),
            query("SELECT $1 AS a, $2 AS b", json!([int(1)])),
            op("begin"),
            tx_execute(
                "INSERT INTO accounts (id, email) VALUES ($1, $2)",
                json!([int(4), text("a@x")])
            ),
            op("rollback"),
            query("SELECT COUNT(*) AS n FROM accounts", json!([])),
        ]),
    )
    .await;
    assert_eq!(ok(&results[1]), 1);
    let (unique, primary_key, not_null, syntax, no_table) = if db.is_postgres() {
        ("23505", "23505", "23502", "42601", "42P01")
    } else {
        // SQLite extended result codes.
        ("2067", "1555", "1299", "1", "1")
    };
    for (result, kind, code) in [
        (&results[2], "conflict", unique),
        (&results[3], "conflict", primary_key),
        (&results[4], "database", not_null),
        (&results[5], "database", syntax),
        (&results[6], "database", no_table),
        (&results[9], "conflict", unique),
    ] {
        assert_eq!(variant(result), kind, "{result}");
        assert_eq!(err(result)["code"], code, "{result}");
        assert!(
            err(result)["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{result}"
        );
    }
    // Too few parameters: an error on both (SQLite alone would bind NULL).
    assert_eq!(variant(&results[7]), "database", "{}", results[7]);
    assert_eq!(ok(&results[10]), &Value::Null);
    assert_eq!(rows(&results[11])[0][0], int(1));
}

/// PostgreSQL types outside `value`: timestamps, JSON, UUIDs and dates come
/// back as text; `numeric` must be cast, or it is `unsupported-type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_as_text_and_unsupported() {
    let db = Db::postgres().await;
    let trellis = start(&db).await;
    let results = script(
        &trellis,
        json!([
            query("SELECT 1.5::numeric AS price", json!([])),
            query("SELECT 1.5::numeric::text AS price", json!([])),
            query(
                "SELECT '2024-01-02 03:04:05.678+00'::timestamptz AS ts",
                json!([])
            ),
            query(
                "SELECT $1::timestamptz = '2024-01-02 03:04:05+00'::timestamptz AS same",
                json!([text("2024-01-02T03:04:05Z")])
            ),
            query("SELECT '{\"a\": [1, 2]}'::jsonb AS j", json!([])),
            query(
                "SELECT $1::jsonb ->> 'k' AS v",
                json!([text("{\"k\": \"v\"}")])
            ),
            query(
                "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u",
                json!([])
            ),
            query("SELECT '2024-02-29'::date AS d", json!([])),
            json!({ "op": "stream", "sql": "SELECT 2.5::numeric AS price", "batch": 10 }),
            query("SELECT 1 AS still_fine", json!([])),
        ]),
    )
    .await;
    assert_eq!(variant(&results[0]), "unsupported-type");
    let detail = err(&results[0])["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("numeric"),
        "detail names the type: {detail}"
    );
    assert_eq!(rows(&results[1])[0][0], text("1.5"));
    let ts = rows(&results[2])[0][0]["text"]
        .as_str()
        .expect("timestamptz as text")
        .to_owned();
    assert!(
        ts.starts_with("2024-01-02T03:04:05.678") && (ts.ends_with('Z') || ts.ends_with("+00:00")),
        "ISO 8601: {ts}"
    );
    assert_eq!(rows(&results[3])[0][0], json!({ "bool": true }));
    let j = rows(&results[4])[0][0]["text"]
        .as_str()
        .expect("jsonb as text");
    assert_eq!(
        serde_json::from_str::<Value>(j).unwrap(),
        json!({ "a": [1, 2] })
    );
    assert_eq!(rows(&results[5])[0][0], text("v"));
    assert_eq!(rows(&results[7])[0][0], text("2024-02-29"));
    assert_eq!(variant(&results[8]), "unsupported-type");
    assert_eq!(rows(&results[9])[0][0], int(1));
    assert_eq!(
        rows(&results[6])[0][0],
        text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
}

/// A database that goes away under a running host fails statements with
/// `unavailable` (or `pool-timeout`), values like any other error, with
/// nothing of the URL (its password) in them; the host keeps serving and
/// recovers when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_is_an_error_value_without_credentials() {
    const PASSWORD: &str = "hunter2-e2e-secret";
    let db = Db::postgres().await;
    let mut proxy = PgProxy::start().await;
    // Trust auth ignores the password, but the host must still keep it to itself.
    let url =
        proxy
            .route(&db.url())
            .replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1);
    assert!(
        url.contains(PASSWORD),
        "the test URL carries a password: {url}"
    );
    let manifest = Manifest::new()
        .database(&format!("url = {url:?}"))
        .database(r#"acquire_timeout = "1s""#)
        .route("probe", "/probe", component::SQL_PROBE, &[GRANTS]);
    let trellis = launch(manifest, &[]).await;
    let one = || query("SELECT 1 AS one", json!([]));
    let results = script(&trellis, json!([one()])).await;
    assert_eq!(rows(&results[0])[0][0], int(1));

    proxy.cut();
    let results = script(
        &trellis,
        json!([
            one(),
            execute("SELECT 1", json!([])),
            op("begin"),
            json!({ "op": "stream", "sql": "SELECT 1", "batch": 1 }),
            op("dialect"),
        ]),
    )
    .await;
    for result in &results[..4] {
        let variant = variant(result);
        assert!(
            variant == "unavailable" || variant == "pool-timeout",
            "{result}"
        );
        assert!(!result.to_string().contains(PASSWORD), "{result}");
    }
    assert_eq!(ok(&results[4]), "postgres", "the host still serves");

    proxy.restore().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let results = script(&trellis, json!([one()])).await;
        if results[0].get("ok").is_some() {
            assert_eq!(rows(&results[0])[0][0], int(1));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {}",
            results[0]
        );
    }
    let logs = serde_json::to_string(&trellis.logs()).unwrap();
    assert!(!logs.contains(PASSWORD), "the password reached the log");
    assert!(
        !trellis.stderr().contains(PASSWORD),
        "the password reached stderr"
    );
}

/// A statement in flight when PostgreSQL shuts down (`pg_ctl stop -m
/// fast`: its session gets 57P01) is `unavailable`, the SDK's 503, as a
/// request that cannot connect is; not a `database` error, the SDK's 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_in_flight_when_postgres_stops_is_unavailable() {
    let postgres = crate::harness::PostgresServer::start().await;
    let manifest = Manifest::new()
        .database(&format!("url = {:?}", postgres.url()))
        .database(r#"acquire_timeout = "1s""#)
        .route("probe", "/probe", component::SQL_PROBE, &[GRANTS]);
    let trellis = launch(manifest, &[]).await;
    let results = script(&trellis, json!([query("SELECT 1 AS one", json!([]))])).await;
    assert_eq!(rows(&results[0])[0][0], int(1));

    let in_flight = script(&trellis, json!([query("SELECT pg_sleep(20)", json!([]))]));
    let stop = async {
        // The sleep is on the server once PostgreSQL lists it as active.
        let deadline = std::time::Instant::now() + crate::harness::WAIT;
        let mut conn = sqlx::PgConnection::connect(&postgres.url()).await.unwrap();
        loop {
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if active > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sleep never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(conn);
        postgres.stop();
    };
    let (results, ()) = tokio::join!(in_flight, stop);
    assert_eq!(variant(&results[0]), "unavailable", "{}", results[0]);
}
