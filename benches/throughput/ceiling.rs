//! The ceiling: a bare hyper 1.x server on the same runtime shape as whatan
//! (tokio, two workers, HTTP/1.1 keep-alive) that reads a request's body and
//! answers a small JSON body: `202` for a POST, `200` for a GET. Nothing is
//! checked, stored or fsync'd, so whatan's figures divided by these are the
//! share of the HTTP ceiling it reaches on the same machine in the same run
//! (issue #18), a ratio that holds on a noisy machine better than absolute
//! figures do. The benchmark starts it by running itself with `MODE` set.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Set in the child's environment: be the ceiling server.
pub const MODE: &str = "WHATAN_BENCH_CEILING";

const QUEUED: &[u8] = br#"{"accepted":true,"sendAttemptId":"01a24887-fe36-71cd-abcf-9fca4c793fda","messageId":null,"remoteJid":null,"from":"+917000000001","to":"+917999709798","normalizedPhone":"917999709798","status":"queued"}"#;
const STATUS: &[u8] =
    br#"{"sendAttemptId":"01a24887-fe36-71cd-abcf-9fca4c793fda","status":"queued"}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let post = req.method() == Method::POST;
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(if post {
        QUEUED
    } else {
        STATUS
    })));
    *response.status_mut() = if post {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

pub fn serve() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("ceiling runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("ceiling bind");
        println!(
            "{{\"listening\":\"{}\"}}",
            listener.local_addr().expect("ceiling address")
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
