//! A fake Meta Graph API on 127.0.0.1 for the Cloud API driver's tests.
//!
//! It serves the three endpoints whatan calls, with the request and answer
//! shapes of Meta's WhatsApp Cloud API documentation:
//!
//! - `POST /{version}/{phone-number-id}/messages` answers
//!   `{"messaging_product":"whatsapp","contacts":[{"input","wa_id"}],
//!   "messages":[{"id":"wamid..."}]}`, unless a test queued another answer
//!   (a Meta error body, a 429, a 5xx, a slow or held answer);
//! - `POST /{version}/{phone-number-id}/media` answers `{"id": "<media id>"}`;
//! - `GET /{version}/{phone-number-id}` answers the phone number object
//!   (`display_phone_number`, `verified_name`, `quality_rating`, `id`).
//!
//! Every call needs `Authorization: Bearer <ACCESS_TOKEN>`, or gets Meta's
//! expired-token error (HTTP 401, OAuthException 190). Every request is
//! recorded, so tests can check what whatan sent and how many times.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const ACCESS_TOKEN: &str = "EAAGfakeGraphTokenForTests0123456789";
pub const DISPLAY_PHONE_NUMBER: &str = "+91 70000 00001";
pub const VERIFIED_NAME: &str = "Whatan Test";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl GraphRequest {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_message(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/messages")
    }

    pub fn is_upload(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/media")
    }
}

/// How the fake answers one `messages` call.
pub struct MessageReply {
    status: u16,
    /// `None`: the documented success body.
    body: Option<Value>,
    wamid: Option<String>,
    wa_id: Option<String>,
    delay: Duration,
    /// Answer only once this is notified.
    gate: Option<Arc<Notify>>,
}

impl MessageReply {
    /// Success with this `wamid` and `wa_id`.
    pub fn accepted(wamid: &str, wa_id: &str) -> MessageReply {
        MessageReply {
            status: 200,
            body: None,
            wamid: Some(wamid.into()),
            wa_id: Some(wa_id.into()),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    /// An error answer: HTTP `status` with `body`.
    pub fn error(status: u16, body: Value) -> MessageReply {
        MessageReply {
            status,
            body: Some(body),
            wamid: None,
            wa_id: None,
            delay: Duration::ZERO,
            gate: None,
        }
    }

    /// An answer with a non-JSON body (a proxy's error page).
    pub fn raw(status: u16, text: &str) -> MessageReply {
        MessageReply::error(status, Value::String(text.into()))
    }

    /// The documented success, sent only after `delay`.
    pub fn slow(delay: Duration) -> MessageReply {
        MessageReply {
            status: 200,
            body: None,
            wamid: None,
            wa_id: None,
            delay,
            gate: None,
        }
    }

    /// Hold the answer until `gate` is notified.
    pub fn held(mut self, gate: Arc<Notify>) -> MessageReply {
        self.gate = Some(gate);
        self
    }
}

/// A Graph API error body as Meta documents it.
pub fn meta_error(code: i64, message: &str, details: &str) -> Value {
    json!({
        "error": {
            "message": format!("(#{code}) {message}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"
        }
    })
}

/// Meta's answer for an expired access token (OAuthException 190).
pub fn token_expired() -> Value {
    json!({
        "error": {
            "message": "Error validating access token: Session has expired on Friday, 01-Aug-25 10:00:00 PDT. The current time is Friday, 01-Aug-25 11:00:00 PDT.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": "AbCdEfGhIjKlMnOp"
        }
    })
}

#[derive(Default)]
struct State {
    requests: Vec<GraphRequest>,
    message_replies: VecDeque<MessageReply>,
    messages_sent: u64,
    uploads: u64,
}

/// The running fake; stops when dropped.
pub struct FakeGraph {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    accept_loop: JoinHandle<()>,
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind fake Graph API");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let accept_loop = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, Infallible>(answer(&state, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        FakeGraph {
            base_url: format!("http://{addr}"),
            state,
            accept_loop,
        }
    }

    /// Answer the next `messages` calls with these, in order; after them,
    /// the documented success.
    pub fn queue(&self, replies: impl IntoIterator<Item = MessageReply>) {
        self.lock().message_replies.extend(replies);
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.lock().requests.clone()
    }

    pub fn message_requests(&self) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(GraphRequest::is_message)
            .collect()
    }

    pub fn upload_requests(&self) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(GraphRequest::is_upload)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake graph state")
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let (content_type, bytes) = match body {
        Value::String(text) => ("text/html", text.clone().into_bytes()),
        other => ("application/json", other.to_string().into_bytes()),
    };
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(Bytes::from(bytes)))
        .expect("response")
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request = GraphRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default(),
    };
    state.lock().expect("state").requests.push(request.clone());

    if request.authorization.as_deref() != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        return reply(401, &token_expired());
    }
    // /{version}/{phone-number-id}[/{edge}]
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let (id, edge) = match segments.as_slice() {
        [_version, id] => (*id, ""),
        [_version, id, edge] => (*id, *edge),
        _ => return reply(404, &meta_error(100, "Unknown path components", "")),
    };
    if id != PHONE_NUMBER_ID {
        let mut error = meta_error(
            100,
            "Unsupported request - method type: get",
            "Object does not exist, cannot be loaded due to missing permissions, or does not support this operation",
        );
        error["error"]["error_subcode"] = json!(33);
        return reply(400, &error);
    }
    match (request.method.as_str(), edge) {
        ("GET", "") => reply(
            200,
            &json!({
                "verified_name": VERIFIED_NAME,
                "display_phone_number": DISPLAY_PHONE_NUMBER,
                "quality_rating": "GREEN",
                "id": PHONE_NUMBER_ID
            }),
        ),
        ("POST", "media") => {
            let n = {
                let mut s = state.lock().expect("state");
                s.uploads += 1;
                s.uploads
            };
            reply(200, &json!({ "id": format!("media-{n}") }))
        }
        ("POST", "messages") => {
            let scripted = state.lock().expect("state").message_replies.pop_front();
            let scripted = scripted.unwrap_or_else(|| MessageReply::slow(Duration::ZERO));
            if let Some(gate) = &scripted.gate {
                gate.notified().await;
            }
            if !scripted.delay.is_zero() {
                tokio::time::sleep(scripted.delay).await;
            }
            if let Some(body) = &scripted.body {
                return reply(scripted.status, body);
            }
            let n = {
                let mut s = state.lock().expect("state");
                s.messages_sent += 1;
                s.messages_sent
            };
            let sent = request.json();
            let input = sent["to"].as_str().unwrap_or("").to_string();
            let wa_id = scripted
                .wa_id
                .unwrap_or_else(|| input.trim_start_matches('+').to_string());
            let wamid = scripted
                .wamid
                .unwrap_or_else(|| format!("wamid.HBgMOTE3OTk5NzA5Nzk4FQIAERgS{n:06}"));
            reply(
                200,
                &json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": input, "wa_id": wa_id}],
                    "messages": [{"id": wamid, "message_status": "accepted"}]
                }),
            )
        }
        _ => reply(
            400,
            &meta_error(100, "Invalid parameter", "unsupported edge"),
        ),
    }
}
