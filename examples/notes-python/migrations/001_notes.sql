-- The same statement on SQLite and PostgreSQL.
CREATE TABLE notes (text TEXT NOT NULL);
