//! A test environment for capability `Host` impls: services from a
//! manifest, a route spec and a resource table, so a test calls a
//! capability the way a guest would, without compiling one.

use super::{Caller, Capabilities, Services, View};
use crate::config::env::Env;
use crate::config::manifest::{Manifest, RouteSpec};
use crate::observability::trace::TraceContext;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::ResourceTable;

/// Services, one route's capabilities and one instance's table.
pub(crate) struct TestEnv {
    pub(crate) capabilities: Capabilities,
    pub(crate) caller: Caller,
    pub(crate) table: ResourceTable,
}

impl TestEnv {
    /// The first route of `manifest` (a `trellis.toml` text), without
    /// Redis: the cache and rate limits stay in process.
    pub(crate) fn new(manifest: &str) -> TestEnv {
        let dir = std::env::temp_dir();
        let manifest = Manifest::parse(manifest, Path::new("test.toml"), dir).expect("manifest");
        let spec: RouteSpec = manifest.routes[0].spec();
        let services = Services::new(&manifest, &Env::default()).expect("services");
        TestEnv {
            capabilities: Capabilities::new(&services, &spec),
            caller: Caller {
                route: spec.name.as_str().into(),
                component: "0123456789ab".into(),
                request_id: "test-request".into(),
                trace: Arc::new(TraceContext::from_request(None)),
                identity: None,
            },
            table: ResourceTable::new(),
        }
    }

    /// The view of the capability `pick` selects.
    pub(crate) fn view<C>(&mut self, pick: fn(&Capabilities) -> &C) -> View<'_, C> {
        View {
            ctx: pick(&self.capabilities),
            caller: &self.caller,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TestEnv;
    use crate::capabilities::bindings::api::{cache, config, identity, log, metrics, rate_limit};

    const MANIFEST: &str = r#"
[rate_limits.tight]
requests = 1
window = "1m"

[[route]]
path = "/t"
component = "t.wasm"
config = { page_size = "20" }
secrets = { token = "s3cret-value" }
"#;

    #[tokio::test]
    async fn config_answers_values_and_refuses_bad_keys() {
        use config::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.config);
        assert_eq!(
            view.get("page_size".into()).await.unwrap().as_deref(),
            Some("20")
        );
        assert_eq!(view.get("absent".into()).await.unwrap(), None);
        let err = view.get("bad key".into()).await.unwrap_err();
        assert!(matches!(
            view.convert_error(err).unwrap(),
            config::Error::InvalidKey(_)
        ));
        assert_eq!(view.get_all().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn log_refuses_oversized_records() {
        use log::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.log);
        view.write(log::Level::Info, "token s3cret-value".into(), vec![])
            .await
            .unwrap();
        let err = view
            .write(log::Level::Info, "x".repeat(20 << 10), vec![])
            .await
            .unwrap_err();
        assert!(matches!(
            view.convert_error(err).unwrap(),
            log::Error::TooLarge(_)
        ));
    }

    #[tokio::test]
    async fn cache_keys_are_bounded_and_values_round_trip() {
        use cache::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.cache);
        view.set("k".into(), b"v".to_vec(), 60_000).await.unwrap();
        assert_eq!(view.get("k".into()).await.unwrap(), Some(b"v".to_vec()));
        assert!(view.delete("k".into()).await.unwrap());
        let err = view.get(String::new()).await.unwrap_err();
        assert!(matches!(
            view.convert_error(err).unwrap(),
            cache::Error::InvalidKey(_)
        ));
    }

    #[tokio::test]
    async fn rate_limit_consumes_and_names_unknown_policies() {
        use rate_limit::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.rate_limit);
        assert!(
            view.check("tight".into(), "u1".into())
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !view
                .check("tight".into(), "u1".into())
                .await
                .unwrap()
                .allowed
        );
        let err = view.check("nope".into(), "u1".into()).await.unwrap_err();
        assert!(matches!(
            view.convert_error(err).unwrap(),
            rate_limit::Error::UnknownPolicy(_)
        ));
    }

    #[tokio::test]
    async fn metrics_reject_bad_names() {
        use metrics::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.metrics);
        view.counter_add("orders_total".into(), 1, vec![])
            .await
            .unwrap();
        let err = view
            .counter_add("Bad-Name".into(), 1, vec![])
            .await
            .unwrap_err();
        assert!(matches!(
            view.convert_error(err).unwrap(),
            metrics::Error::InvalidName(_)
        ));
    }

    #[tokio::test]
    async fn identity_is_the_verified_caller_or_none() {
        use identity::Host as _;
        let mut env = TestEnv::new(MANIFEST);
        let mut view = env.view(|c| &c.identity);
        assert!(view.current().await.unwrap().is_none());
        assert!(!view.has_scope("a".into()).await.unwrap());

        env.caller.identity = Some(std::sync::Arc::new(crate::services::auth::Identity {
            policy: "users".into(),
            subject: "alice".into(),
            scopes: vec!["users:read".into()],
            claims: vec![("email".into(), "\"a@example.com\"".into())],
        }));
        let mut view = env.view(|c| &c.identity);
        let caller = view.current().await.unwrap().expect("a caller");
        assert_eq!(caller.subject, "alice");
        assert_eq!(caller.policy, "users");
        assert_eq!(caller.scopes, ["users:read"]);
        assert_eq!(caller.claims[0].1, "\"a@example.com\"");
        assert!(view.has_scope("users:read".into()).await.unwrap());
        assert!(!view.has_scope("users:write".into()).await.unwrap());
    }
}
