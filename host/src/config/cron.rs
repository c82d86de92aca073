//! Cron expressions for `[[schedule]]`: the classic five fields (minute,
//! hour, day of month, month, day of week) or six with seconds first, in
//! UTC. Each field is `*`, a number, a range `a-b`, a step `*/n` or
//! `a-b/n`, or a comma-separated list of those; day of week is 0-7 with
//! both 0 and 7 Sunday. As in Vixie cron, when both day fields are
//! restricted a day matching either one fires.
//!
//! Written here rather than taken from a crate: the subset is about 150
//! lines, and the crates in reach pull in time-zone databases or parser
//! combinators the host does not otherwise need. Names (`MON`, `JAN`) and
//! the `L`, `W`, `#`, `?` extensions are refused with a clear message.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day of month / day of week were `*` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

/// The fields in order, with their ranges.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let parts: Vec<&str> = match parts.len() {
            5 => std::iter::once("0").chain(parts).collect(),
            6 => parts,
            n => {
                return Err(format!(
                    "{text:?} has {n} fields; a cron expression has 5 (minute hour day month weekday) or 6 (second first)"
                ));
            }
        };
        let mut masks = [0u64; 6];
        for (i, part) in parts.iter().enumerate() {
            let (name, lo, hi) = FIELDS[i];
            masks[i] =
                field(part, lo, hi).map_err(|why| format!("{name} field {part:?}: {why}"))?;
        }
        // Sunday is both 0 and 7.
        let weekdays = if masks[5] & (1 << 7) != 0 {
            (masks[5] | 1) & !(1 << 7)
        } else {
            masks[5]
        };
        Ok(Cron {
            seconds: masks[0],
            minutes: masks[1],
            hours: masks[2],
            days: masks[3],
            months: masks[4],
            weekdays,
            any_day: parts[3] == "*",
            any_weekday: parts[5] == "*",
        })
    }
}

/// The bit set of one field.
fn field(text: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = number(step)?;
                if step == 0 {
                    return Err("a step must be at least 1".into());
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let n = number(range)?;
            // `5/15` means from 5 to the end, every 15.
            (n, if item.contains('/') { hi } else { n })
        };
        if from < lo || to > hi || from > to {
            return Err(format!("{from}-{to} is outside {lo}-{hi}"));
        }
        let mut v = from;
        while v <= to {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok(mask)
}

fn number(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a number (use numbers, *, a-b, */n and lists; names like MON are not supported)"
        ));
    }
    text.parse().map_err(|_| format!("{text:?} is too large"))
}

impl Cron {
    /// The first tick strictly after `after`, in whole seconds; `None`
    /// for an expression that never fires (`0 0 31 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = DateTime::from_timestamp(after.timestamp() + 1, 0)?;
        // Every step moves to the start of the next month, day, hour,
        // minute or second, so this bounds a search over about 5 years.
        for _ in 0..200_000 {
            if !bit(self.months, t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            if !self.day_matches(t) {
                t = (t.date_naive() + Duration::days(1))
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            if !bit(self.hours, t.hour()) {
                t = t.with_minute(0)?.with_second(0)? + Duration::hours(1);
                continue;
            }
            if !bit(self.minutes, t.minute()) {
                t = t.with_second(0)? + Duration::minutes(1);
                continue;
            }
            if !bit(self.seconds, t.second()) {
                t += Duration::seconds(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    fn day_matches(&self, t: DateTime<Utc>) -> bool {
        let day = bit(self.days, t.day());
        let weekday = bit(self.weekdays, t.weekday().num_days_from_sunday());
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        }
    }
}

fn bit(mask: u64, v: u32) -> bool {
    mask & (1 << v) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(cron: &str, after: &str) -> String {
        let cron: Cron = cron.parse().unwrap();
        cron.next_after(at(after)).unwrap().to_rfc3339()
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            next("0 3 * * *", "2026-11-30T18:00:00Z"),
            "2026-12-01T03:00:00+00:00"
        );
        assert_eq!(
            next("* * * * * *", "2026-11-30T18:00:00Z"),
            "2026-11-30T18:00:01+00:00"
        );
        assert_eq!(
            next("*/15 * * * * *", "2026-11-30T18:00:14Z"),
            "2026-11-30T18:00:15+00:00"
        );
        assert_eq!(
            next("*/5 * * * *", "2026-11-30T18:03:10Z"),
            "2026-11-30T18:05:00+00:00"
        );
        assert_eq!(
            next("0 0 1 1 *", "2026-11-30T18:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("30 9 * * 1-5", "2026-11-28T10:00:00Z"),
            "2026-11-30T09:30:00+00:00"
        );
        // Sunday as 7; either day field matches when both are restricted.
        assert_eq!(
            next("0 0 * * 7", "2026-11-30T00:00:00Z"),
            "2026-12-06T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * 0", "2026-11-30T00:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 12 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T12:00:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * * *", "2026-11-30T18:00:06Z"),
            "2026-11-30T18:00:25+00:00"
        );
        assert!(
            "0 0 31 2 *"
                .parse::<Cron>()
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn bad_expressions_say_which_field() {
        for (text, says) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "minute field \"60\""),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day of month field"),
            ("* * * 13 *", "month field"),
            ("* * * * 8", "day of week field"),
            ("* * * * MON", "names like MON"),
            ("*/0 * * * *", "step must be at least 1"),
            ("5-1 * * * *", "outside"),
            ("61 * * * * *", "second field"),
            ("", "has 0 fields"),
        ] {
            let err = text.parse::<Cron>().unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
