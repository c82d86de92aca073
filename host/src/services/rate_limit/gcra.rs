//! The generic cell rate algorithm (GCRA), as pure arithmetic on
//! microseconds, shared by both backends.
//!
//! A bucket's whole state is one number, its theoretical arrival time
//! (TAT): when it would be empty again if no more requests came. Each
//! allowed request pushes it one emission interval `T = window / requests`
//! further; a request is refused when that would put it more than
//! `window` ahead of now. So an idle bucket allows exactly `requests` at
//! once, then one every `T`. `gcra.lua` is the same step in Lua, run
//! inside Redis; [`Gcra::decision`] interprets the outcome of either.

use super::Decision;
use std::time::Duration;

/// One policy's parameters, in microseconds (Redis `TIME`'s resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Requests allowed in a burst from an idle bucket.
    requests: u32,
    /// The emission interval `T`, rounded up to the microsecond so the
    /// configured rate is never exceeded; at least 1.
    interval: u64,
    /// `requests × interval`: how far ahead of now the TAT may get. Equal
    /// to the configured window, or at most `requests` µs longer after the
    /// rounding of `interval`.
    window: u64,
}

/// What one check did to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Whether the request was allowed (and counted).
    pub(crate) allowed: bool,
    /// The TAT after the check, which is unchanged by a refusal.
    pub(crate) tat: u64,
}

impl Gcra {
    /// `requests` per `window`; both are at least 1 (the manifest checks).
    pub(crate) fn new(requests: u32, window: Duration) -> Gcra {
        let requests = requests.max(1);
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let interval = window_us.div_ceil(u64::from(requests)).max(1);
        Gcra {
            requests,
            interval,
            window: interval.saturating_mul(u64::from(requests)),
        }
    }

    /// The emission interval in microseconds (an argument of the script).
    pub(crate) fn interval_us(&self) -> u64 {
        self.interval
    }

    /// How far ahead of now a TAT may get, in microseconds (an argument
    /// of the script).
    pub(crate) fn window_us(&self) -> u64 {
        self.window
    }

    /// One check at `now` of a bucket whose stored TAT is `tat` (`None`
    /// for a bucket never seen or expired, which is the same as idle).
    pub(crate) fn step(&self, tat: Option<u64>, now: u64) -> Step {
        let tat = tat.unwrap_or(now).max(now);
        let next = tat.saturating_add(self.interval);
        if next - now > self.window {
            Step {
                allowed: false,
                tat,
            }
        } else {
            Step {
                allowed: true,
                tat: next,
            }
        }
    }

    /// The decision for a check that left the bucket's TAT `ahead` µs
    /// after now.
    pub(crate) fn decision(&self, allowed: bool, ahead: u64) -> Decision {
        // Whole intervals left before the TAT would pass now + window: the
        // requests that could still go through at once.
        let remaining = self.window.saturating_sub(ahead) / self.interval;
        let retry_after = if allowed {
            0
        } else {
            (ahead + self.interval).saturating_sub(self.window)
        };
        Decision {
            allowed,
            limit: self.requests,
            remaining: u32::try_from(remaining)
                .unwrap_or(u32::MAX)
                .min(self.requests),
            reset: Duration::from_micros(ahead),
            retry_after: Duration::from_micros(retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// Runs checks at the given times against one bucket, returning the
    /// decisions.
    fn run(gcra: &Gcra, times: &[u64]) -> Vec<Decision> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let step = gcra.step(tat, now);
                tat = Some(step.tat);
                gcra.decision(step.allowed, step.tat - now)
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_allows_exactly_the_burst_then_one_per_interval() {
        // 100 per minute: T = 600 ms.
        let gcra = Gcra::new(100, Duration::from_secs(60));
        assert_eq!(gcra.interval_us(), 600 * MS);
        let now = 1_000_000 * MS;
        let burst = run(&gcra, &[now; 101]);
        assert!(burst[..100].iter().all(|d| d.allowed));
        let remaining: Vec<u32> = burst[..100].iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, (0..100).rev().collect::<Vec<_>>());
        let refused = burst[100];
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.limit, 100);
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert_eq!(refused.reset, Duration::from_secs(60));

        // Then one every 600 ms, and not a microsecond sooner.
        let mut tat = Some(now + 60_000 * MS);
        for i in 1..=5 {
            let t = now + i * 600 * MS;
            let early = gcra.step(tat, t - 1);
            assert!(!early.allowed, "check {i} one µs early");
            assert_eq!(
                gcra.decision(false, early.tat - (t - 1)).retry_after,
                Duration::from_micros(1)
            );
            let on_time = gcra.step(tat, t);
            assert!(on_time.allowed, "check {i} on time");
            assert_eq!(gcra.decision(true, on_time.tat - t).remaining, 0);
            tat = Some(on_time.tat);
        }
    }

    #[test]
    fn an_idle_bucket_refills_fully_after_one_window() {
        let gcra = Gcra::new(3, Duration::from_secs(3));
        let decisions = run(&gcra, &[0, 0, 0, 0, 1_000 * MS, 1_000 * MS, 10_000 * MS]);
        let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, true, true, false, true, false, true]);
        // Long idle: back to a full bucket, so this one leaves 2.
        assert_eq!(decisions[6].remaining, 2);
        assert_eq!(decisions[6].reset, Duration::from_secs(1));
        // Half an interval in, a partly refilled bucket still has nothing
        // to spare.
        let half = run(&gcra, &[0, 0, 0, 500 * MS]);
        assert!(!half[3].allowed);
        assert_eq!(half[3].retry_after, Duration::from_millis(500));
        assert_eq!(half[3].reset, Duration::from_millis(2_500));
    }

    #[test]
    fn uneven_windows_round_the_interval_up_and_keep_the_burst_exact() {
        // 7 per minute: T = 8571428.57 µs, rounded up.
        let gcra = Gcra::new(7, Duration::from_secs(60));
        assert_eq!(gcra.interval_us(), 8_571_429);
        assert_eq!(gcra.window_us(), 7 * 8_571_429);
        let burst = run(&gcra, &[0; 8]);
        assert_eq!(burst.iter().filter(|d| d.allowed).count(), 7);

        // More requests than microseconds in the window: T is 1 µs, and
        // the burst is still exactly `requests`.
        let tiny = Gcra::new(10, Duration::from_micros(3));
        assert_eq!(tiny.interval_us(), 1);
        assert_eq!(
            run(&tiny, &[5; 11]).iter().filter(|d| d.allowed).count(),
            10
        );
    }

    #[test]
    fn a_policy_of_one_alternates() {
        let gcra = Gcra::new(1, Duration::from_secs(1));
        let allowed: Vec<bool> = run(&gcra, &[0, 999_999, 1_000_000, 1_500_000, 2_000_000])
            .iter()
            .map(|d| d.allowed)
            .collect();
        assert_eq!(allowed, [true, false, true, false, true]);
    }

    #[test]
    fn a_tat_beyond_the_window_saturates_instead_of_wrapping() {
        // A stored TAT further ahead than this policy's window (the policy
        // shrank on reload, or another host's clock ran ahead) refuses
        // with sane numbers rather than overflowing.
        let gcra = Gcra::new(2, Duration::from_secs(2));
        let step = gcra.step(Some(100 * 1_000 * MS), 0);
        assert!(!step.allowed);
        let d = gcra.decision(step.allowed, step.tat);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_secs(99));
    }
}
