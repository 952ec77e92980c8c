//! GET /api/v1/messages (the list: read rules, filters, pages) and
//! POST /api/v1/messages/{id}/cancel (the race with the pacer included).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use whatan::clock::{parse_rfc3339_ms, rfc3339_ms, Clock};
use whatan::domain::{DriverKind, Role};
use whatan::driver::{Accepted, OutgoingContent, OutgoingMessage, SendError, WhatsAppDriver};
use whatan::store::admin::Account;

use crate::helpers::*;

const TO: &str = "+917999709798";

async fn queue(app: &TestApp, token: &str, from: Option<&str>) -> String {
    queue_to(app, token, from, TO).await
}

async fn queue_to(app: &TestApp, token: &str, from: Option<&str>, to: &str) -> String {
    let mut body = text_to(to);
    if let Some(f) = from {
        body["from"] = json!(f);
    }
    let r = app.send(token, None, &body).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    r.json()["sendAttemptId"].as_str().unwrap().to_string()
}

/// `GET /api/v1/messages` with a raw query string (`""` for none).
async fn list(app: &TestApp, token: &str, query: &str) -> Reply {
    let mut req = app.client.get(app.url(&format!("/api/v1/messages{query}")));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    reply(req.send().await.unwrap()).await
}

/// The ids of one page, in order, and the page's `nextCursor`.
async fn page(app: &TestApp, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let r = list(app, token, query).await;
    assert_eq!(
        r.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&r.bytes)
    );
    let body = r.json();
    let ids = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sendAttemptId"].as_str().unwrap().to_string())
        .collect();
    let next = body["nextCursor"].as_str().map(str::to_string);
    assert!(
        body.get("nextCursor").is_some(),
        "nextCursor is always present"
    );
    (ids, next)
}

async fn ids(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    page(app, token, query).await.0
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> Reply {
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/messages/{id}/cancel")));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    reply(req.send().await.unwrap()).await
}

/// One hand-off, then the pacer waits an hour: what is queued stays queued.
async fn spawn_slow_app() -> TestApp {
    spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
    })
    .await
}

async fn outsider(app: &TestApp) -> Member {
    app.store
        .write(|c| {
            let ws = whatan::store::admin::create_workspace(c, "Other")?;
            add_member(c, &ws.id, Role::Owner, "+917000000005")
        })
        .await
        .unwrap()
}

fn newest_first(mut ids: Vec<&String>) -> Vec<String> {
    ids.reverse();
    ids.into_iter().cloned().collect()
}

#[tokio::test]
async fn the_list_follows_the_status_endpoints_read_rules() {
    // Arrange
    let app = spawn_slow_app().await;
    let owner_personal = queue(&app, &app.owner.token, None).await;
    let admin_workspace = queue(&app, &app.admin.token, Some(&app.member.phone)).await;
    let member_personal = queue(&app, &app.member.token, None).await;
    let owner_workspace = queue(&app, &app.owner.token, Some(&app.owner.phone)).await;
    let admin_personal = queue(&app, &app.admin.token, None).await;
    let outsider = outsider(&app).await;
    let outsider_personal = queue(&app, &outsider.token, None).await;

    // Act / Assert: owners and admins see their own and the workspace's
    // workspace-mode sends; members their own; nobody another workspace's.
    assert_eq!(
        ids(&app, &app.owner.token, "").await,
        newest_first(vec![&owner_personal, &admin_workspace, &owner_workspace])
    );
    assert_eq!(
        ids(&app, &app.admin.token, "").await,
        newest_first(vec![&admin_workspace, &owner_workspace, &admin_personal])
    );
    assert_eq!(
        ids(&app, &app.member.token, "").await,
        vec![member_personal.clone()]
    );
    assert_eq!(
        ids(&app, &outsider.token, "").await,
        vec![outsider_personal.clone()]
    );
    // Each entry is exactly the status endpoint's body.
    let r = list(&app, &app.member.token, "").await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let listed = &r.json()["data"][0];
    assert_eq!(
        *listed,
        app.status(&app.member.token, &member_personal).await.json()
    );
}

#[tokio::test]
async fn status_account_and_sender_filters_narrow_the_list() {
    // Arrange: one send fails (an unreachable number), one is read, and
    // the owner also sends from the member's number.
    let app = spawn_app().await;
    let failed = queue_to(&app, &app.owner.token, None, "+917999000000").await;
    let read = queue(&app, &app.owner.token, None).await;
    let from_member = queue(&app, &app.owner.token, Some(&app.member.phone)).await;
    for id in [&read, &from_member] {
        app.wait_for_status(&app.owner.token, id, |b| b["status"] == "read")
            .await;
    }
    app.wait_for_status(&app.owner.token, &failed, |b| b["status"] == "failed")
        .await;
    let owner = &app.owner.token;

    // Act / Assert
    assert_eq!(
        ids(&app, owner, "?status=failed").await,
        vec![failed.clone()]
    );
    assert_eq!(
        ids(&app, owner, "?status=read").await,
        vec![from_member.clone(), read.clone()]
    );
    assert!(ids(&app, owner, "?status=queued").await.is_empty());
    let member_account = app.member.account.clone().unwrap();
    assert_eq!(
        ids(&app, owner, &format!("?accountId={member_account}")).await,
        vec![from_member.clone()]
    );
    let owner_account = app.owner.account.clone().unwrap();
    assert_eq!(
        ids(
            &app,
            owner,
            &format!("?accountId={owner_account}&status=read")
        )
        .await,
        vec![read.clone()]
    );
    // An account nobody has: nothing, not an error.
    assert!(ids(&app, owner, "?accountId=acc_nobody").await.is_empty());
    // `from` is read with the send body's phone rules, however encoded.
    for query in [
        "?from=%2B917000000003",
        "?from=%2B91%207000-000003",
        "?from=%2B91+7000-000003",
        "?from=+917000000003",
        "?from=0091%20(7000)%20000003",
    ] {
        assert_eq!(
            ids(&app, owner, query).await,
            vec![from_member.clone()],
            "{query}"
        );
    }
    let by_builder = app
        .client
        .get(app.url("/api/v1/messages"))
        .query(&[("from", "+91 7000-000001"), ("status", "failed")])
        .bearer_auth(owner)
        .send()
        .await
        .unwrap();
    let body = reply(by_builder).await.json();
    assert_eq!(body["data"][0]["sendAttemptId"], failed.as_str(), "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn since_is_inclusive_and_until_exclusive_on_created_at() {
    // Arrange: three sends a second apart on a clock the test holds.
    let start = 1_778_752_800_000; // 2026-05-14T10:00:00.000Z
    let (clock, hand) = Clock::manual(start);
    let app = spawn_app_with_hooks(
        |_| {},
        Hooks {
            clock,
            ..Default::default()
        },
    )
    .await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(queue(&app, &app.owner.token, None).await);
        hand.advance(Duration::from_secs(1));
    }
    let at = rfc3339_ms;
    let owner = &app.owner.token;

    // Act / Assert
    let since = ids(&app, owner, &format!("?since={}", at(start + 1000))).await;
    assert_eq!(since, vec![sent[2].clone(), sent[1].clone()]);
    let until = ids(&app, owner, &format!("?until={}", at(start + 1000))).await;
    assert_eq!(until, vec![sent[0].clone()]);
    let window = format!("?since={}&until={}", at(start + 1000), at(start + 2000));
    assert_eq!(ids(&app, owner, &window).await, vec![sent[1].clone()]);
    // The same instant with an offset, and the createdAt the body shows.
    let offset = "?since=2026-05-14T15%3A30%3A01%2B05%3A30";
    assert_eq!(ids(&app, owner, offset).await.len(), 2);
    let created = app.status(owner, &sent[1]).await.json()["createdAt"].clone();
    assert_eq!(
        parse_rfc3339_ms(created.as_str().unwrap()),
        Some(start + 1000)
    );
    // An empty window is an empty page, not an error.
    let backwards = format!("?since={}&until={}", at(start + 2000), at(start));
    assert!(ids(&app, owner, &backwards).await.is_empty());
}

#[tokio::test]
async fn pages_walk_the_whole_list_newest_first_without_gaps_or_repeats() {
    // Arrange: the owner's own sends interleaved with the admin's
    // workspace-mode sends, so every page merges both ranges.
    let app = spawn_slow_app().await;
    let mut sent = Vec::new();
    for i in 0..11 {
        let id = if i % 3 == 0 {
            queue(&app, &app.admin.token, Some(&app.member.phone)).await
        } else {
            queue(&app, &app.owner.token, None).await
        };
        sent.push(id);
    }
    // The admin's personal sends are not the owner's to see.
    queue(&app, &app.admin.token, None).await;
    let expected = newest_first(sent.iter().collect());

    // Act: pages of 4, following nextCursor.
    let mut walked = Vec::new();
    let mut query = "?limit=4".to_string();
    let mut pages = 0;
    loop {
        let (ids, next) = page(&app, &app.owner.token, &query).await;
        pages += 1;
        assert!(ids.len() <= 4);
        walked.extend(ids);
        let Some(cursor) = next else { break };
        query = format!("?limit=4&cursor={cursor}");
        assert!(pages < 10, "the cursor must move");
    }

    // Assert
    assert_eq!(pages, 3);
    assert_eq!(walked, expected);
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), walked.len());
    // The default page holds them all; a page that ends exactly at the end
    // of the list has no next page.
    assert_eq!(
        page(&app, &app.owner.token, "").await,
        (expected.clone(), None)
    );
    assert_eq!(
        page(&app, &app.owner.token, "?limit=11").await,
        (expected, None)
    );
    // A cursor combines with filters: the rest of the workspace-mode sends.
    let (first, next) = page(
        &app,
        &app.owner.token,
        &format!(
            "?limit=1&accountId={}",
            app.member.account.as_deref().unwrap()
        ),
    )
    .await;
    assert_eq!(first, vec![sent[9].clone()]);
    let rest = ids(
        &app,
        &app.owner.token,
        &format!(
            "?accountId={}&cursor={}",
            app.member.account.as_deref().unwrap(),
            next.unwrap()
        ),
    )
    .await;
    assert_eq!(
        rest,
        vec![sent[6].clone(), sent[3].clone(), sent[0].clone()]
    );
}

#[tokio::test]
async fn each_bad_filter_is_invalid_request_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, field) in [
        ("?status=sent", "status"),
        ("?status=", "status"),
        ("?accountId=acc%2F1", "accountId"),
        ("?from=%2B1", "from"),
        ("?from=917000000001", "from"),
        ("?since=yesterday", "since"),
        ("?until=2026-05-14", "until"),
        ("?since=2026-02-30T00%3A00%3A00Z", "since"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=42", "cursor"),
        ("?cursor=c_x", "cursor"),
        ("?limit=5&limit=5", "limit"),
        ("?status=read&status=failed", "status"),
        ("?page=2", "page"),
        ("?status=read&offset=10", "offset"),
    ] {
        let r = list(&app, &app.owner.token, query).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_request"),
            "{query}"
        );
        assert_eq!(r.json()["error"]["field"], field, "{query}");
    }
    // The limits themselves are fine.
    for query in ["?limit=1", "?limit=200"] {
        assert_eq!(list(&app, &app.owner.token, query).await.status, 200);
    }
}

#[tokio::test]
async fn authentication_comes_before_any_query_error() {
    let app = spawn_app().await;
    for token in ["", "not-a-token"] {
        let r = list(&app, token, "?limit=0&nonsense=1").await;
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        let r = cancel(&app, token, "not-a-uuid").await;
        assert_eq!(r.status, 401);
    }
    // Wrong methods name the allowed one.
    let r = reply(
        app.client
            .post(app.url("/api/v1/messages"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("GET")));
    let id = "f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53";
    let r = reply(
        app.client
            .get(app.url(&format!("/api/v1/messages/{id}/cancel")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.header("allow").as_deref()),
        (405, Some("POST"))
    );
}

#[tokio::test]
async fn a_queued_send_is_cancelled_and_the_rest_of_the_queue_still_goes_out() {
    // Arrange: the first send is handed off, the second waits an hour.
    let app = spawn_slow_app().await;
    let first = queue(&app, &app.owner.token, None).await;
    let second = queue(&app, &app.owner.token, None).await;

    // Act
    let r = cancel(&app, &app.owner.token, &second).await;

    // Assert
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let body = r.json();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["errorCode"], "cancelled");
    assert!(body["errorMessage"].as_str().unwrap().contains("cancelled"));
    assert_eq!(body["messageId"], Value::Null);
    assert_eq!(body, app.status(&app.owner.token, &second).await.json());
    // Cancelling again: it is no longer queued.
    let again = cancel(&app, &app.owner.token, &second).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "not_cancellable")
    );
    app.wait_for_status(&app.owner.token, &first, |b| b["status"] == "read")
        .await;
    assert_eq!(
        ids(&app, &app.owner.token, "?status=failed").await,
        vec![second.clone()]
    );
}

#[tokio::test]
async fn a_send_already_handed_off_is_not_cancellable() {
    let app = spawn_app().await;
    let id = queue(&app, &app.member.token, None).await;
    app.wait_for_status(&app.member.token, &id, |b| b["status"] == "read")
        .await;

    let r = cancel(&app, &app.member.token, &id).await;

    assert_eq!((r.status, r.code().as_str()), (409, "not_cancellable"));
    let body = app.status(&app.member.token, &id).await.json();
    assert_eq!(body["status"], "read");
    assert_eq!(body["errorCode"], Value::Null);
}

#[tokio::test]
async fn cancel_follows_the_read_rules_and_hides_what_it_may_not_read() {
    // Arrange: all from the owner's account, queued behind its first
    // hand-off.
    let app = spawn_slow_app().await;
    queue(&app, &app.owner.token, None).await;
    let owner_personal = queue(&app, &app.owner.token, None).await;
    let admin_workspace = queue(&app, &app.admin.token, Some(&app.owner.phone)).await;
    let outsider = outsider(&app).await;

    // Act / Assert: unknown, malformed and unreadable are all 404.
    for (token, id) in [
        (&app.owner.token, "f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53"),
        (&app.owner.token, "not-a-uuid"),
        (&app.member.token, owner_personal.as_str()),
        (&app.admin.token, owner_personal.as_str()),
        (&outsider.token, owner_personal.as_str()),
        (&outsider.token, admin_workspace.as_str()),
        (&app.member.token, admin_workspace.as_str()),
    ] {
        let r = cancel(&app, token, id).await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{id}");
    }
    for id in [&owner_personal, &admin_workspace] {
        assert_eq!(
            app.status(&app.owner.token, id).await.json()["status"],
            "queued"
        );
    }
    // The owner reads (so may cancel) the admin's workspace-mode send.
    let r = cancel(&app, &app.owner.token, &admin_workspace).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["errorCode"], "cancelled");
}

#[tokio::test]
async fn a_cancelled_send_still_counts_toward_the_daily_limit() {
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
        c.pacing.daily_limit = 2;
    })
    .await;
    queue(&app, &app.owner.token, None).await;
    let second = queue(&app, &app.owner.token, None).await;
    assert_eq!(cancel(&app, &app.owner.token, &second).await.status, 200);

    let r = app.send(&app.owner.token, None, &text_to(TO)).await;

    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert_eq!(
        app.count("SELECT count FROM daily_counters").await,
        2,
        "the cancel gave nothing back"
    );
}

/// Wraps the sandbox driver: the first `prepare` reports its attempt and
/// waits for the test's go; every `send` is counted.
struct HeldInPrepare {
    inner: Arc<dyn WhatsAppDriver>,
    entered: mpsc::UnboundedSender<String>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
    sends: Arc<AtomicUsize>,
}

#[async_trait]
impl WhatsAppDriver for HeldInPrepare {
    fn kind(&self) -> DriverKind {
        self.inner.kind()
    }

    fn new_message_id(&self) -> String {
        self.inner.new_message_id()
    }

    async fn prepare(
        &self,
        account: &Account,
        attempt_id: &str,
        content: OutgoingContent,
    ) -> Result<OutgoingContent, SendError> {
        let release = self.release.lock().unwrap().take();
        if let Some(release) = release {
            let _ = self.entered.send(attempt_id.to_string());
            let _ = release.await;
        }
        self.inner.prepare(account, attempt_id, content).await
    }

    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        self.sends.fetch_add(1, Ordering::SeqCst);
        self.inner.send(account, message).await
    }
}

#[tokio::test]
async fn a_cancel_while_the_pacer_prepares_the_send_wins_and_nothing_reaches_whatsapp() {
    // Arrange: the pacer takes the send and stops inside prepare.
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = oneshot::channel();
    let sends = Arc::new(AtomicUsize::new(0));
    let driver_sends = sends.clone();
    let app = spawn_app_with_hooks(
        |_| {},
        Hooks {
            wrap_drivers: Some(Box::new(move |drivers| {
                let sandbox = drivers.get(DriverKind::Sandbox).unwrap();
                drivers.with(Arc::new(HeldInPrepare {
                    inner: sandbox,
                    entered: entered_tx,
                    release: Mutex::new(Some(release_rx)),
                    sends: driver_sends,
                }))
            })),
            ..Default::default()
        },
    )
    .await;
    let id = queue(&app, &app.owner.token, None).await;
    let prepared = tokio::time::timeout(Duration::from_secs(20), entered.recv())
        .await
        .expect("the pacer never reached prepare")
        .unwrap();
    assert_eq!(prepared, id);

    // Act: cancel while the pacer holds the send, then let it go on.
    let r = cancel(&app, &app.owner.token, &id).await;
    release.send(()).unwrap();

    // Assert: the cancel won; the pacer's claim found nothing to claim.
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["errorCode"], "cancelled");
    // A later send goes out through the same pacer, so once it is handed
    // off the held hand-off is certainly over.
    let later = queue(&app, &app.owner.token, None).await;
    let later_body = app
        .wait_for_status(&app.owner.token, &later, |b| b["status"] == "read")
        .await;
    assert_eq!(
        sends.load(Ordering::SeqCst),
        1,
        "only the later send reached the driver"
    );
    assert_eq!(app.count("SELECT count(*) FROM sandbox_outbox").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM sandbox_handoffs").await, 1);
    let delivered: String = app
        .store
        .read(|c| Ok(c.query_row("SELECT message_id FROM sandbox_outbox", (), |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(later_body["messageId"], delivered.as_str());
    let body = app.status(&app.owner.token, &id).await.json();
    assert_eq!(
        (body["status"].as_str(), body["errorCode"].as_str()),
        (Some("failed"), Some("cancelled"))
    );
    assert_eq!(body["messageId"], Value::Null, "never claimed");
}
