//! `[database].migrations`, on SQLite and PostgreSQL: applied once each,
//! in order, at start, and recorded in `trellis_migrations`.

use serde_json::{Value, json};

use crate::database::{Db, on_both};
use crate::harness::{TempDir, run_cli};
use crate::probe::{int, launch, manifest, ok, query, script, text};

on_both!(migrations_apply_once);

/// Migrations run once each, in order, at start; a restart applies only
/// new ones; a broken one stops the host and names its file.
async fn migrations_apply_once(db: Db) {
    let files = TempDir::new();
    let first = files.write(
        "001_notes.sql",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
         INSERT INTO notes (id, body) VALUES (1, 'first');\n",
    );
    let sqlite = files.write(
        "002_dialect.sqlite.sql",
        "INSERT INTO notes (id, body) VALUES (2, 'sqlite');\n",
    );
    let postgres = files.write(
        "002_dialect.postgres.sql",
        "INSERT INTO notes (id, body) VALUES (2, 'postgres');\n",
    );
    let third = files.write(
        "003_third.sql",
        "INSERT INTO notes (id, body) VALUES (3, 'third');\n",
    );
    let broken = files.write("004_broken.sql", "CREATE TABLE oops (;\n");
    let migrations = |extra: &[&std::path::Path]| {
        let mut list = vec![
            format!("{:?}", first.display().to_string()),
            format!(
                "{{ sqlite = {:?}, postgres = {:?} }}",
                sqlite.display().to_string(),
                postgres.display().to_string()
            ),
        ];
        list.extend(
            extra
                .iter()
                .map(|p| format!("{:?}", p.display().to_string())),
        );
        format!("migrations = [{}]", list.join(", "))
    };
    let notes = || query("SELECT id, body FROM notes ORDER BY id", json!([]));
    let expected = |n: usize| {
        let all = [
            json!([int(1), text("first")]),
            json!([int(2), text(db.dialect())]),
            json!([int(3), text("third")]),
        ];
        Value::Array(all[..n].to_vec())
    };

    for run in 0..2 {
        let trellis = launch(manifest(&db, &[&migrations(&[])]), &[]).await;
        let results = script(&trellis, json!([notes()])).await;
        assert_eq!(ok(&results[0])["rows"], expected(2), "run {run}");
        drop(trellis);
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM trellis_migrations").await,
            2,
            "run {run}"
        );
    }
    let trellis = launch(manifest(&db, &[&migrations(&[&third])]), &[]).await;
    let results = script(&trellis, json!([notes()])).await;
    assert_eq!(ok(&results[0])["rows"], expected(3));
    drop(trellis);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM trellis_migrations").await,
        3
    );

    let dir = TempDir::new();
    let path = dir.write(
        "trellis.toml",
        &manifest(&db, &[&migrations(&[&third, &broken])]).render(),
    );
    let output = run_cli(
        &["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        dir.path(),
    )
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "served with a broken migration: {said}"
    );
    assert!(
        said.contains("004_broken.sql"),
        "the error names the file: {said}"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM trellis_migrations").await,
        3
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM notes").await, 3);
}
