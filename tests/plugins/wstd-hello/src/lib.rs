//! Test plugin: a third-party-style handler written with `wstd`, served as is.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    Ok(Response::new("hello from wstd\n".into()))
}
