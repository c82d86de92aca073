//! `POST /emails` of `examples/jobs`: takes `{"to": "...", "subject":
//! "..."}`, enqueues it on the queue `email` and answers 202 with the
//! job's id. The `mailer` worker does the work.

use serde::Deserialize;
use trellis_sdk::{Error, Handler, Request, Response, queue};

struct Emails;

#[derive(Deserialize)]
struct Email {
    to: String,
    subject: String,
}

impl Handler for Emails {
    fn handle(request: Request) -> Result<Response, Error> {
        if request.method() != "POST" {
            return Err(Error::method_not_allowed(&["POST"]));
        }
        let email: Email = request.json()?;
        if !email.to.contains('@') || email.to.len() > 254 {
            return Err(Error::invalid("to", "must be an email address"));
        }
        if email.subject.is_empty() || email.subject.len() > 200 {
            return Err(Error::invalid("subject", "must be 1 to 200 bytes"));
        }
        let payload = serde_json::json!({ "to": email.to, "subject": email.subject });
        let id = queue::enqueue("email", payload.to_string().as_bytes())?;
        Ok(Response::json(&serde_json::json!({ "job": id })).with_status(202))
    }
}

trellis_sdk::export!(Emails);
