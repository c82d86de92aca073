-- The emails the `mailer` worker has sent: one row per job, so a job
-- delivered twice (at-least-once) is still recorded once.
CREATE TABLE emails (
    job_id TEXT PRIMARY KEY,
    to_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    sent_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
