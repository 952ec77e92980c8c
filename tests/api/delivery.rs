//! End to end through HTTP, the pacer and the sandbox network.

use std::time::Duration;

use crate::helpers::*;
use serde_json::{json, Value};
use whatan::domain::AccountStatus;

async fn queue_text(app: &TestApp, token: &str, to: &str) -> String {
    let r = app.send(token, None, &text_to(to)).await;
    assert_eq!(r.status, 202);
    r.json()["sendAttemptId"].as_str().unwrap().to_string()
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |b| b["status"] == s
}

async fn outbox(app: &TestApp) -> Vec<Value> {
    app.store
        .read(whatan::store::outbox::list)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[tokio::test]
async fn a_text_goes_queued_accepted_delivered_read_and_reaches_the_sandbox_outbox() {
    let app = spawn_app().await;
    let id = queue_text(&app, &app.member.token, "+917999709798").await;
    let read = app
        .wait_for_status(&app.member.token, &id, status_is("read"))
        .await;
    let message_id = read["messageId"].as_str().unwrap();
    assert!(message_id.starts_with("BAE5"), "{message_id}");
    assert_eq!(read["remoteJid"], "917999709798@s.whatsapp.net");
    assert!(read["errorCode"].is_null());
    assert!(read["updatedAt"].as_str().unwrap() >= read["createdAt"].as_str().unwrap());
    let outbox = outbox(&app).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["messageId"], message_id);
    assert_eq!(outbox[0]["from"], "+917000000003");
    assert_eq!(outbox[0]["to"], "+917999709798");
    assert_eq!(outbox[0]["body"]["text"], "hello");
}

#[tokio::test]
async fn a_number_not_on_whatsapp_fails_with_recipient_not_found() {
    let app = spawn_app().await;
    let id = queue_text(&app, &app.owner.token, "+917999000000").await;
    let failed = app
        .wait_for_status(&app.owner.token, &id, status_is("failed"))
        .await;
    assert_eq!(failed["errorCode"], "recipient_not_found");
    assert!(failed["errorMessage"]
        .as_str()
        .unwrap()
        .contains("+917999000000"));
    assert!(outbox(&app).await.is_empty());
}

#[tokio::test]
async fn an_account_sends_oldest_first_with_a_gap_of_at_least_min_delay() {
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_millis(60);
        c.pacing.max_delay = Duration::from_millis(80);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(queue_text(&app, &app.owner.token, &format!("+91799970979{i}")).await);
    }
    let mut handed_off = Vec::new();
    for id in &ids {
        let done = app
            .wait_for_status(&app.owner.token, id, |b| b["status"] == "read")
            .await;
        handed_off.push(done["sentAt"].as_str().unwrap().to_string());
    }
    let sent = outbox(&app).await;
    let recipients: Vec<&str> = sent.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(
        recipients,
        [
            "+917999709790",
            "+917999709791",
            "+917999709792",
            "+917999709793"
        ]
    );
    // The gap runs from one hand-off to the next (RFC 3339 ms, same hour).
    let ms = |t: &str| -> i64 {
        let secs: f64 = t[17..23].parse().unwrap();
        let mins: i64 = t[14..16].parse().unwrap();
        mins * 60_000 + (secs * 1000.0).round() as i64
    };
    for w in handed_off.windows(2) {
        let gap = (ms(&w[1]) - ms(&w[0])).rem_euclid(3_600_000);
        assert!(
            gap >= 60,
            "gap {gap}ms between hand-offs {} and {}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test]
async fn a_busy_account_never_delays_another() {
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
    })
    .await;
    // The owner's first send goes at once, the rest wait an hour...
    let first = queue_text(&app, &app.owner.token, "+917999709791").await;
    let second = queue_text(&app, &app.owner.token, "+917999709792").await;
    app.wait_for_status(&app.owner.token, &first, status_is("read"))
        .await;
    // ...while the member's account sends straight away.
    let other = queue_text(&app, &app.member.token, "+917999709793").await;
    app.wait_for_status(&app.member.token, &other, status_is("read"))
        .await;
    assert_eq!(
        app.status(&app.owner.token, &second).await.json()["status"],
        "queued"
    );
    // The next slot is durable, so a restart does not make the next send early.
    let next_at = app
        .count("SELECT next_send_at FROM accounts WHERE phone = '+917000000001'")
        .await;
    assert!(next_at > whatan::clock::now_ms() + 3_000_000, "{next_at}");
    let app = app.restart().await;
    let r = app.status(&app.owner.token, &second).await.json();
    assert_eq!(r["status"], "queued");
    let still = app
        .count("SELECT next_send_at FROM accounts WHERE phone = '+917000000001'")
        .await;
    assert_eq!(still, next_at);
}

#[tokio::test]
async fn an_offline_account_keeps_its_queue_and_resumes_on_reconnect() {
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
    })
    .await;
    let account = app.member.account.clone().unwrap();
    let first = queue_text(&app, &app.member.token, "+917999709791").await;
    app.wait_for_status(&app.member.token, &first, status_is("read"))
        .await;
    let waiting = queue_text(&app, &app.member.token, "+917999709792").await;
    // The phone goes offline; then the pacing slot comes due (moved by hand
    // instead of waiting an hour).
    app.set_status(&account, AccountStatus::Disconnected).await;
    let id = account.clone();
    app.store
        .write(move |c| whatan::store::attempts::set_next_send_at(c, &id, 0))
        .await
        .unwrap();
    assert_eq!(
        app.status(&app.member.token, &waiting).await.json()["status"],
        "queued"
    );
    // Back online (as `account connect` from the CLI would): the queue resumes.
    app.set_status(&account, AccountStatus::Connected).await;
    app.wait_for_status(&app.member.token, &waiting, status_is("read"))
        .await;
    assert_eq!(outbox(&app).await.len(), 2);
}

#[tokio::test]
async fn queued_sends_fail_after_the_offline_grace() {
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
        c.pacing.offline_grace = Duration::from_millis(300);
    })
    .await;
    let account = app.owner.account.clone().unwrap();
    let first = queue_text(&app, &app.owner.token, "+917999709791").await;
    app.wait_for_status(&app.owner.token, &first, status_is("read"))
        .await;
    let waiting = queue_text(&app, &app.owner.token, "+917999709792").await;
    app.set_status(&account, AccountStatus::Disconnected).await;
    let failed = app
        .wait_for_status(&app.owner.token, &waiting, status_is("failed"))
        .await;
    assert_eq!(failed["errorCode"], "whatsapp_not_connected");
    // A status never moves backwards: the read one stays read.
    assert_eq!(
        app.status(&app.owner.token, &first).await.json()["status"],
        "read"
    );
}

#[tokio::test]
async fn sends_survive_a_restart_and_go_out_once() {
    let app = spawn_app().await;
    let mut app = app;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(queue_text(&app, &app.admin.token, &format!("+91799970970{i}")).await);
        }
        v
    };
    app = app.restart().await;
    for id in &ids {
        app.wait_for_status(&app.admin.token, id, status_is("read"))
            .await;
    }
    assert_eq!(outbox(&app).await.len(), 5);
}

#[tokio::test]
async fn a_document_with_an_unfetchable_url_fails_with_invalid_media_url() {
    // media.example.com is pinned to 127.0.0.2 in the test config, where
    // nothing listens, so the fetch fails and the attempt says why.
    let app = spawn_app_with(|c| {
        c.media.connect_timeout = Duration::from_millis(200);
        c.media.fetch_timeout = Duration::from_millis(400);
    })
    .await;
    let r = app
        .send(
            &app.owner.token,
            None,
            &json!({"to": "+917999709798", "type": "document",
            "document": {"url": "https://media.example.com/quote.pdf", "fileName": "quote.pdf"}}),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    let failed = app
        .wait_for_status(&app.owner.token, &id, status_is("failed"))
        .await;
    assert_eq!(failed["errorCode"], "invalid_media_url");
    assert!(outbox(&app).await.is_empty());
}
