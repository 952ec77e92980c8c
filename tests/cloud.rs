//! The Cloud API driver end to end: the real whatan server on loopback, a
//! cloud account pointed (through `cloud.graph_base_url`) at a fake Graph
//! API that answers with the shapes of Meta's documentation, sends made over
//! HTTP like a CRM makes them, status webhooks signed like Meta signs them,
//! and `account connect` run as the built binary. Nothing leaves 127.0.0.1.
//!
//! Waiting is always "poll until the condition holds, within a bound";
//! nothing sleeps to synchronise and nothing asserts on timing.

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[path = "support/fake_graph.rs"]
mod fake_graph;
#[allow(dead_code)]
#[path = "support/tls_server.rs"]
mod tls_server;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use fake_graph::{
    meta_error, token_expired, FakeGraph, MessageReply, ACCESS_TOKEN, DISPLAY_PHONE_NUMBER,
    PHONE_NUMBER_ID,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{oneshot, Notify};
use whatan::config::Config;
use whatan::domain::token::{self, TokenKind};
use whatan::domain::{AccountStatus, DriverKind, Role};
use whatan::driver::cloud::CloudDriver;
use whatan::driver::{OutgoingContent, OutgoingMessage, SendError, WhatsAppDriver};
use whatan::store::admin::{self, Account};
use whatan::store::attempts::{self, AttemptRow};
use whatan::store::Store;

const APP_SECRET: &str = "0123456789abcdef-app-secret";
const VERIFY_TOKEN: &str = "verify-token-for-tests";
const TO: &str = "+917999709798";
const TO_DIGITS: &str = "917999709798";
/// Upper bound of every wait: generous for a loaded 2-core CI machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn cloud_settings(access_token: &str, app_secret: &str) -> Value {
    json!({
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": access_token,
        "app_secret": app_secret,
        "verify_token": VERIFY_TOKEN,
    })
}

struct CloudApp {
    base: String,
    http: reqwest::Client,
    store: Store,
    graph: FakeGraph,
    workspace: String,
    account_id: String,
    token: String,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> CloudApp {
    spawn_app_with(|_| {}).await
}

/// The server with one connected cloud account on the fake Graph API,
/// millisecond pacing, and a send token for the account's owner.
async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> CloudApp {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    database::configure(&mut config.database, dir.path().join("whatan.db"));
    config.pacing.min_delay = Duration::from_millis(1);
    config.pacing.max_delay = Duration::from_millis(5);
    config.server.shutdown_timeout = Duration::from_secs(5);
    config.cloud.graph_base_url = graph.base_url.clone();
    config.cloud.request_timeout = Duration::from_secs(20);
    tweak(&mut config);
    let store = Store::open_config(&config.database).unwrap();
    let settings = cloud_settings(ACCESS_TOKEN, APP_SECRET);
    let (workspace, account_id, token) = store
        .write(move |c| {
            let ws = admin::create_workspace(c, "Acme")?;
            let user = admin::add_user(c, &ws.id, "Ann", Role::Owner)?;
            let account = admin::add_account(
                c,
                &ws.id,
                &user.id,
                "+917000000001",
                DriverKind::Cloud,
                &settings,
            )?;
            admin::set_account_status(c, &account.id, AccountStatus::Connected, None)?;
            let secret = token::generate(TokenKind::Send);
            admin::create_token(c, &user.id, TokenKind::Send, None, None, &secret)?;
            Ok((ws.id, account.id, secret.secret))
        })
        .await
        .unwrap();
    let (base, shutdown, task) = start_server(&config, &store).await;
    CloudApp {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        store,
        graph,
        workspace,
        account_id,
        token,
        config,
        shutdown: Some(shutdown),
        task: Some(task),
        _dir: dir,
    }
}

type ServerTask = tokio::task::JoinHandle<Result<(), String>>;

async fn start_server(config: &Config, store: &Store) -> (String, oneshot::Sender<()>, ServerTask) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(whatan::server::serve(
        config.clone(),
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (format!("http://{addr}"), shutdown, task)
}

/// Poll `probe` until it returns `Some`, or fail after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A `messages` webhook notification carrying `statuses`, as Meta sends it.
fn status_notification(statuses: Vec<Value>) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "917000000001",
                        "phone_number_id": PHONE_NUMBER_ID
                    },
                    "statuses": statuses
                },
                "field": "messages"
            }]
        }]
    })
    .to_string()
    .into_bytes()
}

/// One entry of `statuses`.
fn status(wamid: &str, status: &str) -> Value {
    json!({
        "id": wamid,
        "status": status,
        "timestamp": "1750263773",
        "recipient_id": TO_DIGITS,
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}
    })
}

fn failed_status(wamid: &str, code: i64, title: &str, details: &str) -> Value {
    let mut s = status(wamid, "failed");
    s["errors"] = json!([{
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
    }]);
    s
}

impl CloudApp {
    /// Stop the server as SIGTERM does (the same shutdown future) and wait
    /// for it to return.
    async fn stop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Start a new server on the same database.
    async fn start(&mut self) {
        let store = Store::open_config(&self.config.database).unwrap();
        let (base, shutdown, task) = start_server(&self.config, &store).await;
        (self.base, self.store) = (base, store);
        self.shutdown = Some(shutdown);
        self.task = Some(task);
    }

    async fn send(&self, body: Value) -> String {
        let res = self
            .http
            .post(format!("{}/api/v1/messages/send", self.base))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let reply: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(status, 202, "{reply}");
        reply["sendAttemptId"].as_str().unwrap().to_string()
    }

    async fn send_text(&self, text: &str) -> String {
        self.send(json!({"to": TO, "type": "text", "text": text}))
            .await
    }

    async fn status(&self, attempt: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/api/v1/messages/{attempt}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
    }

    /// The attempt's status body once its status is `wanted`.
    async fn wait_for(&self, attempt: &str, wanted: &str) -> Value {
        eventually(&format!("attempt {attempt} to be {wanted}"), || async {
            let s = self.status(attempt).await;
            (s["status"] == wanted).then_some(s)
        })
        .await
    }

    async fn attempt_row(&self, attempt: &str) -> AttemptRow {
        let id = attempt.to_string();
        self.store
            .read(move |c| attempts::get_attempt(c, &id))
            .await
            .unwrap()
            .unwrap()
    }

    async fn account(&self, id: &str) -> Account {
        let id = id.to_string();
        self.store
            .read(move |c| admin::get_account(c, &id))
            .await
            .unwrap()
            .unwrap()
    }

    /// Another account in the workspace (each needs its own user).
    async fn add_account(&self, phone: &str, driver: DriverKind, settings: Value) -> String {
        let (ws, phone) = (self.workspace.clone(), phone.to_string());
        self.store
            .write(move |c| {
                let user = admin::add_user(c, &ws, "Bob", Role::Admin)?;
                let account = admin::add_account(c, &ws, &user.id, &phone, driver, &settings)?;
                Ok(account.id)
            })
            .await
            .unwrap()
    }

    async fn webhook_get(&self, account: &str, query: &str) -> (u16, String, Option<String>) {
        let res = self
            .http
            .get(format!("{}/webhooks/cloud/{account}?{query}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (status, res.text().await.unwrap(), content_type)
    }

    /// POST a webhook body with this `X-Hub-Signature-256` (if any).
    async fn webhook_post(
        &self,
        account: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/webhooks/cloud/{account}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            req = req.header("X-Hub-Signature-256", signature);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POST statuses to this app's account, signed with its app secret.
    async fn deliver_statuses(&self, statuses: Vec<Value>) -> Value {
        let body = status_notification(statuses);
        let (status, reply) = self
            .webhook_post(&self.account_id, &body, Some(&sign(APP_SECRET, &body)))
            .await;
        assert_eq!(status, 200, "{reply}");
        reply
    }

    /// Send a text and wait until Meta accepted it; returns (attempt, wamid).
    async fn accepted_text(&self) -> (String, String) {
        let attempt = self.send_text("Your invoice is ready.").await;
        let s = self.wait_for(&attempt, "accepted").await;
        (attempt, s["messageId"].as_str().unwrap().to_string())
    }
}

// ---- sends -------------------------------------------------------------

#[tokio::test]
async fn a_text_send_posts_the_documented_request_and_reports_wamid_and_wa_id() {
    let app = spawn_app().await;
    // Meta may normalise the number it reports (Brazil's ninth digit, for
    // one); whatan reports Meta's wa_id, not its own guess.
    app.graph.queue([MessageReply::accepted(
        "wamid.HBgMOTE3OTk5NzA5Nzk4FQIAERgSQUJDREVGMDEyMzQ1Njc4AA==",
        "917999709799",
    )]);

    let attempt = app.send_text("Your invoice is ready.").await;
    let s = app.wait_for(&attempt, "accepted").await;

    assert_eq!(
        s["messageId"],
        "wamid.HBgMOTE3OTk5NzA5Nzk4FQIAERgSQUJDREVGMDEyMzQ1Njc4AA=="
    );
    assert_eq!(s["remoteJid"], "917999709799@s.whatsapp.net");
    assert_eq!(s["errorCode"], Value::Null);
    let sent = app.graph.message_requests();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let body = request.json();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["recipient_type"], "individual");
    assert_eq!(body["to"], TO_DIGITS);
    assert_eq!(body["type"], "text");
    assert_eq!(body["text"], json!({"body": "Your invoice is ready."}));
    assert!(
        body["biz_opaque_callback_data"]
            .as_str()
            .unwrap()
            .starts_with("whatan-"),
        "{body}"
    );
}

#[tokio::test]
async fn images_and_documents_are_uploaded_from_the_pinned_fetch_then_sent_by_media_id() {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR a tiny picture";
    const PDF: &[u8] = b"%PDF-1.4 a tiny quote";
    let pki = tls_server::TestPki::new(&["media.test"]);
    let media = tls_server::TestServer::start(&pki, |req, _| match req.path.as_str() {
        "/promo.png" => tls_server::Reply::ok("image/png", PNG),
        "/quote.pdf" => tls_server::Reply::ok("application/pdf", PDF),
        _ => tls_server::Reply::status(404),
    })
    .await;
    let ca = pki.ca_path().to_path_buf();
    let app = spawn_app_with(|c| {
        c.media
            .resolve
            .insert("media.test".into(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        c.media.unsafe_allow_networks_for_testing = vec!["127.0.0.1/32".parse().unwrap()];
        c.media.extra_ca_file = Some(ca);
    })
    .await;
    let port = media.port;

    let image = app
        .send(json!({"to": TO, "type": "image", "image": {
            "url": format!("https://media.test:{port}/promo.png"), "caption": "New arrivals"}}))
        .await;
    app.wait_for(&image, "accepted").await;
    let document = app
        .send(json!({"to": TO, "type": "document", "document": {
            "url": format!("https://media.test:{port}/quote.pdf"), "fileName": "quote.pdf",
            "mimetype": "application/pdf", "caption": "Your quote"}}))
        .await;
    app.wait_for(&document, "accepted").await;

    let uploads = app.graph.upload_requests();
    assert_eq!(uploads.len(), 2);
    for (upload, mimetype, bytes) in [
        (&uploads[0], "image/png", PNG),
        (&uploads[1], "application/pdf", PDF),
    ] {
        assert_eq!(upload.path, format!("/v23.0/{PHONE_NUMBER_ID}/media"));
        let content_type = upload.content_type.clone().unwrap();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8_lossy(&upload.body);
        assert!(text.contains("name=\"messaging_product\"\r\n\r\nwhatsapp\r\n"));
        assert!(text.contains(&format!("name=\"type\"\r\n\r\n{mimetype}\r\n")));
        assert!(text.contains("name=\"file\"; filename="));
        assert!(upload.body.windows(bytes.len()).any(|w| w == bytes));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
    let sent = app.graph.message_requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].json()["type"], "image");
    assert_eq!(
        sent[0].json()["image"],
        json!({"id": "media-1", "caption": "New arrivals"})
    );
    assert_eq!(sent[1].json()["type"], "document");
    assert_eq!(
        sent[1].json()["document"],
        json!({"id": "media-2", "caption": "Your quote", "filename": "quote.pdf"})
    );
}

#[tokio::test]
async fn a_stop_during_a_stalled_media_fetch_is_not_a_hand_off_and_the_message_goes_once() {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR a tiny picture";
    let pki = tls_server::TestPki::new(&["media.test"]);
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = fetches.clone();
    // The first fetch stalls (longer than any shutdown would wait); the
    // next ones answer.
    let media = tls_server::TestServer::start(&pki, move |_, _| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            tls_server::Reply::Stall
        } else {
            tls_server::Reply::ok("image/png", PNG)
        }
    })
    .await;
    let ca = pki.ca_path().to_path_buf();
    let mut app = spawn_app_with(|c| {
        c.media
            .resolve
            .insert("media.test".into(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        c.media.unsafe_allow_networks_for_testing = vec!["127.0.0.1/32".parse().unwrap()];
        c.media.extra_ca_file = Some(ca);
        c.media.fetch_timeout = Duration::from_secs(600);
    })
    .await;
    let image = app
        .send(json!({"to": TO, "type": "image", "image": {
            "url": format!("https://media.test:{}/promo.png", media.port)}}))
        .await;
    eventually("the media fetch to start", || async {
        (fetches.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;

    app.stop().await;
    // The stop interrupted the fetch; nothing was claimed or sent.
    let row = app.attempt_row(&image).await;
    assert_eq!(
        (row.status.as_str(), row.tries, row.message_id.as_deref()),
        ("queued", 0, None)
    );
    assert!(app.graph.message_requests().is_empty());

    app.start().await;
    let accepted = app.wait_for(&image, "accepted").await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(app.graph.message_requests().len(), 1);
    assert_eq!(app.graph.upload_requests().len(), 1);
}

#[tokio::test]
async fn a_number_meta_cannot_deliver_to_fails_with_recipient_not_found() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        400,
        meta_error(
            131026,
            "Message undeliverable",
            "Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp phone number.",
        ),
    )]);

    let attempt = app.send_text("Hello").await;
    let s = app.wait_for(&attempt, "failed").await;

    assert_eq!(s["errorCode"], "recipient_not_found");
    assert!(
        s["errorMessage"].as_str().unwrap().contains("131026"),
        "{s}"
    );
    assert_eq!(app.graph.message_requests().len(), 1);
}

#[tokio::test]
async fn outside_the_24_hour_window_the_send_fails_saying_a_template_is_required() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        400,
        meta_error(
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
    )]);

    let attempt = app.send_text("Hello again").await;
    let s = app.wait_for(&attempt, "failed").await;

    assert_eq!(s["errorCode"], "send_failed");
    let message = s["errorMessage"].as_str().unwrap();
    assert!(message.contains("template"), "{message}");
    assert!(message.contains("24-hour"), "{message}");
    assert!(message.contains("131047"), "{message}");
}

#[tokio::test]
async fn an_expired_token_disconnects_the_account_and_keeps_the_send_queued() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(401, token_expired())]);

    let attempt = app.send_text("Hello").await;
    let account = eventually("the account to be marked disconnected", || async {
        let a = app.account(&app.account_id).await;
        (a.status == AccountStatus::Disconnected).then_some(a)
    })
    .await;

    let detail = account.status_detail.unwrap_or_default();
    assert!(detail.contains("access token"), "{detail}");
    assert!(detail.contains("190"), "{detail}");
    assert!(!detail.contains(ACCESS_TOKEN));
    let s = app.status(&attempt).await;
    assert!(s["status"] == "sending" || s["status"] == "queued", "{s}");
    assert_eq!(s["errorCode"], Value::Null);
    assert_eq!(app.graph.message_requests().len(), 1);
}

#[tokio::test]
async fn the_throughput_limit_is_retried_with_backoff_and_the_message_sent_once() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        429,
        meta_error(
            130429,
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
        ),
    )]);

    let attempt = app.send_text("Hello").await;
    app.wait_for(&attempt, "accepted").await;

    let sent = app.graph.message_requests();
    assert_eq!(sent.len(), 2, "one refused, one accepted");
    assert_eq!(sent[0].body, sent[1].body, "the same message both times");
    assert_eq!(app.attempt_row(&attempt).await.tries, 2);
}

#[tokio::test]
async fn the_pair_rate_limit_is_retried_and_the_message_sent_once() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        400,
        meta_error(
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        ),
    )]);

    let attempt = app.send_text("Hello").await;
    app.wait_for(&attempt, "accepted").await;

    assert_eq!(app.graph.message_requests().len(), 2);
}

#[tokio::test]
async fn a_transient_meta_server_error_is_retried_and_the_message_sent_once() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        500,
        meta_error(
            131016,
            "Service unavailable",
            "A service is temporarily unavailable.",
        ),
    )]);

    let attempt = app.send_text("Hello").await;
    app.wait_for(&attempt, "accepted").await;

    assert_eq!(app.graph.message_requests().len(), 2);
}

#[tokio::test]
async fn a_5xx_without_metas_word_is_not_retried_and_says_the_outcome_is_unknown() {
    let app = spawn_app().await;
    app.graph
        .queue([MessageReply::raw(502, "<html>Bad Gateway</html>")]);

    let attempt = app.send_text("Hello").await;
    let s = app.wait_for(&attempt, "failed").await;

    assert_eq!(s["errorCode"], "send_failed");
    assert!(
        s["errorMessage"]
            .as_str()
            .unwrap()
            .contains("outcome unknown"),
        "{s}"
    );
    assert_eq!(app.graph.message_requests().len(), 1);
}

#[tokio::test]
async fn an_answer_slower_than_the_request_timeout_fails_once_with_outcome_unknown() {
    let app = spawn_app_with(|c| c.cloud.request_timeout = Duration::from_millis(300)).await;
    app.graph
        .queue([MessageReply::slow(Duration::from_secs(5))]);

    let attempt = app.send_text("Hello").await;
    let s = app.wait_for(&attempt, "failed").await;

    assert_eq!(s["errorCode"], "send_failed");
    let message = s["errorMessage"].as_str().unwrap();
    assert!(message.contains("outcome unknown"), "{message}");
    assert!(message.contains("not re-sent"), "{message}");
    assert_eq!(app.graph.message_requests().len(), 1);
}

#[tokio::test]
async fn any_other_meta_error_fails_with_metas_code_and_message() {
    let app = spawn_app().await;
    app.graph.queue([MessageReply::error(
        400,
        meta_error(100, "Invalid parameter", "Parameter 'to' is invalid."),
    )]);

    let attempt = app.send_text("Hello").await;
    let s = app.wait_for(&attempt, "failed").await;

    assert_eq!(s["errorCode"], "send_failed");
    let message = s["errorMessage"].as_str().unwrap();
    assert!(message.contains("Meta error 100"), "{message}");
    assert!(message.contains("Invalid parameter"), "{message}");
    assert!(message.contains("Parameter 'to' is invalid."), "{message}");
}

#[tokio::test]
async fn an_unreachable_graph_api_is_retried_not_failed() {
    // A port where nothing listens: every connection is refused, so no
    // request is ever written and retrying cannot duplicate a message.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app =
        spawn_app_with(|c| c.cloud.graph_base_url = format!("http://127.0.0.1:{dead_port}")).await;

    let attempt = app.send_text("Hello").await;
    let row = eventually("a second try", || async {
        let row = app.attempt_row(&attempt).await;
        (row.tries >= 2).then_some(row)
    })
    .await;

    assert_eq!(row.status.as_str(), "sending");
    assert_eq!(row.error_code, None);
    assert_eq!(
        app.account(&app.account_id).await.status,
        AccountStatus::Connected
    );
}

#[tokio::test]
async fn a_redelivered_hand_off_is_never_sent_again() {
    let app = spawn_app().await;
    let mut config = Config::default();
    config.cloud.graph_base_url = app.graph.base_url.clone();
    let driver = CloudDriver::new(&config.cloud).unwrap();
    let account = app.account(&app.account_id).await;
    let message = |redelivery| OutgoingMessage {
        message_id: "whatan-00000000-0000-4000-8000-000000000000".into(),
        to: TO.into(),
        content: OutgoingContent::Text {
            body: "Hello".into(),
        },
        redelivery,
        lease: None,
    };

    let refused = driver.send(&account, &message(true)).await;

    match refused {
        Err(SendError::Failed { code, message }) => {
            assert_eq!(code, "send_failed");
            assert!(message.contains("outcome unknown"), "{message}");
            assert!(message.contains("not re-sent"), "{message}");
        }
        other => panic!("expected a final failure, got {other:?}"),
    }
    assert!(app.graph.requests().is_empty());
    // The same message on a first hand-off does go out.
    let accepted = driver.send(&account, &message(false)).await.unwrap();
    assert!(accepted.message_id.starts_with("wamid."));
    assert_eq!(app.graph.message_requests().len(), 1);
}

// ---- webhooks ----------------------------------------------------------

#[tokio::test]
async fn the_webhook_handshake_echoes_the_challenge_only_for_the_right_verify_token() {
    let app = spawn_app().await;
    let sandbox = app
        .add_account("+917000000002", DriverKind::Sandbox, json!({}))
        .await;
    let query = |token: &str| {
        format!("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}")
    };

    let (status, body, content_type) = app.webhook_get(&app.account_id, &query(VERIFY_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body, "1158201444");
    assert!(content_type.unwrap().starts_with("text/plain"));

    let (status, body, _) = app.webhook_get(&app.account_id, &query("wrong")).await;
    assert_eq!(status, 403);
    assert!(!body.contains("1158201444"));
    let (status, _, _) = app.webhook_get(&app.account_id, "hub.challenge=1").await;
    assert_eq!(status, 400);
    let (status, _, _) = app.webhook_get(&sandbox, &query(VERIFY_TOKEN)).await;
    assert_eq!(status, 404, "only cloud accounts have a webhook");
    let (status, _, _) = app.webhook_get("acc_nope", &query(VERIFY_TOKEN)).await;
    assert_eq!(status, 404);

    let res = app
        .http
        .put(format!("{}/webhooks/cloud/{}", app.base, app.account_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers()["allow"], "GET, POST");
}

#[tokio::test]
async fn signed_status_webhooks_move_an_attempt_forward_and_never_back() {
    let app = spawn_app().await;
    let (attempt, wamid) = app.accepted_text().await;

    let reply = app
        .deliver_statuses(vec![status(&wamid, "sent"), status(&wamid, "delivered")])
        .await;
    assert_eq!(reply, json!({"received": 2, "applied": 1}));
    assert_eq!(app.status(&attempt).await["status"], "delivered");

    // A duplicate changes nothing.
    let before = app.status(&attempt).await;
    let reply = app
        .deliver_statuses(vec![status(&wamid, "delivered")])
        .await;
    assert_eq!(reply["applied"], 0);
    assert_eq!(app.status(&attempt).await, before);

    app.deliver_statuses(vec![status(&wamid, "read")]).await;
    let read = app.status(&attempt).await;
    assert_eq!(read["status"], "read");

    // Out of order: delivered after read, and a failure after read.
    app.deliver_statuses(vec![
        status(&wamid, "delivered"),
        failed_status(&wamid, 131000, "Something went wrong", "unknown error"),
    ])
    .await;
    assert_eq!(app.status(&attempt).await, read);
    assert_eq!(read["messageId"], wamid.as_str());
    assert_eq!(read["remoteJid"], format!("{TO_DIGITS}@s.whatsapp.net"));
    assert_eq!(read["errorCode"], Value::Null);
}

#[tokio::test]
async fn failed_status_webhooks_report_metas_error() {
    let app = spawn_app().await;
    let (first, first_wamid) = app.accepted_text().await;
    let (second, second_wamid) = app.accepted_text().await;

    app.deliver_statuses(vec![
        failed_status(
            &first_wamid,
            131026,
            "Message undeliverable",
            "Unable to deliver message.",
        ),
        failed_status(
            &second_wamid,
            131047,
            "Re-engagement message",
            "More than 24 hours have passed since the recipient last replied to the sender number.",
        ),
    ])
    .await;

    let first = app.status(&first).await;
    assert_eq!(first["status"], "failed");
    assert_eq!(first["errorCode"], "recipient_not_found");
    assert!(first["errorMessage"]
        .as_str()
        .unwrap()
        .contains("Meta error 131026: Message undeliverable"));
    let second = app.status(&second).await;
    assert_eq!(second["errorCode"], "send_failed");
    assert!(second["errorMessage"]
        .as_str()
        .unwrap()
        .contains("template"));
}

#[tokio::test]
async fn unsigned_or_badly_signed_webhooks_get_401_and_change_nothing() {
    let app = spawn_app().await;
    let (attempt, wamid) = app.accepted_text().await;
    let before = app.status(&attempt).await;
    let body = status_notification(vec![status(&wamid, "read")]);
    let other_body = status_notification(vec![status(&wamid, "delivered")]);
    let good = sign(APP_SECRET, &body);

    let signatures = [
        None,
        Some(String::new()),
        Some(sign("not-the-app-secret", &body)),
        Some(sign(APP_SECRET, &other_body)),
        Some(good.replace("sha256=", "sha1=")),
        Some(good.trim_start_matches("sha256=").to_string()),
        Some(format!("{}00", good)),
    ];
    for signature in &signatures {
        let (status, reply) = app
            .webhook_post(&app.account_id, &body, signature.as_deref())
            .await;
        assert_eq!(status, 401, "{signature:?}");
        assert_eq!(reply["error"]["code"], "unauthorized");
    }

    assert_eq!(app.status(&attempt).await, before);
}

#[tokio::test]
async fn signed_webhooks_about_nothing_known_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let (attempt, _) = app.accepted_text().await;
    let before = app.status(&attempt).await;

    let reply = app
        .deliver_statuses(vec![status("wamid.NOT-OURS", "delivered")])
        .await;
    assert_eq!(reply, json!({"received": 1, "applied": 0}));
    // An incoming message, not a status; and a body that is not JSON.
    let incoming = json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
        "changes": [{"field": "messages", "value": {"messages": [{"id": "wamid.IN", "type": "text"}]}}]}]})
    .to_string();
    for body in [incoming.as_bytes(), b"not json".as_slice()] {
        let (status, _) = app
            .webhook_post(&app.account_id, body, Some(&sign(APP_SECRET, body)))
            .await;
        assert_eq!(status, 200);
    }

    assert_eq!(app.status(&attempt).await, before);
}

#[tokio::test]
async fn a_status_that_overtakes_the_send_answer_is_matched_by_the_callback_data() {
    let app = spawn_app().await;
    let gate = Arc::new(Notify::new());
    app.graph
        .queue([MessageReply::accepted("wamid.OVERTAKEN", TO_DIGITS).held(gate.clone())]);

    let attempt = app.send_text("Hello").await;
    let placeholder = eventually("the send to reach the fake Graph API", || async {
        let sent = app.graph.message_requests();
        sent.first().map(|r| {
            r.json()["biz_opaque_callback_data"]
                .as_str()
                .unwrap()
                .to_string()
        })
    })
    .await;
    let mut delivered = status("wamid.OVERTAKEN", "delivered");
    delivered["biz_opaque_callback_data"] = json!(placeholder);
    let reply = app.deliver_statuses(vec![delivered]).await;
    assert_eq!(reply["applied"], 1);
    gate.notify_one();
    // The next send is handed off only after this one's result is recorded.
    let (_, _) = app.accepted_text().await;

    let s = app.status(&attempt).await;
    assert_eq!(s["status"], "delivered");
    assert_eq!(s["messageId"], "wamid.OVERTAKEN");
}

#[tokio::test]
async fn a_webhook_moves_only_messages_of_accounts_of_the_same_meta_app() {
    let app = spawn_app().await;
    let (attempt, wamid) = app.accepted_text().await;
    let other_app = app
        .add_account(
            "+917000000002",
            DriverKind::Cloud,
            cloud_settings(ACCESS_TOKEN, "another-apps-secret"),
        )
        .await;
    let same_app = app
        .add_account(
            "+917000000003",
            DriverKind::Cloud,
            cloud_settings(ACCESS_TOKEN, APP_SECRET),
        )
        .await;
    let body = status_notification(vec![status(&wamid, "delivered")]);

    let (status, reply) = app
        .webhook_post(&other_app, &body, Some(&sign("another-apps-secret", &body)))
        .await;
    assert_eq!((status, reply["applied"].clone()), (200, json!(0)));
    assert_eq!(app.status(&attempt).await["status"], "accepted");

    // Meta sends every number of one app to the app's one webhook URL.
    let (status, reply) = app
        .webhook_post(&same_app, &body, Some(&sign(APP_SECRET, &body)))
        .await;
    assert_eq!((status, reply["applied"].clone()), (200, json!(1)));
    assert_eq!(app.status(&attempt).await["status"], "delivered");
}

// ---- the admin CLI -----------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_whatan");

/// Run the CLI against `db` with the Graph API at `graph_base_url`, off the
/// runtime thread so the fake Graph API keeps answering.
async fn whatan(db: &Path, graph_base_url: &str, args: &[&str]) -> Output {
    let (db, url) = (db.to_path_buf(), graph_base_url.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(database::cli_args(&db))
            .envs(database::cli_env(&db))
            .args(&args)
            .env_remove("WHATAN_LOG")
            .env("WHATAN_CLOUD_GRAPH_BASE_URL", url)
            .current_dir(db.parent().unwrap())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one-line reason of a failed command.
fn failure(out: &Output) -> String {
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    err
}

#[tokio::test]
async fn account_connect_checks_cloud_credentials_and_says_what_is_wrong() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whatan.db");
    let url = graph.base_url.clone();
    let ws = stdout_json(&whatan(&db, &url, &["--json", "workspace", "create", "Acme"]).await)
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Four cloud accounts (one user each): good credentials, a revoked
    // token, another number's id, an id the token cannot see.
    let mut added = Vec::new();
    for (phone, number_id, access_token) in [
        ("+917000000001", PHONE_NUMBER_ID, ACCESS_TOKEN),
        ("+917000000002", PHONE_NUMBER_ID, "EAAGrevokedTokenXYZ"),
        ("+917000000003", PHONE_NUMBER_ID, ACCESS_TOKEN),
        ("+917000000004", "999000111", ACCESS_TOKEN),
    ] {
        let user = stdout_json(
            &whatan(
                &db,
                &url,
                &[
                    "--json",
                    "user",
                    "add",
                    "--workspace",
                    &ws,
                    "--name",
                    phone,
                    "--role",
                    "member",
                ],
            )
            .await,
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        let out = whatan(
            &db,
            &url,
            &[
                "--json",
                "account",
                "add",
                "--workspace",
                &ws,
                "--user",
                &user,
                "--phone",
                phone,
                "--driver",
                "cloud",
                "--phone-number-id",
                number_id,
                "--access-token",
                access_token,
                "--app-secret",
                APP_SECRET,
                "--verify-token",
                VERIFY_TOKEN,
            ],
        )
        .await;
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        let account = stdout_json(&out);
        assert_eq!(account["status"], "disconnected");
        for secret in [access_token, APP_SECRET, VERIFY_TOKEN] {
            assert!(!printed.contains(secret), "account add printed a secret");
        }
        added.push(account["id"].as_str().unwrap().to_string());
    }
    let connect = |id: &str| {
        let id = id.to_string();
        let (db, url) = (db.clone(), url.clone());
        async move { whatan(&db, &url, &["--json", "account", "connect", &id]).await }
    };

    // Good credentials for this number: connected.
    let connected = stdout_json(&connect(&added[0]).await);
    assert_eq!(connected, json!({"id": added[0], "status": "connected"}));
    let check = graph.requests().pop().unwrap();
    assert_eq!(check.method, "GET");
    assert_eq!(check.path, format!("/v23.0/{PHONE_NUMBER_ID}"));
    assert_eq!(
        check.query,
        "fields=display_phone_number,verified_name,quality_rating"
    );

    // A revoked token: refused, with Meta's reason, the token not echoed.
    let err = failure(&connect(&added[1]).await);
    assert!(err.contains("refused the access token"), "{err}");
    assert!(err.contains("OAuthException 190"), "{err}");
    assert!(!err.contains("EAAGrevokedTokenXYZ"), "{err}");

    // The phone number id belongs to another number.
    let err = failure(&connect(&added[2]).await);
    assert!(err.contains(DISPLAY_PHONE_NUMBER), "{err}");
    assert!(err.contains("+917000000003"), "{err}");

    // A phone number id the token cannot see.
    let err = failure(&connect(&added[3]).await);
    assert!(err.contains("999000111 does not exist"), "{err}");

    // No Graph API at all.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = whatan(
        &db,
        &format!("http://127.0.0.1:{dead_port}"),
        &["account", "connect", &added[0]],
    )
    .await;
    assert!(failure(&out).contains("cannot reach the Graph API"));

    // Only the verified account is connected, and no listing shows a secret.
    let list = whatan(&db, &url, &["--json", "account", "list"]).await;
    let accounts = stdout_json(&list);
    let statuses: Vec<&str> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["connected", "disconnected", "disconnected", "disconnected"]
    );
    for args in [
        &["--json", "account", "list"][..],
        &["account", "list"][..],
        &["--json", "token", "list"][..],
    ] {
        let out = whatan(&db, &url, args).await;
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success());
        for secret in [
            ACCESS_TOKEN,
            "EAAGrevokedTokenXYZ",
            APP_SECRET,
            VERIFY_TOKEN,
        ] {
            assert!(!printed.contains(secret), "{args:?} printed a secret");
        }
    }
}
