//! Test plugin: `Hello, world!` as a WASI 0.3 handler, the same answer as
//! `plugins/hello` gives as a WASI 0.2 one, so the benchmarks compare the
//! two kinds of handler (and the hosts serving them) on the same work.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Hello);

const BODY: &[u8] = b"Hello, world!\n";

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let headers = Fields::from_list(&[
            ("content-type".into(), b"text/plain".to_vec()),
            ("content-length".into(), BODY.len().to_string().into_bytes()),
        ])
        .map_err(|_| ErrorCode::InternalError(Some("building headers".into())))?;
        let (mut contents, reader) = wit_stream::new();
        let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(reader), trailers_reader);
        drop(trailers);
        // The host reads the body after `handle` returns. A client that
        // left stops the read; that is no reason to trap (and take down
        // the other requests this instance serves).
        wasip3::spawn(async move {
            let _unsent = contents.write_all(BODY.to_vec()).await;
        });
        Ok(response)
    }
}
