//! The `rate-limit` capability (`wit/rate-limit.wit`): check-and-consume
//! on a named `[rate_limits]` policy with a key the guest chooses, in
//! buckets apart from the host's per-route limits.

use crate::bindings::trellis::api::rate_limit::{Decision, Error, Host};
use crate::store::StoreData;

/// Longest key a guest may pass, in bytes: keys are stored (in Redis too)
/// for up to a window, so they are bounded.
const MAX_KEY: usize = 512;

impl Host for StoreData {
    async fn check(
        &mut self,
        policy: String,
        key: String,
    ) -> wasmtime::Result<Result<Decision, Error>> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Ok(Err(Error::InvalidKey(format!(
                "a key is 1 to {MAX_KEY} bytes; this one is {}",
                key.len()
            ))));
        }
        let _span = self.guest().trace.child("rate_limit.check");
        let limiter = &self.guest().services.rate_limiter;
        Ok(match limiter.check_guest(&policy, &key).await {
            Ok(d) => Ok(Decision {
                allowed: d.allowed,
                limit: d.limit,
                remaining: d.remaining,
                reset_ms: millis(d.reset),
                retry_after_ms: millis(d.retry_after),
            }),
            Err(err) => Err(Error::UnknownPolicy(err.to_string())),
        })
    }
}

/// Milliseconds, rounded up, so a guest that waits `retry-after-ms` is
/// never early.
fn millis(d: std::time::Duration) -> u64 {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    micros.div_ceil(1000)
}
