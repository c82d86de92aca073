//! The worker of `examples/jobs`: "sends" each email job by recording it
//! in the `emails` table, once per job even when a job is delivered twice
//! (at-least-once delivery). Mail to `fail@example.com` always fails, so
//! the example shows retries and the dead letter.

use serde::Deserialize;
use trellis_sdk::{Job, Worker, log, sql};

struct Mailer;

#[derive(Deserialize)]
struct Email {
    to: String,
    subject: String,
}

impl Worker for Mailer {
    fn process(job: Job) -> Result<(), String> {
        let email: Email = job.json().map_err(|e| format!("payload: {e}"))?;
        if email.to == "fail@example.com" {
            log::warn(
                "mailbox refuses mail",
                &[("to", &email.to), ("attempt", &job.attempt)],
            );
            return Err(format!("the mailbox {} refuses all mail", email.to));
        }
        let attempt = i64::from(job.attempt);
        sql::execute(
            "INSERT INTO emails (job_id, to_address, subject, attempt) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id) DO NOTHING",
            &[&job.id, &email.to, &email.subject, &attempt],
        )
        .map_err(|e| format!("recording the email: {}", sql::describe(&e)))?;
        log::info("email sent", &[("to", &email.to)]);
        Ok(())
    }
}

trellis_sdk::export_worker!(Mailer);
