//! SQL row streams through the `sql-probe` component, on SQLite and
//! PostgreSQL: batches, early drops, and a million rows exported into a
//! response body with the host's memory flat.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::database::{Db, on_both};
use crate::harness::{HEAVY, MIB, client_builder, header};
use crate::probe::{
    execute, int, launch, manifest, ok, op, query, rows, script, start, text, variant,
};

on_both!(streams, million_row_export);

/// `next(max)` returns up to `max` rows, as many as are ready, and an empty
/// batch only at the end.
#[track_caller]
pub(crate) fn assert_batches(batches: &Value, max: u64, total: u64) {
    let sizes: Vec<u64> = batches
        .as_array()
        .expect("batch sizes")
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    let (last, rest) = sizes.split_last().expect("at least the final batch");
    assert_eq!(*last, 0, "ends with an empty batch: {sizes:?}");
    assert!(
        rest.iter().all(|&n| n > 0 && n <= max),
        "batches of 1..={max}: {sizes:?}"
    );
    assert_eq!(rest.iter().sum::<u64>(), total, "{sizes:?}");
}

/// 10,000 rows on either database.
pub(crate) const BIG: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) SELECT i FROM n";

async fn streams(db: Db) {
    let trellis = start(&db).await;
    let mut values = Vec::new();
    let mut params = Vec::new();
    for i in 1..=10 {
        values.push(format!("(${i})"));
        params.push(int(i));
    }
    let select = "SELECT i, 'n' || i AS label FROM seq ORDER BY i";
    let stream = |sql: &str, params: Value, batch: u32| json!({ "op": "stream", "sql": sql, "params": params, "batch": batch });
    let results = script(
        &trellis,
        json!([
            execute("CREATE TABLE seq (i INTEGER NOT NULL)", json!([])),
            execute(
                &format!("INSERT INTO seq (i) VALUES {}", values.join(", ")),
                Value::Array(params)
            ),
            stream(select, json!([]), 3),
            stream(
                "SELECT i FROM seq WHERE i > $1 ORDER BY i",
                json!([int(7)]),
                100
            ),
            stream("SELECT i FROM seq WHERE i < 0", json!([]), 5),
            stream("SELECT nope FROM seq", json!([]), 5),
            json!({ "op": "stream", "sql": select, "batch": 4, "limit": 4 }),
            // Fine-grained: open, read some, query meanwhile, drop early.
            json!({ "op": "stream_open", "sql": select }),
            json!({ "op": "stream_next", "max": 2 }),
            op("stream_columns"),
            query("SELECT COUNT(*) AS n FROM seq", json!([])),
            execute("INSERT INTO seq (i) VALUES ($1)", json!([int(11)])),
            json!({ "op": "stream_next", "max": 1 }),
            op("stream_drop"),
            query("SELECT COUNT(*) AS n FROM seq", json!([])),
        ]),
    )
    .await;
    assert_eq!(ok(&results[1]), 10);

    let all = ok(&results[2]);
    assert_eq!(all["columns"], json!(["i", "label"]));
    assert_batches(&all["batches"], 3, 10);
    let expected: Vec<Value> = (1..=10)
        .map(|i| json!([int(i), text(&format!("n{i}"))]))
        .collect();
    assert_eq!(all["rows"], Value::Array(expected.clone()));
    assert_eq!(
        all["after_end"],
        json!({ "ok": 0 }),
        "next after the end stays empty"
    );

    let filtered = ok(&results[3]);
    assert_eq!(filtered["rows"], json!([[int(8)], [int(9)], [int(10)]]));
    assert_batches(&filtered["batches"], 100, 3);

    let empty = ok(&results[4]);
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["batches"], json!([0]));

    assert_eq!(variant(&results[5]), "database");

    let limited = ok(&results[6]);
    assert_eq!(limited["rows"], Value::Array(expected[..4].to_vec()));

    assert_eq!(ok(&results[7]), &Value::Null);
    assert_eq!(ok(&results[8]), &Value::Array(expected[..2].to_vec()));
    assert_eq!(ok(&results[9]), &json!(["i", "label"]));
    assert_eq!(rows(&results[10])[0][0], int(10));
    assert_eq!(ok(&results[11]), 1);
    assert_eq!(ok(&results[12]), &Value::Array(expected[2..3].to_vec()));
    assert_eq!(rows(&results[14])[0][0], int(11));
}

/// A million rows from `query-stream` straight into the response body, with
/// the host's memory flat: holding the result would cost over 100 MiB.
/// A stream's statement lasts until its last row is read, and a loaded
/// machine takes over the default 30 s for this one: the export gets the
/// 300 s its route has.
async fn million_row_export(db: Db) {
    const ROWS: u64 = 1_000_000;
    const MAX_GROWTH: u64 = 48 * MIB;
    let _heavy = HEAVY.lock().await;
    let trellis = launch(manifest(&db, &[r#"statement_timeout = "300s""#]), &[]).await;
    for _ in 0..3 {
        let body = trellis
            .get("/export?rows=20000")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(body.lines().count(), 20_000);
    }
    let baseline = trellis.memory();
    let mut max_rss = baseline.rss;
    let started = Instant::now();
    let client = client_builder()
        .no_gzip()
        .no_brotli()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let response = client
        .get(trellis.url(&format!("/export?rows={ROWS}&batch=1000")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "content-type"), "text/csv");
    let mut body = response.bytes_stream();
    let (mut next, mut partial, mut bytes) = (1u64, Vec::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the export streams to its end");
        bytes += chunk.len() as u64;
        partial.extend_from_slice(&chunk);
        let complete = partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        for line in partial[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let expected = format!("{next},row-{next}");
            assert!(
                line == expected.as_bytes(),
                "line {next}: {:?}",
                String::from_utf8_lossy(line)
            );
            next += 1;
            if next % 100_000 == 0 {
                max_rss = max_rss.max(trellis.memory().rss);
            }
        }
        partial.drain(..complete);
    }
    assert!(partial.is_empty(), "a partial last line");
    assert_eq!(next - 1, ROWS, "rows received");
    let end = trellis.memory();
    let sampled = max_rss.max(end.rss).saturating_sub(baseline.rss);
    let peak = end.hwm.saturating_sub(baseline.hwm);
    eprintln!(
        "{}: {ROWS} rows, {} MiB in {:?}; RSS growth {} KiB sampled, {} KiB peak",
        db.dialect(),
        bytes / MIB,
        started.elapsed(),
        sampled / 1024,
        peak / 1024
    );
    assert!(
        sampled < MAX_GROWTH && peak < MAX_GROWTH,
        "host RSS grew {} MiB (sampled) / {} MiB (peak); baseline {baseline:?}, end {end:?}",
        sampled / MIB,
        peak / MIB
    );
}
