//! SQL transactions and the pool through the `sql-probe` component, on
//! SQLite and PostgreSQL: commit, rollback and drop; a trap mid-transaction
//! commits nothing; held connections, pool and statement timeouts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::database::{Db, on_both};
use crate::harness::assert_error;
use crate::probe::{
    ddl, execute, int, launch, manifest, ok, op, post_script, query, rows, script, start, text,
    tx_execute, tx_query, variant,
};
use crate::sql_streams::{BIG, assert_batches};

on_both!(
    transactions_commit_rollback_and_drop,
    trap_mid_transaction_commits_nothing,
    pool_limits,
    statement_timeout
);

fn ledger(db: &Db) -> Value {
    execute(
        ddl(
            db,
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, note TEXT)",
            "CREATE TABLE ledger (id BIGINT PRIMARY KEY, note TEXT)",
        ),
        json!([]),
    )
}

fn count_ledger() -> Value {
    query("SELECT COUNT(*) AS n FROM ledger", json!([]))
}

async fn transactions_commit_rollback_and_drop(db: Db) {
    let trellis = start(&db).await;
    let insert = "INSERT INTO ledger (id, note) VALUES ($1, $2)";
    let results = script(
        &trellis,
        json!([
            ledger(&db),
            op("begin"),
            tx_execute(insert, json!([int(1), text("kept")])),
            tx_query("SELECT COUNT(*) AS n FROM ledger", json!([])),
            // Another connection does not see the uncommitted row.
            count_ledger(),
            op("commit"),
            tx_execute(insert, json!([int(2), text("late")])),
            op("commit"),
            op("rollback"),
            tx_query("SELECT 1 AS one", json!([])),
            count_ledger(),
        ]),
    )
    .await;
    assert_eq!(ok(&results[2]), 1);
    assert_eq!(
        rows(&results[3])[0][0],
        int(1),
        "the transaction sees its own row"
    );
    assert_eq!(rows(&results[4])[0][0], int(0), "isolation");
    assert_eq!(ok(&results[5]), &Value::Null);
    for closed in &results[6..=9] {
        assert_eq!(variant(closed), "closed", "{closed}");
    }
    assert_eq!(rows(&results[10])[0][0], int(1), "committed");

    let results = script(
        &trellis,
        json!([
            op("begin"),
            tx_execute(insert, json!([int(3), text("rolled back")])),
            op("rollback"),
            tx_execute(insert, json!([int(4), text("closed")])),
            op("commit"),
            count_ledger(),
            // Dropped without commit: rolled back, and the connection (on
            // SQLite, the write lock) is free again.
            op("begin"),
            tx_execute(insert, json!([int(5), text("dropped")])),
            op("drop_tx"),
            count_ledger(),
            execute(insert, json!([int(6), text("outside")])),
            // Two transactions at once, one committed and one not.
            json!({ "op": "begin", "tx": "a" }),
            json!({ "op": "tx_execute", "tx": "a", "sql": insert, "params": [int(7), text("a")] }),
            json!({ "op": "commit", "tx": "a" }),
            json!({ "op": "begin", "tx": "b" }),
            json!({ "op": "tx_execute", "tx": "b", "sql": insert, "params": [int(8), text("b")] }),
            json!({ "op": "rollback", "tx": "b" }),
        ]),
    )
    .await;
    assert_eq!(ok(&results[1]), 1);
    assert_eq!(ok(&results[2]), &Value::Null);
    assert_eq!(variant(&results[3]), "closed");
    assert_eq!(variant(&results[4]), "closed");
    assert_eq!(rows(&results[5])[0][0], int(1), "rollback undid the insert");
    assert_eq!(rows(&results[9])[0][0], int(1), "drop undid the insert");
    assert_eq!(ok(&results[10]), 1);
    for result in &results[11..] {
        ok(result);
    }
    // A transaction left open when the request ends is rolled back too.
    let results = script(
        &trellis,
        json!([
            op("begin"),
            tx_execute(insert, json!([int(9), text("abandoned")]))
        ]),
    )
    .await;
    assert_eq!(ok(&results[1]), 1);
    let results = script(
        &trellis,
        json!([
            execute(insert, json!([int(10), text("after")])),
            query("SELECT id FROM ledger ORDER BY id", json!([]))
        ]),
    )
    .await;
    assert_eq!(ok(&results[0]), 1);
    let ids: Vec<Value> = rows(&results[1]).iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, [int(1), int(6), int(7), int(10)]);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM ledger").await, 4);
}

async fn trap_mid_transaction_commits_nothing(db: Db) {
    let trellis = start(&db).await;
    let insert = "INSERT INTO ledger (id, note) VALUES ($1, $2)";
    script(&trellis, json!([ledger(&db)])).await;
    for attempt in 0..3 {
        let response = post_script(
            &trellis,
            "/probe",
            &json!([
                op("begin"),
                tx_execute(insert, json!([int(100 + attempt), text("trapped")])),
                tx_execute("UPDATE ledger SET note = $1", json!([text("trapped")])),
                op("trap"),
            ]),
        )
        .await;
        let body = assert_error(response, 500, "HANDLER_FAILED").await;
        assert_eq!(body["error"]["message"], "internal error");
    }
    // Nothing committed, and nothing still holds a lock: a write succeeds.
    let results = script(
        &trellis,
        json!([
            count_ledger(),
            execute(insert, json!([int(1), text("after the traps")])),
            op("begin"),
            tx_execute(insert, json!([int(2), text("in a new transaction")])),
            op("commit"),
        ]),
    )
    .await;
    assert_eq!(rows(&results[0])[0][0], int(0));
    assert_eq!(ok(&results[1]), 1);
    assert_eq!(ok(&results[4]), &Value::Null);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM ledger").await, 2);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM ledger WHERE note = 'trapped'")
            .await,
        0
    );
}

/// With one connection in the pool, a held transaction or stream makes
/// other statements wait and fail with `pool-timeout`; commit, rollback,
/// drop, the end of a stream and the end of a request all give it back.
async fn pool_limits(db: Db) {
    let trellis = launch(
        manifest(
            &db,
            // Long enough for a first connection (with PostgreSQL's TLS
            // handshake, sslmode=prefer) on a loaded debug host.
            &["max_connections = 1", r#"acquire_timeout = "1s""#],
        ),
        &[],
    )
    .await;
    let one = || query("SELECT 1 AS one", json!([]));
    let started = Instant::now();
    let results = script(
        &trellis,
        json!([
            op("begin"),
            one(),
            op("rollback"),
            one(),
            op("begin"),
            op("commit"),
            one(),
            op("begin"),
            op("drop_tx"),
            one(),
            // A result larger than the host's read-ahead keeps the
            // connection until the stream is dropped or read to its end.
            json!({ "op": "stream_open", "sql": BIG }),
            one(),
            op("stream_drop"),
            one(),
            json!({ "op": "stream", "sql": BIG, "batch": 4096 }),
            one(),
            op("begin"),
        ]),
    )
    .await;
    assert_eq!(variant(&results[1]), "pool-timeout", "{}", results[1]);
    assert_eq!(variant(&results[11]), "pool-timeout", "{}", results[11]);
    for i in [3, 6, 9, 13, 15] {
        assert_eq!(rows(&results[i])[0][0], int(1), "step {i}: {}", results[i]);
    }
    assert_batches(&ok(&results[14])["batches"], 4096, 10_000);
    ok(&results[16]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pool-timeout took {:?}",
        started.elapsed()
    );
    // The transaction left open by the last request went back to the pool.
    let results = script(&trellis, json!([one()])).await;
    assert_eq!(rows(&results[0])[0][0], int(1));
    // So did a stream held by a guest that trapped.
    let response = post_script(
        &trellis,
        "/probe",
        &json!([json!({ "op": "stream_open", "sql": BIG }), op("trap")]),
    )
    .await;
    assert_error(response, 500, "HANDLER_FAILED").await;
    let results = script(&trellis, json!([one()])).await;
    assert_eq!(rows(&results[0])[0][0], int(1));
}

/// A statement past `statement_timeout` fails with `timeout`, promptly, and
/// the next statement runs on the same (only) connection.
async fn statement_timeout(db: Db) {
    // One connection: the statement that timed out must give it back, not
    // keep running on it.
    let trellis = launch(
        manifest(
            &db,
            &[
                r#"statement_timeout = "500ms""#,
                "max_connections = 1",
                r#"acquire_timeout = "5s""#,
            ],
        ),
        &[],
    )
    .await;
    let slow = if db.is_postgres() {
        "SELECT pg_sleep(5)::text AS slept"
    } else {
        // Seconds of CPU in SQLite, and one row only at the end.
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500000000) \
         SELECT COUNT(*) AS c FROM n"
    };
    let started = Instant::now();
    let results = script(
        &trellis,
        json!([query(slow, json!([])), query("SELECT 1 AS one", json!([]))]),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(variant(&results[0]), "timeout", "{}", results[0]);
    assert_eq!(rows(&results[1])[0][0], int(1));
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}
