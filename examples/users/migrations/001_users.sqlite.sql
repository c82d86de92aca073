-- The users table on SQLite: `created_at` is ISO 8601 text in UTC with
-- milliseconds, the same shape PostgreSQL's timestamptz is read back as.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
