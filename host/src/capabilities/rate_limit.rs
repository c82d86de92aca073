//! The `rate-limit` capability (`wit/rate-limit.wit`): check-and-consume
//! on a named `[rate_limits]` policy with a key the guest chooses, in
//! buckets apart from the host's per-route limits.

use crate::capabilities::bindings::api::rate_limit::{Decision, Error, Host};
use crate::capabilities::{View, trappable};
use crate::services::rate_limit::RateLimiter;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::TrappableError;

/// Longest key a guest may pass, in bytes: keys are stored (in Redis too)
/// for up to a window, so they are bounded.
const MAX_KEY: usize = 512;

/// The `rate-limit` error as a host function returns it: for the guest, or a
/// trap.
pub type RateLimitError = TrappableError<Error>;

/// What `rate-limit` reaches: the `[rate_limits]` policies and buckets.
pub struct RateLimitCtx {
    /// Shared with the host's per-route limits (in other buckets).
    pub limiter: Arc<RateLimiter>,
}

/// `rate-limit` for one instance.
pub type RateLimitView<'a> = View<'a, RateLimitCtx>;

struct HasRateLimit;

impl HasData for HasRateLimit {
    type Data<'a> = RateLimitView<'a>;
}

/// Offers `trellis:api/rate-limit` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> RateLimitView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::rate_limit::add_to_linker::<T, HasRateLimit>(linker, view)
}

impl Host for RateLimitView<'_> {
    async fn check(&mut self, policy: String, key: String) -> Result<Decision, RateLimitError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::InvalidKey(format!(
                "a key is 1 to {MAX_KEY} bytes; this one is {}",
                key.len()
            ))
            .into());
        }
        let _span = self.caller.trace.child("rate_limit.check");
        match self.ctx.limiter.check_guest(&policy, &key).await {
            Ok(d) => Ok(Decision {
                allowed: d.allowed,
                limit: d.limit,
                remaining: d.remaining,
                reset_ms: millis(d.reset),
                retry_after_ms: millis(d.retry_after),
            }),
            Err(err) => Err(Error::UnknownPolicy(err.to_string()).into()),
        }
    }

    fn convert_error(&mut self, err: RateLimitError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}

/// Milliseconds, rounded up, so a guest that waits `retry-after-ms` is
/// never early.
fn millis(d: std::time::Duration) -> u64 {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    micros.div_ceil(1000)
}
