//! The logs of the real binary, as an operator's log pipeline reads them:
//! at `WHATAN_LOG=debug` with `log.format = "json"`, every stderr line is one
//! JSON object with a timestamp, a level and a message; requests leave an
//! access-log line with the route template and the request id; and no
//! secret or message content appears in any line (operations.md).

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use whatan::dashboard::session::LoginLink;
use whatan::domain::token::{self, TokenKind};
use whatan::domain::{AccountStatus, DriverKind, Role};
use whatan::store::admin;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");

const TEXT: &str = "TEXT-b7f3e1 meet me at the usual place";
const IMAGE_CAPTION: &str = "CAPTION-5d21aa holiday photo";
const DOCUMENT_CAPTION: &str = "CAPTION-9c0e44 signed contract";
const CLOUD_TEXT: &str = "TEXT-cloud-41a9 your code is 123456";
const MCP_TEXT: &str = "TEXT-mcp-0d7e22 sent by an agent";
const ACCESS_TOKEN: &str = "EAAG-ACCESS-TOKEN-3f9a0c7d";
const APP_SECRET: &str = "APP-SECRET-81d4c2e6";
const VERIFY_TOKEN: &str = "VERIFY-TOKEN-c55e09b2";
const BAD_BEARER: &str = "NOT-A-TOKEN-e4b8a1";
const OWN_REQUEST_ID: &str = "crm-run:7.step_2";

struct Fixture {
    /// The path of the owner's one-time dashboard sign-in link.
    login_path: String,
    token: String,
    mcp_token: String,
    unknown_token: String,
    cloud_account: String,
}

/// A workspace whose owner sends from a sandbox account and, choosing the
/// sender, from a connected Cloud API account with distinctive secrets.
async fn create_database(db: &Path) -> Fixture {
    let store = database::open_store(db);
    store
        .write(|c| {
            let ws = admin::create_workspace(c, "Acme")?;
            let owner = admin::add_user(c, &ws.id, "Ann", Role::Owner)?;
            admin::add_account(
                c,
                &ws.id,
                &owner.id,
                "+917000000001",
                DriverKind::Sandbox,
                &json!({}),
            )?;
            let admin_user = admin::add_user(c, &ws.id, "Bob", Role::Admin)?;
            let settings = json!({
                "phone_number_id": "106540352242922",
                "access_token": ACCESS_TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": VERIFY_TOKEN,
            });
            let cloud = admin::add_account(
                c,
                &ws.id,
                &admin_user.id,
                "+917000000002",
                DriverKind::Cloud,
                &settings,
            )?;
            admin::set_account_status(c, &cloud.id, AccountStatus::Connected, None)?;
            let secret = token::generate(TokenKind::Send);
            admin::create_token(c, &owner.id, TokenKind::Send, None, None, &secret)?;
            let mcp = token::generate(TokenKind::Mcp);
            admin::create_token(c, &owner.id, TokenKind::Mcp, None, None, &mcp)?;
            let link = LoginLink::new(Duration::from_secs(900));
            let now = whatan::clock::now_ms();
            whatan::store::dashboard::create_login_link(
                c,
                &owner.id,
                &link.hash,
                link.expires_at,
                now,
            )?;
            Ok(Fixture {
                login_path: link.url(""),
                token: secret.secret,
                mcp_token: mcp.secret,
                unknown_token: token::generate(TokenKind::Send).secret,
                cloud_account: cloud.id,
            })
        })
        .await
        .unwrap()
}

/// A loopback port where nothing listens: Graph API calls fail at once.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[allow(clippy::zombie_processes)] // the test kills and waits
fn start(db: &Path, stderr: &Path) -> (Child, String) {
    let graph = format!("http://127.0.0.1:{}", closed_port());
    let mut child = Command::new(BIN)
        .args(database::cli_args(db))
        .envs(database::cli_env(db))
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .env("WHATAN_LOG", "debug")
        .env("WHATAN_LOG_FORMAT", "json")
        .env("WHATAN_CLOUD_GRAPH_BASE_URL", graph)
        .env("WHATAN_PACING_MIN_DELAY", "0ms")
        .env("WHATAN_PACING_MAX_DELAY", "1ms")
        .env("WHATAN_SANDBOX_RECEIPT_DELAY", "10ms")
        .env(
            "WHATAN_MEDIA_RESOLVE",
            r#"{ "media.example.com" = ["127.0.0.2"] }"#,
        )
        .env(
            "WHATAN_MEDIA_UNSAFE_ALLOW_NETWORKS_FOR_TESTING",
            r#"["127.0.0.2/32"]"#,
        )
        .env("WHATAN_MEDIA_CONNECT_TIMEOUT", "1s")
        .current_dir(db.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("serve prints its address").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(addr) = v["listening"].as_str() {
            return (child, addr.to_string());
        }
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn body_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn read_lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait (bounded) until some stderr line satisfies `found`.
async fn wait_for_line(path: &PathBuf, what: &str, found: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !read_lines(path).iter().any(|l| found(l)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_logs_at_debug_name_requests_and_never_show_secrets_or_texts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let stderr = dir.path().join("stderr.log");
    let fixture = create_database(&db).await;
    let (mut child, addr) = start(&db, &stderr);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let send = |body: Value, bearer: &str| {
        client
            .post(url("/api/v1/messages/send"))
            .bearer_auth(bearer)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
    };

    // Act: sends of every kind, from both drivers; refused tokens;
    // Meta's webhook handshake and a signed notification.
    let text = send(
        json!({"to": "+917999709798", "type": "text", "text": TEXT}),
        &fixture.token,
    )
    .await
    .unwrap();
    assert_eq!(text.status(), 202);
    let text_id = body_of(text).await["sendAttemptId"]
        .as_str()
        .unwrap()
        .to_string();
    let image = json!({"to": "+917999709798", "type": "image",
        "image": {"url": "https://media.example.com/a.jpg", "caption": IMAGE_CAPTION}});
    let image = send(image, &fixture.token).await.unwrap();
    assert_eq!(image.status(), 202);
    let image_id = body_of(image).await["sendAttemptId"]
        .as_str()
        .unwrap()
        .to_string();
    let cloud = client
        .post(url("/api/v1/messages/send"))
        .bearer_auth(&fixture.token)
        .header("X-Request-Id", OWN_REQUEST_ID)
        .body(json!({"from": "+917000000002", "to": "+917999709798", "type": "text", "text": CLOUD_TEXT}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(cloud.status(), 202);
    let cloud_id = body_of(cloud).await["sendAttemptId"]
        .as_str()
        .unwrap()
        .to_string();
    let document = json!({"from": "+917000000002", "to": "+917999709798", "type": "document",
        "document": {"url": "https://media.example.com/c.pdf", "fileName": "c.pdf", "caption": DOCUMENT_CAPTION}});
    assert_eq!(send(document, &fixture.token).await.unwrap().status(), 202);
    for bearer in [BAD_BEARER, fixture.unknown_token.as_str()] {
        let r = send(
            json!({"to": "+917999709798", "type": "text", "text": TEXT}),
            bearer,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
    }
    // An agent's send through the MCP endpoint.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "send_message", "arguments": {"to": "+917999709798", "text": MCP_TEXT}}});
    let mcp = client
        .post(url("/mcp"))
        .bearer_auth(&fixture.mcp_token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200);
    assert_eq!(body_of(mcp).await["result"]["isError"], false);
    let webhook = url(&format!("/webhooks/cloud/{}", fixture.cloud_account));
    let handshake = client
        .get(format!(
            "{webhook}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    let notification = json!({"object": "whatsapp_business_account", "entry": []}).to_string();
    let signed = client
        .post(&webhook)
        .header(
            "X-Hub-Signature-256",
            sign(APP_SECRET, notification.as_bytes()),
        )
        .body(notification)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);

    // The engine has worked on the sends: the sandbox text was delivered
    // and read, the image's media fetch failed, the Cloud API text was
    // tried against the closed port.
    wait_for_line(&stderr, "the Cloud API retry", |l| {
        l.contains("send will be retried") && l.contains(&cloud_id)
    })
    .await;
    let mut polls = 0;
    for (id, done) in [(&text_id, "read"), (&image_id, "failed")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            polls += 1;
            let status = body_of(
                client
                    .get(url(&format!("/api/v1/messages/{id}")))
                    .bearer_auth(&fixture.token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if status["status"] == done {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The dashboard: sign in with the link, open a page, post a form.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let confirm = browser.get(url(&fixture.login_path)).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    let signed_in = browser
        .post(url(&fixture.login_path))
        .header("origin", format!("http://{addr}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let session_id = cookie.trim_start_matches("whatan_session=").to_string();
    let tokens_page = || async {
        let page = browser.get(url("/tokens")).header("cookie", &cookie).send();
        page.await.unwrap().text().await.unwrap()
    };
    let page = tokens_page().await;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap();
    let csrf = csrf[..csrf.find('"').unwrap()].to_string();
    let created = browser
        .post(url("/tokens"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{addr}"))
        .form(&[("csrf", csrf.as_str()), ("kind", "send")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 303);
    let page_token = tokens_page().await;
    let page_token = page_token.split("id=\"new-token\">").nth(1).unwrap();
    let page_token = page_token[..page_token.find('<').unwrap()].to_string();
    let login_secret = fixture.login_path.trim_start_matches("/login/").to_string();

    child.kill().unwrap();
    child.wait().unwrap();

    // Assert.
    let lines = read_lines(&stderr);
    assert!(lines.len() > 10, "debug logs: {lines:?}");
    let secrets = [
        login_secret.as_str(),
        session_id.as_str(),
        csrf.as_str(),
        page_token.as_str(),
        fixture.token.as_str(),
        fixture.mcp_token.as_str(),
        fixture.unknown_token.as_str(),
        BAD_BEARER,
        ACCESS_TOKEN,
        APP_SECRET,
        VERIFY_TOKEN,
        TEXT,
        CLOUD_TEXT,
        MCP_TEXT,
        IMAGE_CAPTION,
        DOCUMENT_CAPTION,
    ];
    for line in &lines {
        for secret in secrets {
            // Any distinctive part would be a leak, not only the whole.
            let marker = secret.split(' ').next().unwrap();
            assert!(!line.contains(marker), "{marker:?} leaked into: {line}");
        }
        assert!(
            !line.to_ascii_lowercase().contains("authorization"),
            "the Authorization header leaked into: {line}"
        );
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(
            v["message"].is_string() || v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let access: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["target"] == "whatan::access")
        .collect();
    // 9 API requests, the status polls, 5 dashboard requests.
    let requests = 9 + polls + 5;
    assert_eq!(
        access.len(),
        requests,
        "one access line per request: {access:?}"
    );
    let status_line = access
        .iter()
        .find(|v| v["route"] == "/api/v1/messages/{id}")
        .expect("the status polls are logged by template");
    assert!(
        !status_line.to_string().contains(&text_id),
        "the raw path is never the route: {status_line}"
    );
    let own = access
        .iter()
        .find(|v| v["request_id"] == OWN_REQUEST_ID)
        .expect("the client's request id is logged");
    assert_eq!(own["route"], "/api/v1/messages/send");
    assert_eq!(own["method"], "POST");
    assert_eq!(own["status"], 202);
    assert_eq!(own["level"], "INFO");
    assert!(own["duration_ms"].is_number());
    assert_eq!(own["client"], "127.0.0.1");
    assert!(
        own["token_id"].as_str().unwrap().starts_with("tok_"),
        "{own}"
    );
    assert_eq!(own["span"]["request_id"], OWN_REQUEST_ID);
    let refused = access.iter().filter(|v| v["status"] == 401).count();
    assert_eq!(refused, 2);
    assert!(access
        .iter()
        .filter(|v| v["status"] == 401)
        .all(|v| v["token_id"] == "-"));
    let webhook_lines = access
        .iter()
        .filter(|v| v["route"] == "/webhooks/cloud/{accountId}")
        .count();
    assert_eq!(webhook_lines, 2);
}
