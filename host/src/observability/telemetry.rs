//! Log output: human-readable by default, JSON lines with
//! `TRELLIS_LOG_FORMAT=json`, filtered by `TRELLIS_LOG` (default `info`).

use crate::config::env::Env;
use crate::observability::access_log;
use crate::observability::log_writer::{self, FlushGuard};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber and the access log. Lines are written by
/// a background thread, in batches, so a slow terminal or pipe never stalls
/// request handling; keep the guard alive until exit so the last lines are
/// flushed.
pub fn init(env: &Env) -> FlushGuard {
    let filter = env
        .log_filter
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = log_writer::spawn(std::io::stdout());
    let json = env.log_json;
    access_log::install(writer.clone(), json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(false).init();
    }
    guard
}

/// `url` with its password (if any) replaced by `***`: database and
/// Redis URLs go into logs, their credentials must not.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => {
                format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite:///a.db"), "sqlite:///a.db");
    }
}
