//! The `config` capability (`wit/config.wit`): a route's variables and
//! secrets, resolved from the manifest and the host's environment when the
//! manifest loads, so a request never touches the environment.

use crate::capabilities::bindings::api::config::{Error, Host};
use crate::capabilities::{View, trappable};
use crate::config::manifest::RouteConfig;
use crate::config::manifest::spec::valid_key;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::TrappableError;

/// The `config` error as a host function returns it: for the guest, or a
/// trap.
pub type ConfigError = TrappableError<Error>;

/// What `config` reaches: the route's resolved variables and secrets.
pub struct ConfigCtx {
    /// Resolved when the route loaded.
    pub values: Arc<RouteConfig>,
}

/// `config` for one instance.
pub type ConfigView<'a> = View<'a, ConfigCtx>;

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

/// Offers `trellis:api/config` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::config::add_to_linker::<T, HasConfig>(linker, view)
}

impl Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<String>, ConfigError> {
        valid_key(&key).map_err(Error::InvalidKey)?;
        Ok(self.ctx.values.get(&key).map(str::to_owned))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, ConfigError> {
        Ok(self
            .ctx
            .values
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    fn convert_error(&mut self, err: ConfigError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}
