//! Test plugin: any request is answered with the verified caller as
//! `trellis:api/identity` reports it, and the request headers whose names
//! start with `x-trellis-` or are `authorization`, so tests can see what
//! reached the guest:
//!
//! `{"caller": null | {"policy", "subject", "scopes", "claims": {..}},
//!   "has_scope_read": bool, "headers": {...}, "method": "...", "body": "..."}`

use serde_json::{Map, Value, json};
use trellis_sdk::{Error, Handler, Request, Response, identity};

struct Probe;

impl Handler for Probe {
    fn handle(request: Request) -> Result<Response, Error> {
        let caller = identity::current().map(|c| {
            let claims: Map<String, Value> = c
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
                .collect();
            json!({
                "policy": c.policy,
                "subject": c.subject,
                "scopes": c.scopes,
                "claims": claims,
            })
        });
        let headers: Map<String, Value> = request
            .headers()
            .iter()
            .filter(|(k, _)| k.starts_with("x-trellis-") || k == "authorization")
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let body = String::from_utf8_lossy(request.body()?).into_owned();
        Ok(Response::json(&json!({
            "caller": caller,
            "has_scope_read": identity::current().is_some_and(|c| c.has_scope("read")),
            "headers": headers,
            "method": request.method().to_owned(),
            "body": body,
        })))
    }
}

trellis_sdk::export!(Probe);
