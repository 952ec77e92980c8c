//! `/mcp`: tokens of kind `mcp` only, the protocol's own errors for bad
//! JSON-RPC, and the whole tool surface driven by the official MCP Python
//! SDK (`tests/support/mcp_client.py`).

use serde_json::{json, Value};
use whatan::domain::token::{self, TokenKind};
use whatan::domain::AccountStatus;
use whatan::store::admin;

use crate::helpers::*;

async fn mcp_token(app: &TestApp, user: &str) -> String {
    let user = user.to_string();
    app.store
        .write(move |c| {
            let t = token::generate(TokenKind::Mcp);
            admin::create_token(c, &user, TokenKind::Mcp, Some("agent"), None, &t)?;
            Ok(t.secret)
        })
        .await
        .unwrap()
}

/// One JSON-RPC message to `/mcp`, as a Streamable HTTP client posts it.
async fn post(app: &TestApp, token: Option<&str>, body: impl Into<reqwest::Body>) -> Reply {
    let mut req = app
        .client
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    reply(req.send().await.unwrap()).await
}

fn call(id: i64, tool: &str, arguments: Value) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
    .to_string()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test]
async fn only_mcp_tokens_reach_mcp_and_they_do_not_reach_the_send_api() {
    let app = spawn_app().await;
    let mcp = mcp_token(&app, &app.owner.user).await;

    // Act / Assert: no token, a Send API token, a malformed one: 401 with the
    // Bearer challenge.
    for token in [
        None,
        Some(app.owner.token.as_str()),
        Some("whatan_mcp_nope"),
    ] {
        let r = post(&app, token, LIST).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(r.code(), "unauthorized");
    }
    let r = post(&app, Some(app.owner.token.as_str()), LIST).await;
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not an MCP token"));

    // An MCP token on the Send API and the status endpoint: 401.
    let r = app.send(&mcp, None, &text_to("+917999709798")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = app
        .status(&mcp, "0190c3a4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM send_attempts").await, 0);

    // The MCP token itself works on /mcp.
    let r = post(&app, Some(&mcp), LIST).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let names: Vec<String> = r.json()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "send_message",
            "get_message_status",
            "list_senders",
            "list_recent_messages"
        ]
    );
}

#[tokio::test]
async fn malformed_json_rpc_gets_json_rpc_errors_and_no_send() {
    let app = spawn_app().await;
    let mcp = mcp_token(&app, &app.owner.user).await;

    // Not JSON at all: a parse error (-32700).
    let r = post(&app, Some(&mcp), "{not json").await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["error"]["code"], -32700);
    // JSON, but not a JSON-RPC message: an invalid request (-32600).
    let r = post(&app, Some(&mcp), r#"{"id":1,"method":"tools/list"}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);

    // An unknown method and an unknown tool: JSON-RPC errors, not tool results.
    let r = post(
        &app,
        Some(&mcp),
        r#"{"jsonrpc":"2.0","id":2,"method":"messages/teleport"}"#,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32601, "{:?}", r.json());
    let r = post(&app, Some(&mcp), call(3, "send_fax", json!({}))).await;
    assert_eq!(r.json()["error"]["code"], -32602, "{:?}", r.json());

    // GET (no server-initiated stream without sessions): 405.
    let r = app
        .client
        .get(app.url("/mcp"))
        .bearer_auth(&mcp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(app.count("SELECT COUNT(*) FROM send_attempts").await, 0);
}

#[tokio::test]
async fn a_tool_refusal_carries_the_send_api_code_the_http_route_gives() {
    // The same bad request on both surfaces: one implementation, one answer.
    let app = spawn_app().await;
    let mcp = mcp_token(&app, &app.member.user).await;
    let body =
        json!({"to": "+917999709798", "type": "text", "text": "hi", "from": "+917000000001"});

    let http = app.send(&app.member.token, None, &body).await;
    let tool = post(&app, Some(&mcp), call(1, "send_message", body.clone())).await;

    assert_eq!(http.status, 403);
    let result = &tool.json()["result"];
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["code"], http.code());
    assert_eq!(
        result["structuredContent"]["message"],
        http.json()["error"]["message"]
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("sender_selection_forbidden: "), "{text}");

    // And an accepted tool send is the Send API's queued response, paced by
    // the same engine.
    let owner = mcp_token(&app, &app.owner.user).await;
    let r = post(
        &app,
        Some(&owner),
        call(
            2,
            "send_message",
            json!({"to": "+917999709798", "text": "hi"}),
        ),
    )
    .await;
    let queued = &r.json()["result"]["structuredContent"];
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["sendAttemptId"].as_str().unwrap().to_string();
    let status = app
        .wait_for_status(&app.owner.token, &id, |b| b["status"] == "read")
        .await;
    assert_eq!(status["from"], "+917000000001");
}

/// The official MCP Python SDK against the live server: tools, a send
/// polled to `read`, replays, and every refusal of the spec.
#[tokio::test]
async fn the_official_python_sdk_sends_polls_and_is_refused_as_the_spec_says() {
    use std::process::Command;
    if !crate::external_tool::python_module_or_skip("mcp, httpx2", "mcp", "the MCP Python SDK test")
    {
        return;
    }
    let app = spawn_app_with(|c| c.pacing.daily_limit = 4).await;
    let owner = mcp_token(&app, &app.owner.user).await;
    let admin_token = mcp_token(&app, &app.admin.user).await;
    let member = mcp_token(&app, &app.member.user).await;
    app.set_status(
        app.member.account.as_deref().unwrap(),
        AccountStatus::Disconnected,
    )
    .await;

    // Act: the script blocks; run it off the runtime's workers.
    let url = app.url("/mcp");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/mcp_client.py"
            ))
            .env("WHATAN_MCP_URL", url)
            .env("WHATAN_OWNER", owner)
            .env("WHATAN_ADMIN", admin_token)
            .env("WHATAN_MEMBER", member)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    // Assert
    assert!(
        out.status.success(),
        "the MCP client's checks failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = report["read"].as_str().unwrap();
    let r = app.status(&app.owner.token, read).await;
    assert_eq!(r.json()["status"], "read");
    // The owner's send and workspace send and the admin's three: the replay
    // and every refusal queued nothing.
    assert_eq!(app.count("SELECT COUNT(*) FROM send_attempts").await, 5);
}
