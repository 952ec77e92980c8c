//! The dashboard's stylesheet and script, compiled into the binary.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use super::{PageError, PageResult};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The assets' paths carry the crate version, so a new binary's pages
/// never run an old cached script.
pub const CSS_PATH: &str = concat!("/assets/app-", env!("CARGO_PKG_VERSION"), ".css");
pub const JS_PATH: &str = concat!("/assets/app-", env!("CARGO_PKG_VERSION"), ".js");

pub fn serve(name: &str) -> PageResult {
    let (body, content_type) = match format!("/assets/{name}") {
        path if path == CSS_PATH => (CSS, "text/css; charset=utf-8"),
        path if path == JS_PATH => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(PageError::not_found()),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    Ok(response)
}
