//! Building the `trellis.toml` a host serves: `[server]`, `[database]`,
//! raw sections and `[[route]]` entries, or a whole manifest as text.

use std::fmt::Write as _;

/// A `trellis.toml` under construction.
#[derive(Clone)]
pub(crate) struct Manifest {
    listen: String,
    server: String,
    database: String,
    sections: String,
    routes: String,
    /// A whole manifest given as text, rendered as it is.
    raw: Option<String>,
}

impl Manifest {
    pub(crate) fn new() -> Manifest {
        Manifest {
            listen: "127.0.0.1:0".to_owned(),
            server: String::new(),
            database: String::new(),
            sections: String::new(),
            routes: String::new(),
            raw: None,
        }
    }

    /// A manifest that is exactly `text` (e.g. an example's, adapted).
    pub(crate) fn raw(text: &str) -> Manifest {
        Manifest {
            raw: Some(text.to_owned()),
            ..Manifest::new()
        }
    }

    /// Adds raw TOML (e.g. a `[redis]` table) before the routes.
    pub(crate) fn section(mut self, text: &str) -> Manifest {
        writeln!(self.sections, "\n{text}").expect("writing to a String");
        self
    }

    /// Adds a raw line (e.g. `max_connections = 1`) to `[database]`.
    pub(crate) fn database(mut self, line: &str) -> Manifest {
        writeln!(self.database, "{line}").expect("writing to a String");
        self
    }

    /// Sets `[server].listen` (which `--listen`, always passed by `Trellis`, overrides).
    pub(crate) fn listen(mut self, addr: &str) -> Manifest {
        addr.clone_into(&mut self.listen);
        self
    }

    /// Adds a raw line (e.g. `shutdown_grace = "1s"`) to `[server]`.
    pub(crate) fn server(mut self, line: &str) -> Manifest {
        writeln!(self.server, "{line}").expect("writing to a String");
        self
    }

    /// Adds a `[[route]]` named `name` at `path` served by `component` (a
    /// path to a `.wasm`), plus raw `key = value` lines in `extra`.
    pub(crate) fn route(
        mut self,
        name: &str,
        path: &str,
        component: &str,
        extra: &[&str],
    ) -> Manifest {
        writeln!(
            self.routes,
            "\n[[route]]\nname = {name:?}\npath = {path:?}\ncomponent = {component:?}"
        )
        .expect("writing to a String");
        for line in extra {
            writeln!(self.routes, "{line}").expect("writing to a String");
        }
        self
    }

    pub(crate) fn render(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let database = if self.database.is_empty() {
            String::new()
        } else {
            format!("\n[database]\n{}", self.database)
        };
        format!(
            "[server]\nlisten = {:?}\n{}{database}{}{}",
            self.listen, self.server, self.sections, self.routes
        )
    }
}
