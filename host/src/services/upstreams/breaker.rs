//! The circuit breaker of one upstream: CLOSED until `failures` failures
//! fall within `window`, then OPEN (calls fail at once, the network is not
//! touched) for `open_for`, then HALF-OPEN: one probe goes through, and
//! its result closes the breaker or opens it again.
//!
//! Pure state and time passed in, so the transitions are unit-tested
//! without sleeping.

use crate::config::manifest::BreakerSettings;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The breaker's state, as `trellis_upstream_breaker_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe is (or may be) in flight; other calls fail at once.
    HalfOpen,
}

impl State {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half-open`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

/// What a call may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as the half-open probe: report its result.
    Probe,
    /// Fail at once.
    Rejected,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    window: Duration,
    open_for: Duration,
    /// Failure times within the window, while closed.
    recent: VecDeque<Instant>,
    /// Set while open: when the next probe may go.
    open_until: Option<Instant>,
    /// Set while half-open: whether the probe is in flight.
    probing: Option<bool>,
}

impl Breaker {
    /// A closed breaker with `settings`.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            failures: settings.failures.max(1),
            window: settings.window.0,
            open_for: settings.open_for.0,
            recent: VecDeque::new(),
            open_until: None,
            probing: None,
        }
    }

    /// The current state (an open breaker whose time is up reads
    /// half-open).
    pub fn state(&self, now: Instant) -> State {
        match (self.open_until, self.probing) {
            (Some(until), _) if now < until => State::Open,
            (Some(_), _) | (None, Some(_)) => State::HalfOpen,
            (None, None) => State::Closed,
        }
    }

    /// Whether a call may go now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state(now) {
            State::Closed => Admission::Allowed,
            State::Open => Admission::Rejected,
            State::HalfOpen => {
                if self.probing == Some(true) {
                    return Admission::Rejected;
                }
                self.open_until = None;
                self.probing = Some(true);
                Admission::Probe
            }
        }
    }

    /// Records a call's result; returns the new state when it changed.
    pub fn record(&mut self, now: Instant, admission: Admission, failed: bool) -> Option<State> {
        let before = self.state(now);
        match admission {
            Admission::Rejected => return None,
            Admission::Probe if failed => self.open(now),
            Admission::Probe => {
                self.probing = None;
                self.recent.clear();
            }
            Admission::Allowed if failed && before == State::Closed => {
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.window)
                {
                    self.recent.pop_front();
                }
                self.recent.push_back(now);
                if self.recent.len() >= self.failures as usize {
                    self.open(now);
                }
            }
            Admission::Allowed => {}
        }
        let after = self.state(now);
        (after != before).then_some(after)
    }

    /// A probe that ended without a result (its caller went away): the
    /// next call may probe instead.
    pub fn abandon_probe(&mut self) {
        if self.probing == Some(true) {
            self.probing = Some(false);
        }
    }

    fn open(&mut self, now: Instant) {
        self.recent.clear();
        self.probing = None;
        self.open_until = Some(now + self.open_for);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            window: units::Duration(Duration::from_secs(10)),
            open_for: units::Duration(Duration::from_secs(30)),
        })
    }

    #[test]
    fn opens_after_failures_within_the_window_then_probes_once() {
        let t0 = Instant::now();
        let mut b = breaker();
        let s = Duration::from_secs;
        assert_eq!(b.admit(t0), Admission::Allowed);
        assert_eq!(b.record(t0, Admission::Allowed, true), None);
        // A failure outside the window no longer counts.
        assert_eq!(b.record(t0 + s(11), Admission::Allowed, true), None);
        assert_eq!(b.record(t0 + s(12), Admission::Allowed, false), None);
        assert_eq!(b.record(t0 + s(13), Admission::Allowed, true), None);
        assert_eq!(
            b.record(t0 + s(14), Admission::Allowed, true),
            Some(State::Open)
        );
        assert_eq!(b.admit(t0 + s(20)), Admission::Rejected);
        assert_eq!(b.state(t0 + s(44)), State::HalfOpen);
        assert_eq!(b.admit(t0 + s(44)), Admission::Probe);
        assert_eq!(b.admit(t0 + s(44)), Admission::Rejected);
        // A failed probe opens it again for open_for.
        assert_eq!(
            b.record(t0 + s(45), Admission::Probe, true),
            Some(State::Open)
        );
        assert_eq!(b.admit(t0 + s(74)), Admission::Rejected);
        assert_eq!(b.admit(t0 + s(75)), Admission::Probe);
        assert_eq!(
            b.record(t0 + s(75), Admission::Probe, false),
            Some(State::Closed)
        );
        assert_eq!(b.admit(t0 + s(75)), Admission::Allowed);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(t0, Admission::Allowed, true);
        }
        let later = t0 + Duration::from_secs(31);
        assert_eq!(b.admit(later), Admission::Probe);
        b.abandon_probe();
        assert_eq!(b.admit(later), Admission::Probe);
    }
}
