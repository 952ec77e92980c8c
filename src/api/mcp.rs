//! `/mcp`: the Model Context Protocol over Streamable HTTP, for tokens of
//! kind `mcp` (`../shared/spec/mcp.md`).
//!
//! The protocol (initialize or discover, version negotiation, JSON-RPC
//! framing and its error codes) is the official Rust SDK's (`rmcp`), served
//! statelessly with JSON responses: each POST is authenticated here, then
//! answered by a fresh [`Tools`] that reads its caller from the request's
//! extensions. The tools run the Send API's own code (`send::submit`,
//! `status::visible`, the store's listings), so both surfaces refuse the
//! same requests with the same codes; a refusal is a tool result with
//! `isError` whose text starts with that code.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use super::{auth, json_response, read_body, send, status, ApiError, AppState, Body};
use crate::config::Config;
use crate::domain::SendRequest;
use crate::store::admin::Principal;
use crate::store::{attempts, listing};

/// The rmcp service behind `/mcp`, built once per server.
pub type McpService = StreamableHttpService<Tools, NeverSessionManager>;

/// Who is calling, put into the request's extensions after authentication.
#[derive(Clone)]
struct Caller {
    state: AppState,
    principal: Principal,
}

pub fn service(config: &Config) -> McpService {
    let tools = Arc::new(tool_list(config));
    let http = StreamableHttpServerConfig::default()
        // Stateless: no session to lose on restart or to pin to one node;
        // every request carries its own bearer token.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // The Host check guards unauthenticated local servers against DNS
        // rebinding. Every request here needs a bearer token, which a
        // rebinding page cannot send, and whatan runs behind proxies under
        // any name.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(super::MAX_BODY_BYTES);
    StreamableHttpService::new(
        move || {
            Ok(Tools {
                tools: tools.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        http,
    )
}

/// Authenticate (`mcp` tokens only: 401 with `WWW-Authenticate: Bearer`
/// otherwise), read the body under the API's limits, then let rmcp answer.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let principal = auth::authenticate_mcp(state, req.headers()).await?;
    let (mut parts, body) = req.into_parts();
    let body = read_body(body, super::MAX_BODY_BYTES).await?;
    if let Err(error) = check_json_rpc(&body) {
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            error.to_string().into_bytes(),
        ));
    }
    parts.extensions.insert(Caller {
        state: state.clone(),
        principal,
    });
    let response = state
        .mcp
        .handle(Request::from_parts(parts, Full::new(body)))
        .await;
    // JSON responses (or a finished SSE stream): complete once the handler
    // has answered, so collecting them holds nothing open.
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

/// JSON-RPC's own answers to a body that is not one JSON-RPC message:
/// -32700 for text that is not JSON, -32600 for JSON that is not a request,
/// notification or response (`id` null, as JSON-RPC 2.0 says when the id
/// cannot be read). The protocol library would answer both with a plain-text
/// 415.
fn check_json_rpc(body: &[u8]) -> Result<(), Value> {
    let error = |code: i64, message: String| json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| error(-32700, format!("Parse error: the body is not JSON: {e}")))?;
    let is_message = value.get("jsonrpc") == Some(&json!("2.0"))
        && (value.get("method").is_some_and(Value::is_string)
            || value.get("result").is_some()
            || value.get("error").is_some());
    if !is_message {
        return Err(error(
            -32600,
            "Invalid Request: expected one JSON-RPC 2.0 object with jsonrpc \"2.0\" and a method"
                .into(),
        ));
    }
    Ok(())
}

/// The MCP server handler: the four tools of the spec.
#[derive(Clone)]
pub struct Tools {
    tools: Arc<Vec<Tool>>,
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("whatan", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Send WhatsApp messages from the accounts this token may use, and follow them. \
                 Every message reaches a real person: send only what they agreed to receive.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = context
            .extensions
            .get::<hyper::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("request without a caller", None))?;
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "send_message" => send_message(&caller, args).await,
            "get_message_status" => get_message_status(&caller, &args).await,
            "list_senders" => list_senders(&caller).await,
            "list_recent_messages" => list_recent_messages(&caller, &args).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other:?}"),
                    None,
                ))
            }
        };
        Ok(match result {
            Ok(value) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
                r.structured_content = Some(value);
                r
            }
            Err(e) => refusal(e),
        }
        .into())
    }
}

/// A refusal: `isError`, text `code: message` (plus the wait for a rate
/// limit), and the Send API's error object as structured content.
fn refusal(e: ApiError) -> CallToolResult {
    if e.status.is_server_error() {
        tracing::error!(code = %e.code, "MCP tool failed: {}", e.message);
    }
    let mut text = format!("{}: {}", e.code.as_str(), e.message);
    if let Some(secs) = e.retry_after {
        text.push_str(&format!("; retry after {secs} s"));
    }
    let mut object = json!({ "code": e.code.as_str(), "message": e.message });
    if let Some(field) = e.field {
        object["field"] = json!(field);
    }
    if let Some(secs) = e.retry_after {
        object["retryAfter"] = json!(secs);
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(object);
    r
}

async fn send_message(caller: &Caller, mut args: JsonObject) -> Result<Value, ApiError> {
    let key = match args.remove("idempotencyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => {
            Some(send::check_idempotency_key(k.as_bytes(), "idempotencyKey")?)
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "idempotencyKey",
                "idempotencyKey must be a string",
            ))
        }
    };
    // The Send API's body with `type` defaulting to text.
    args.entry("type").or_insert_with(|| json!("text"));
    let request = SendRequest::from_object(&args)?;
    let from = request.from.as_ref().map(|p| p.e164().to_string());
    let principal = caller.principal.clone();
    let lookup = send::sender_account(from);
    let sender = caller
        .state
        .store
        .read(move |c| lookup(c, &principal))
        .await?;
    let submitted = send::submit(&caller.state, &caller.principal, sender, key, request).await?;
    parse_body(&submitted.body)
}

async fn get_message_status(caller: &Caller, args: &JsonObject) -> Result<Value, ApiError> {
    let id = match args.get("sendAttemptId") {
        Some(Value::String(id)) => id,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_field(
                "sendAttemptId",
                "sendAttemptId is required",
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "sendAttemptId",
                "sendAttemptId must be a string",
            ))
        }
    };
    let Some(id) = status::attempt_id(id) else {
        return Err(ApiError::not_found());
    };
    let attempt = caller
        .state
        .store
        .read(move |c| attempts::get_attempt(c, &id))
        .await?;
    match attempt {
        Some(a) if status::visible(&caller.principal, &a) => to_value(&a.status_body()),
        _ => Err(ApiError::not_found()),
    }
}

async fn list_senders(caller: &Caller) -> Result<Value, ApiError> {
    let p = caller.principal.clone();
    let day = crate::clock::utc_day(caller.state.clock.now_ms());
    let rows = caller
        .state
        .store
        .read(move |c| {
            listing::senders(c, &status::readable(&p))?
                .into_iter()
                .map(|a| Ok((attempts::sent_on_day(c, &a.id, day)?, a)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
        })
        .await?;
    let limit = caller.state.config.pacing.daily_limit;
    let senders: Vec<Value> = rows
        .into_iter()
        .map(|(sent, a)| {
            json!({
                "accountId": a.id,
                "phone": a.phone,
                "driver": a.driver.as_str(),
                "status": a.status.as_str(),
                "sentToday": sent,
                "dailyLimit": limit,
                "personal": a.user == caller.principal.user_id,
            })
        })
        .collect();
    Ok(json!({ "senders": senders }))
}

/// At most this many messages per `list_recent_messages` call.
const MAX_LIST: u64 = 50;

async fn list_recent_messages(caller: &Caller, args: &JsonObject) -> Result<Value, ApiError> {
    let limit = match args.get("limit") {
        None | Some(Value::Null) => 10,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_LIST) => n as usize,
            _ => {
                return Err(ApiError::invalid_field(
                    "limit",
                    format!("limit must be an integer from 1 to {MAX_LIST}"),
                ))
            }
        },
    };
    let status = match args.get("status") {
        None | Some(Value::Null) => None,
        Some(v) => Some(status::status_filter(v.as_str().unwrap_or_default())?),
    };
    let p = caller.principal.clone();
    let rows = caller
        .state
        .store
        .read(move |c| {
            let filter = listing::AttemptFilter {
                status,
                ..Default::default()
            };
            listing::recent_attempts(c, &status::readable(&p), &filter, limit)
        })
        .await?;
    let messages = rows
        .iter()
        .map(|a| to_value(&a.status_body()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "messages": messages }))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| crate::store::StoreError::Internal(e.to_string()).into())
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| crate::store::StoreError::Internal(e.to_string()).into())
}

/// `2-5 minutes`, `30-90 seconds` or `1-5 milliseconds`: the configured
/// pacing, as tool descriptions state it.
fn gap_words(min: Duration, max: Duration) -> String {
    let (a, b) = (min.as_millis(), max.as_millis());
    if a > 0 && a % 60_000 == 0 && b % 60_000 == 0 {
        format!("{}-{} minutes", a / 60_000, b / 60_000)
    } else if a % 1000 == 0 && b % 1000 == 0 {
        format!("{}-{} seconds", a / 1000, b / 1000)
    } else {
        format!("{a}-{b} milliseconds")
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("tool schemas are objects"),
    }
}

/// The tools with their JSON Schemas and one-line consequences, from the
/// server's pacing settings.
fn tool_list(config: &Config) -> Vec<Tool> {
    let pacing = &config.pacing;
    let gap = gap_words(pacing.min_delay, pacing.max_delay);
    let limit = pacing.daily_limit;
    let read_only = || ToolAnnotations::new().read_only(true).open_world(false);
    let media = |extra: Value| {
        let mut properties = json!({
            "url": { "type": "string", "description": "Public https URL of the file; private and local addresses are refused." },
            "caption": { "type": "string" }
        });
        if let (Value::Object(p), Value::Object(e)) = (&mut properties, extra) {
            p.extend(e);
        }
        json!({ "type": "object", "properties": properties, "required": ["url"] })
    };
    let send = Tool::new(
        "send_message",
        format!(
            "Send a WhatsApp text, image or document. The message reaches a real person's phone \
             and cannot be recalled: send only consent-based messages the recipient asked for, \
             never bulk or unsolicited ones. Sends from one account are paced {gap} apart and \
             limited to {limit} a day per account, so a queued message can take minutes to go \
             out; poll get_message_status. Reuse idempotencyKey when retrying, or a retry sends twice."
        ),
        schema(json!({
            "type": "object",
            "properties": {
                "to": { "type": "string", "description": "Recipient phone number in international format, e.g. +14155550123." },
                "type": { "type": "string", "enum": ["text", "image", "document"], "default": "text" },
                "text": { "type": "string", "description": "The message (type text), up to 4096 characters." },
                "image": media(json!({})),
                "document": media(json!({
                    "fileName": { "type": "string" },
                    "mimetype": { "type": "string" }
                })),
                "from": { "type": "string", "description": "Send from this workspace number (owners and admins only); omit to send from your own account." },
                "idempotencyKey": { "type": "string", "description": "1-255 printable ASCII characters; the same key with the same message returns the first result instead of sending again." }
            },
            "required": ["to"]
        })),
    )
    .with_title("Send a WhatsApp message")
    .with_annotations(
        ToolAnnotations::new()
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(true),
    );
    let status = Tool::new(
        "get_message_status",
        "Get the status of a message sent with send_message: queued, sending, accepted, \
         delivered, read or failed (with errorCode and errorMessage). Reading sends nothing.",
        schema(json!({
            "type": "object",
            "properties": {
                "sendAttemptId": { "type": "string", "description": "The sendAttemptId send_message returned." }
            },
            "required": ["sendAttemptId"]
        })),
    )
    .with_title("Get a message's status")
    .with_annotations(read_only());
    let senders = Tool::new(
        "list_senders",
        format!(
            "List the WhatsApp accounts this token may send from, with their connection status \
             and today's sends against the limit of {limit} a day. Reading sends nothing."
        ),
        schema(json!({ "type": "object", "properties": {} })),
    )
    .with_title("List sender accounts")
    .with_annotations(read_only());
    let recent = Tool::new(
        "list_recent_messages",
        "List recent messages this token may read, newest first, with their status. \
         Reading sends nothing.",
        schema(json!({
            "type": "object",
            "properties": {
                "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 10 },
                "status": { "type": "string", "enum": ["queued", "sending", "accepted", "delivered", "read", "failed"] }
            }
        })),
    )
    .with_title("List recent messages")
    .with_annotations(read_only());
    vec![send, status, senders, recent]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    #[test]
    fn bodies_that_are_not_one_json_rpc_message_get_json_rpc_codes() {
        let code = |body: &str| {
            check_json_rpc(body.as_bytes())
                .err()
                .map(|e| e["error"]["code"].clone())
        };
        assert_eq!(code("{not json"), Some(json!(-32700)));
        assert_eq!(code(""), Some(json!(-32700)));
        assert_eq!(code("[]"), Some(json!(-32600)));
        assert_eq!(
            code(r#"{"method":"tools/list","id":1}"#),
            Some(json!(-32600))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Some(json!(-32600))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            None
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
    }

    #[test]
    fn pacing_is_stated_in_the_words_an_agent_reads() {
        let m = Duration::from_secs;
        assert_eq!(gap_words(m(120), m(300)), "2-5 minutes");
        assert_eq!(gap_words(m(30), m(90)), "30-90 seconds");
        assert_eq!(gap_words(m(0), m(0)), "0-0 seconds");
        let ms = Duration::from_millis;
        assert_eq!(gap_words(ms(1), ms(5)), "1-5 milliseconds");
    }

    #[test]
    fn every_tool_states_its_consequences() {
        let config = Config::default();
        let tools = tool_list(&config);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "send_message",
                "get_message_status",
                "list_senders",
                "list_recent_messages"
            ]
        );
        let send = tools[0].description.as_deref().unwrap();
        for needle in ["real person", "2-5 minutes", "100 a day", "consent"] {
            assert!(
                send.contains(needle),
                "send_message description lacks {needle:?}"
            );
        }
    }

    #[test]
    fn a_refusal_starts_with_the_send_api_code() {
        let mut e = ApiError::new(ErrorCode::RateLimited, "the account reached its limit");
        e.retry_after = Some(3600);
        let r = refusal(e);
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_value(&r.content[0]).unwrap();
        assert_eq!(
            text["text"],
            "rate_limited: the account reached its limit; retry after 3600 s"
        );
        let object = r.structured_content.unwrap();
        assert_eq!(object["code"], "rate_limited");
        assert_eq!(object["retryAfter"], 3600);
    }
}
