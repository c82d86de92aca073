//! The route table: path patterns to routes, each with its component and
//! limits.

use crate::component::Handler;
use crate::manifest::Limits;
use http::{HeaderValue, Method};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One route, ready to serve.
pub struct Route {
    /// Name used in logs, metrics and the admin API.
    pub name: Arc<str>,
    /// Methods served; `None` means all.
    methods: Option<Vec<Method>>,
    /// Limits applied to each request.
    pub limits: Limits,
    /// The component serving this route.
    pub handler: Arc<Handler>,
    /// `x-trellis-component` value: `route@digest-prefix`.
    pub label: HeaderValue,
    /// Caps requests in flight at `limits.max_concurrency`; shared by all
    /// requests on the route for the life of the route.
    slots: Arc<Semaphore>,
}

impl Route {
    /// A route named `name` serving `handler`.
    pub fn new(
        name: &str,
        methods: Option<Vec<Method>>,
        limits: Limits,
        handler: Arc<Handler>,
    ) -> Route {
        let label = format!("{name}@{}", &handler.digest[..12]);
        Route {
            name: name.into(),
            methods,
            slots: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            limits,
            label: HeaderValue::from_str(&label).unwrap_or(HeaderValue::from_static("invalid")),
            handler,
        }
    }

    /// Whether `method` is served here.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// The `Allow` header for a 405.
    pub fn allow_header(&self) -> String {
        match &self.methods {
            Some(methods) => methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            None => "*".to_owned(),
        }
    }

    /// Waits up to `queue_timeout` for a slot; `None` means overloaded.
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let wait: Duration = self.limits.queue_timeout.0;
        tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// All routes, matched by path.
#[derive(Default)]
pub struct RouteTable {
    paths: matchit::Router<usize>,
    routes: Vec<Route>,
}

impl RouteTable {
    /// Adds `route` at `path`.
    pub fn insert(&mut self, path: &str, route: Route) -> Result<(), matchit::InsertError> {
        self.paths.insert(path, self.routes.len())?;
        self.routes.push(route);
        Ok(())
    }

    /// The route whose pattern matches `path`.
    pub fn lookup(&self, path: &str) -> Option<&Route> {
        let matched = self.paths.at(path).ok()?;
        self.routes.get(*matched.value)
    }

    /// Every route, in manifest order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}
