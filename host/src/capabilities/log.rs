//! The `log` capability (`wit/log.wit`): guest records go into the host's
//! log under target `guest`, with the route, component digest and request
//! id attached and the route's secrets masked.

use crate::capabilities::bindings::api::log::{Error, Host, Level};
use crate::capabilities::{View, trappable};
use crate::config::manifest::RouteConfig;
use std::sync::Arc;
use tracing::Level as TracingLevel;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::TrappableError;

/// Largest record (message plus fields) a guest may write: bigger ones are
/// refused rather than truncated, so nothing misleading reaches the log.
const MAX_RECORD: usize = 16 << 10;

/// What a secret's value is replaced with.
const MASK: &str = "[redacted]";

/// The `log` error as a host function returns it: for the guest, or a
/// trap.
pub type LogError = TrappableError<Error>;

/// What `log` reaches: the route's secrets, masked in every record.
pub struct LogCtx {
    /// The route's variables; the secret ones are masked.
    pub config: Arc<RouteConfig>,
}

/// `log` for one instance.
pub type LogView<'a> = View<'a, LogCtx>;

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogView<'a>;
}

/// Offers `trellis:api/log` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> LogView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::log::add_to_linker::<T, HasLog>(linker, view)
}

impl Host for LogView<'_> {
    async fn enabled(&mut self, level: Level) -> wasmtime::Result<bool> {
        Ok(match level {
            Level::Trace => tracing::enabled!(target: "guest", TracingLevel::TRACE),
            Level::Debug => tracing::enabled!(target: "guest", TracingLevel::DEBUG),
            Level::Info => tracing::enabled!(target: "guest", TracingLevel::INFO),
            Level::Warn => tracing::enabled!(target: "guest", TracingLevel::WARN),
            Level::Error => tracing::enabled!(target: "guest", TracingLevel::ERROR),
        })
    }

    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> Result<(), LogError> {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > MAX_RECORD {
            return Err(Error::TooLarge(MAX_RECORD as u32).into());
        }
        let guest = self.caller;
        let mask = |text: &str| mask_secrets(text, self.ctx.config.secret_values());
        let message = mask(&message);
        let fields: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), mask(v).into()))
            .collect();
        let fields = serde_json::Value::Object(fields).to_string();
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "guest",
                    $level,
                    route = %guest.route,
                    component = %guest.component,
                    request_id = %guest.request_id,
                    trace_id = %guest.trace.trace_id,
                    fields = %fields,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(TracingLevel::TRACE),
            Level::Debug => emit!(TracingLevel::DEBUG),
            Level::Info => emit!(TracingLevel::INFO),
            Level::Warn => emit!(TracingLevel::WARN),
            Level::Error => emit!(TracingLevel::ERROR),
        }
        Ok(())
    }

    fn convert_error(&mut self, err: LogError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}

/// `text` with every occurrence of each secret replaced by [`MASK`].
pub fn mask_secrets<'a>(text: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let mut masked = text.to_owned();
    for secret in secrets {
        if masked.contains(secret) {
            masked = masked.replace(secret, MASK);
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_of_every_secret() {
        let masked = mask_secrets(
            "token=abc123 again abc123, pw hunter2",
            ["abc123", "hunter2"].into_iter(),
        );
        assert_eq!(masked, "token=[redacted] again [redacted], pw [redacted]");
        assert_eq!(
            mask_secrets("nothing here", ["abc123"].into_iter()),
            "nothing here"
        );
    }
}
