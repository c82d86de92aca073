//! The access log: one line per request, written straight into the same
//! non-blocking log writer as every other line and in the same shape (text,
//! or JSON with `TRELLIS_LOG_FORMAT=json`), but without going through
//! tracing's generic formatter, which cost more per request than a guest's
//! whole instantiation.
//!
//! Filtering still follows `TRELLIS_LOG`: the line is written only if an
//! `INFO` event with target `trellis::request` would be.

use crate::observability::log_writer::LogWriter;
use http::Method;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where lines go, and in which shape; set once at startup.
struct Sink {
    writer: LogWriter,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access-log lines to `writer`, as JSON when `json` is set.
pub fn install(writer: LogWriter, json: bool) {
    let _ = SINK.set(Sink { writer, json });
}

/// One finished request.
pub struct Entry<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The trace the request belongs to.
    pub trace_id: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request path (no query: it may carry secrets).
    pub path: &'a str,
    /// The route that served it, if any.
    pub route: Option<&'a str>,
    /// The digest of the component that served it, if any.
    pub component: Option<&'a str>,
    /// The route version that served it, if any.
    pub version: Option<u32>,
    /// The response status.
    pub status: u16,
    /// Time to the response head.
    pub duration: Duration,
    /// Time the guest spent in upstream calls before the response head,
    /// if it made any.
    pub upstream: Option<Duration>,
}

/// Writes `entry`, if the access log is installed and enabled.
pub fn record(entry: &Entry<'_>) {
    let Some(sink) = SINK.get() else { return };
    if !tracing::enabled!(target: "trellis::request", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        if sink.json {
            format_json(line, entry);
        } else {
            format_text(line, entry);
        }
        // The writer only queues the line for the log thread.
        sink.writer.line(line.as_bytes());
    });
}

fn format_text(out: &mut String, e: &Entry<'_>) {
    timestamp(out, SystemTime::now());
    out.push_str("  INFO trellis::request: request request_id=");
    out.push_str(e.request_id);
    out.push_str(" trace_id=");
    out.push_str(e.trace_id);
    out.push_str(" method=");
    out.push_str(e.method.as_str());
    out.push_str(" path=");
    out.push_str(e.path);
    if let Some(route) = e.route {
        out.push_str(" route=");
        debug_str(out, route);
    }
    if let Some(component) = e.component {
        out.push_str(" component=");
        debug_str(out, component);
    }
    if let Some(version) = e.version {
        out.push_str(" version=");
        push_int(out, version.into(), 1);
    }
    out.push_str(" status=");
    push_int(out, e.status.into(), 1);
    out.push_str(" duration_ms=");
    push_millis(out, e.duration);
    if let Some(upstream) = e.upstream {
        out.push_str(" upstream_ms=");
        push_millis(out, upstream);
    }
    out.push('\n');
}

fn format_json(out: &mut String, e: &Entry<'_>) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out, SystemTime::now());
    out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":");
    json_str(out, e.request_id);
    out.push_str(",\"trace_id\":");
    json_str(out, e.trace_id);
    out.push_str(",\"method\":");
    json_str(out, e.method.as_str());
    out.push_str(",\"path\":");
    json_str(out, e.path);
    if let Some(route) = e.route {
        out.push_str(",\"route\":");
        json_str(out, route);
    }
    if let Some(component) = e.component {
        out.push_str(",\"component\":");
        json_str(out, component);
    }
    if let Some(version) = e.version {
        out.push_str(",\"version\":");
        push_int(out, version.into(), 1);
    }
    if let Some(upstream) = e.upstream {
        out.push_str(",\"upstream_ms\":");
        push_millis(out, upstream);
    }
    out.push_str(",\"status\":");
    push_int(out, e.status.into(), 1);
    out.push_str(",\"duration_ms\":");
    push_millis(out, e.duration);
    out.push_str(",\"target\":\"trellis::request\"}\n");
}

/// Appends `n` in decimal, zero-padded to `width` digits. The line is
/// built without `core::fmt`, whose machinery was most of its cost.
fn push_int(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width.max(1) {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or("?"));
}

/// Appends `d` as milliseconds to the microsecond (`0.028`, not
/// `0.028000999999999998`), without float formatting.
fn push_millis(out: &mut String, d: Duration) {
    let micros = d.as_micros().min(u64::MAX.into()) as u64;
    push_int(out, micros / 1000, 1);
    out.push('.');
    push_int(out, micros % 1000, 3);
}

/// Appends `s` quoted as `{:?}` shows it; names and digests need no
/// escapes, so those skip the formatter.
fn debug_str(out: &mut String, s: &str) {
    /// The bytes `{:?}` shows as they are, by table: one load per byte,
    /// where the range tests cost several on every request's digest.
    static PLAIN: [bool; 256] = {
        let mut plain = [false; 256];
        let mut b = b' ';
        while b <= b'~' {
            plain[b as usize] = b != b'"' && b != b'\\';
            b += 1;
        }
        plain
    };
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `t` as RFC 3339 UTC with microseconds, like tracing's own lines.
/// The date and time to the second are formatted once a second (per
/// thread) and copied after that.
fn timestamp(out: &mut String, t: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, shown)| {
        if *second != since.as_secs() {
            use chrono::{Datelike as _, Timelike as _};
            let t = chrono::DateTime::<chrono::Utc>::from(t);
            shown.clear();
            let _ = write!(
                shown,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            );
            *second = since.as_secs();
        }
        out.push_str(shown);
    });
    out.push('.');
    push_int(out, since.subsec_micros().into(), 6);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_calendar() {
        let mut s = String::new();
        timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_999_808_123_456),
        );
        assert_eq!(s, "2026-11-30T00:50:08.123456Z");
        s.clear();
        timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
        // The same second again, then the next: the cached part holds,
        // then moves on.
        for (micros, shown) in [
            (999_999, "2000-02-29T00:00:00.999999Z"),
            (1_000_007, "2000-02-29T00:00:01.000007Z"),
        ] {
            s.clear();
            timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(951_782_400) + Duration::from_micros(micros),
            );
            assert_eq!(s, shown);
        }
    }

    #[test]
    fn quoted_fields_are_shown_as_debug_shows_them() {
        for field in [
            "users-item",
            "a b",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "del\x7f",
            "~tilde",
            "é",
            "",
        ] {
            let mut s = String::new();
            debug_str(&mut s, field);
            assert_eq!(s, format!("{field:?}"));
        }
        let mut s = String::new();
        push_int(&mut s, 0, 1);
        push_int(&mut s, 42, 3);
        push_int(&mut s, u64::MAX, 1);
        assert_eq!(s, format!("0042{}", u64::MAX));
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        let shown = |d| {
            let mut s = String::new();
            push_millis(&mut s, d);
            s
        };
        assert_eq!(shown(Duration::from_nanos(28_001)), "0.028");
        assert_eq!(shown(Duration::from_micros(1500)), "1.500");
        assert_eq!(shown(Duration::from_secs(61)), "61000.000");
    }

    #[test]
    fn json_lines_parse_and_escape() {
        let mut s = String::new();
        let entry = Entry {
            request_id: "a\"b\\c",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            method: &Method::GET,
            path: "/x",
            route: Some("r"),
            component: None,
            version: Some(3),
            status: 404,
            duration: Duration::from_micros(1500),
            upstream: Some(Duration::from_micros(250)),
        };
        format_json(&mut s, &entry);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["request_id"], "a\"b\\c");
        assert_eq!(v["status"], 404);
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["route"], "r");
        assert!(v.get("component").is_none());
        assert_eq!(v["version"], 3);
        assert_eq!(v["upstream_ms"], 0.25);
        assert_eq!(v["message"], "request");
        let mut text = String::new();
        format_text(&mut text, &entry);
        assert!(
            text.ends_with(" duration_ms=1.500 upstream_ms=0.250\n"),
            "{text}"
        );
    }
}
