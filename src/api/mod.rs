//! The HTTP surface: routing, authentication, JSON in and out, and the one
//! place where errors become status codes and `{"error": {...}}` bodies.
//!
//! Architecture invariant: `api` never calls a driver. A send is stored as a
//! queued attempt and the delivery engine is woken.

mod auth;
mod cancel;
mod list;
pub mod mcp;
mod metrics;
pub mod observe;
mod ready;
mod send;
pub(crate) mod status;
mod webhook_endpoints;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::Engine;
use crate::domain::ErrorCode;
use crate::media::MediaGuard;
use crate::store::{Store, StoreError};

/// Every route the router serves, as `(method, path template)` in the
/// OpenAPI document's spelling. `tests/api/openapi.rs` checks that this list,
/// the document's `paths` and the router agree: a new route (`/readyz`,
/// `/metrics`, ...) goes into `handle`, here and into `openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/messages/send"),
    ("GET", "/api/v1/messages"),
    ("GET", "/api/v1/messages/{sendAttemptId}"),
    ("POST", "/api/v1/messages/{sendAttemptId}/cancel"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/metrics"),
    ("GET", OPENAPI_PATH),
    ("POST", MCP_PATH),
    ("GET", "/api/v1/webhooks"),
    ("POST", "/api/v1/webhooks"),
    ("DELETE", "/api/v1/webhooks/{id}"),
    ("POST", "/api/v1/webhooks/{id}/rotate-secret"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"),
    ("POST", "/api/v1/webhooks/deliveries/{id}/redeliver"),
    ("GET", "/webhooks/cloud/{accountId}"),
    ("POST", "/webhooks/cloud/{accountId}"),
];

/// Where the OpenAPI 3.1 description of the API is served, without auth.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The OpenAPI 3.1 document, kept beside `schema.sql` at the top of the
/// repository because it is read by people and client generators as much as
/// by the server.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// The MCP endpoint (Streamable HTTP; `mcp` tokens).
pub const MCP_PATH: &str = "/mcp";

/// Request bodies above this are refused with 413 (contract).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub type Body = Full<Bytes>;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub media: MediaGuard,
    pub engine: Engine,
    pub clock: Clock,
    /// The MCP protocol handler behind `/mcp`.
    pub mcp: mcp::McpService,
    /// Checks webhook endpoint URLs (`crate::webhooks::url_guard`).
    pub webhook_urls: MediaGuard,
    /// The dashboard's running phone pairings.
    pub links: crate::dashboard::link::Links,
    /// The dashboard's secrets waiting to be shown once.
    pub flashes: crate::dashboard::flash::Flashes,
}

/// An API error: the contract's code, a message for humans, the HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<i64>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error answered with its code's status (see [`ErrorCode::http_status`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status = code
            .http_status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            allow: None,
        }
    }

    /// The same code with another status (`invalid_request` as 413 or 408).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// `invalid_request` about one field, header or query parameter.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::invalid(message);
        e.field = Some(field.to_string());
        e
    }

    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "no such resource")
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// The `{"error": {...}}` response; `request_id` is the response's
    /// `X-Request-Id`, repeated in the body.
    fn into_response(self, request_id: &str) -> Response<Body> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
            #[serde(rename = "requestId")]
            request_id: &'a str,
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        let body = serde_json::to_vec(&Envelope {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
                field: self.field.as_deref(),
                request_id,
            },
        })
        .unwrap_or_default();
        let mut response = json_response(self.status, body);
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A body or argument the domain refused: its code, field and message.
impl From<crate::domain::FieldError> for ApiError {
    fn from(e: crate::domain::FieldError) -> Self {
        let mut err = ApiError::new(e.code, e.message);
        err.field = e.field;
        err
    }
}

/// Seconds a client is asked to wait after a 503 `service_unavailable`.
const UNAVAILABLE_RETRY_AFTER_SECS: i64 = 5;

/// 5xx: log the cause, show a generic message. A store that cannot take
/// writes now (disk full, not writable, locked) is a 503 the client may retry;
/// anything else is a 500.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the database cannot take writes; answering 503");
            let mut err = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "whatan cannot store the request right now (the disk is full or the database is not writable); nothing was queued, retry later",
            );
            err.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
            return err;
        }
        tracing::error!(error = %e, "store error while handling a request");
        ApiError::new(
            ErrorCode::InternalError,
            "internal error; the request was not processed",
        )
    }
}

pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A client must send its whole body within this time (slow-body clients
/// would otherwise hold a connection slot forever).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the request body did not arrive in time",
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("request body is larger than {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)),
        Ok(Err(_)) => Err(ApiError::invalid("could not read the request body")),
    }
}

/// The routes, parsed from a request path once. [`Route::template`] is the
/// name logs and metrics use: ids never appear in it.
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Mcp,
    Webhooks(webhook_endpoints::WebhookRoute<'a>),
    Send,
    List,
    Status {
        id: &'a str,
    },
    Cancel {
        id: &'a str,
    },
    CloudWebhook {
        account_id: &'a str,
    },
    /// The team dashboard's pages (HTML, session cookies).
    Dashboard(crate::dashboard::Page<'a>),
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Route<'a> {
        match path {
            "/healthz" => return Route::Healthz,
            "/readyz" => return Route::Readyz,
            "/metrics" => return Route::Metrics,
            OPENAPI_PATH => return Route::OpenApi,
            MCP_PATH => return Route::Mcp,
            "/api/v1/messages/send" => return Route::Send,
            "/api/v1/messages" => return Route::List,
            _ => {}
        }
        if let Some(route) = webhook_endpoints::WebhookRoute::parse(path) {
            return Route::Webhooks(route);
        }
        if let Some(rest) = path.strip_prefix("/api/v1/messages/") {
            let one_segment = |id: &str| !id.is_empty() && !id.contains('/');
            if let Some(id) = rest.strip_suffix("/cancel").filter(|id| one_segment(id)) {
                return Route::Cancel { id };
            }
            if one_segment(rest) {
                return Route::Status { id: rest };
            }
        }
        if let Some(account_id) = path.strip_prefix(webhooks::PATH_PREFIX) {
            return Route::CloudWebhook { account_id };
        }
        if let Some(page) = crate::dashboard::Page::parse(path) {
            return Route::Dashboard(page);
        }
        Route::Unknown
    }

    fn template(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => OPENAPI_PATH,
            Route::Mcp => MCP_PATH,
            Route::Webhooks(route) => route.template(),
            Route::Send => "/api/v1/messages/send",
            Route::List => "/api/v1/messages",
            Route::Status { .. } => "/api/v1/messages/{id}",
            Route::Cancel { .. } => "/api/v1/messages/{id}/cancel",
            Route::CloudWebhook { .. } => "/webhooks/cloud/{accountId}",
            Route::Dashboard(page) => page.template(),
            Route::Unknown => "unmatched",
        }
    }
}

/// The route template of a request path (`/api/v1/messages/{id}`), or
/// `unmatched` for a path no route serves: what logs and metrics label a
/// request with, never the raw path.
pub fn route_template(path: &str) -> &'static str {
    Route::parse(path).template()
}

/// Answer one request: route it, give the response its `X-Request-Id`, and
/// write the access-log line. Never panics on input; every failure is an
/// `ApiError`.
pub async fn handle(state: AppState, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let request_id = observe::request_id(req.headers());
    let method = req.method().clone();
    let route = route_template(req.uri().path());
    let client = observe::client_address(peer, req.headers(), &state.config.server.trusted_proxies);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        token_id = tracing::field::Empty
    );
    // Boxed: hyper moves the request's future into its slot, and each
    // wrapper (token slot, span) takes room for what it wraps. Unboxed,
    // `route_request` (5.4 KB then) made a 23 KB future, copied several
    // times per request (memmove was 11% of the status profile). Now hyper
    // moves 1.9 KB, at one allocation per request (two on the rare routes).
    let routed = Box::pin(route_request(&state, req));
    let (result, token_id) = observe::with_token_slot(routed)
        .instrument(span.clone())
        .await;
    let mut response = result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            span.in_scope(|| tracing::error!(code = %e.code, "request failed: {}", e.message));
        }
        e.into_response(&request_id)
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(observe::REQUEST_ID, value);
    }
    crate::metrics::http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    span.in_scope(|| {
        tracing::info!(
            target: "whatan::access",
            method = %method,
            route,
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
            request_id = %request_id,
            token_id = token_id.as_deref().unwrap_or("-"),
            client = %client,
            "request"
        )
    });
    response
}

/// A send and a status read run in this future's own space; every other
/// request goes through [`dispatch`], boxed once, so the largest handler does
/// not set the size of the box [`handle`] allocates for every request
/// (2.9 KB; 5.4 KB with them inline).
async fn route_request(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (Route::parse(&path), method) {
        (Route::Send, Method::POST) => send::handle(state, req).await,
        (Route::Status { id }, Method::GET) => status::handle(state, req, id).await,
        (route, method) => Box::pin(dispatch(state, req, method, route, &path)).await,
    }
}

/// The routing table: every route and method.
async fn dispatch(
    state: &AppState,
    req: Request<Incoming>,
    method: Method,
    route: Route<'_>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    match route {
        Route::Healthz => match method {
            Method::GET | Method::HEAD => Ok(json_response(
                StatusCode::OK,
                br#"{"status":"ok"}"#.to_vec(),
            )),
            _ => Err(method_not_allowed("GET, HEAD")),
        },
        Route::OpenApi => match method {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                OPENAPI_JSON.as_bytes().to_vec(),
            )),
            _ => Err(method_not_allowed("GET")),
        },
        Route::Metrics => match method {
            Method::GET => metrics::handle(state, req).await,
            _ => Err(method_not_allowed("GET")),
        },
        Route::Readyz => match method {
            Method::GET | Method::HEAD => Ok(ready::handle(state).await),
            _ => Err(method_not_allowed("GET, HEAD")),
        },
        // GET (a server-initiated stream) and DELETE (a session) have no
        // meaning without sessions; the protocol answers them 405 too.
        Route::Mcp => match method {
            Method::POST => mcp::handle(state, req).await,
            _ => Err(method_not_allowed("POST")),
        },
        Route::Webhooks(route) => webhook_endpoints::handle(state, req, route).await,
        Route::List => match method {
            Method::GET => list::handle(state, req).await,
            _ => Err(method_not_allowed("GET")),
        },
        Route::Cancel { id } => match method {
            Method::POST => cancel::handle(state, req, id).await,
            _ => Err(method_not_allowed("POST")),
        },
        Route::CloudWebhook { account_id } => match method {
            Method::GET | Method::POST => webhooks::handle(state, req, account_id).await,
            _ => Err(method_not_allowed("GET, POST")),
        },
        Route::Dashboard(page) => Ok(crate::dashboard::handle(state, req, page).await),
        Route::Send => match method {
            Method::POST => send::handle(state, req).await,
            _ => Err(method_not_allowed("POST")),
        },
        Route::Status { id } => match method {
            Method::GET => status::handle(state, req, id).await,
            _ => Err(method_not_allowed("GET")),
        },
        Route::Unknown => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {path}"),
        )),
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method not allowed; this path allows {allow}"),
    );
    e.allow = Some(allow);
    e
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn route_templates_name_the_route_never_the_ids_in_the_path() {
        let cases = [
            ("/healthz", "/healthz"),
            ("/readyz", "/readyz"),
            ("/mcp", "/mcp"),
            ("/api/v1/webhooks", "/api/v1/webhooks"),
            (
                "/api/v1/webhooks/whk_1/deliveries",
                "/api/v1/webhooks/{id}/deliveries",
            ),
            (
                "/api/v1/webhooks/deliveries/dlv_1/redeliver",
                "/api/v1/webhooks/deliveries/{id}/redeliver",
            ),
            ("/api/v1/webhooks/whk_1/nothing", "unmatched"),
            ("/api/v1/messages/send", "/api/v1/messages/send"),
            (
                "/api/v1/messages/01a23e42-9665-7d00-9c29-1a655f69191b",
                "/api/v1/messages/{id}",
            ),
            ("/api/v1/messages", "/api/v1/messages"),
            (
                "/api/v1/messages/01a23e42-9665-7d00-9c29-1a655f69191b/cancel",
                "/api/v1/messages/{id}/cancel",
            ),
            ("/webhooks/cloud/acc_123", "/webhooks/cloud/{accountId}"),
            ("/api/v1/messages/", "unmatched"),
            ("/api/v1/messages/a/b", "unmatched"),
            ("/api/v1/messages//cancel", "unmatched"),
            ("/api/v1/messages/a/b/cancel", "unmatched"),
            ("/api/v1/messages/a/cancel/x", "unmatched"),
            ("/secret-looking/path", "unmatched"),
            ("/login/s3cr3t", "/login/{secret}"),
            ("/accounts/acc_1/link", "/accounts/{id}/link"),
        ];
        for (path, template) in cases {
            assert_eq!(route_template(path), template, "{path}");
        }
    }
}
