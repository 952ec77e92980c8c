//! The contract's Idempotency-Key section, over HTTP.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_replay_is_byte_identical_marked_and_queues_nothing() {
    let app = spawn_app().await;
    let first = app
        .send(
            &app.owner.token,
            Some("attio-workflow-123"),
            &text_to("+917999709798"),
        )
        .await;
    assert_eq!(first.status, 202);
    assert!(first.header("idempotent-replayed").is_none());
    // The same request after normalisation, fields reordered, an unknown field added.
    let again = app
        .send(
            &app.owner.token,
            Some("attio-workflow-123"),
            &json!({
                "text": "hello", "type": "text", "to": "+91 (799) 970-9798", "crm": "attio"
            }),
        )
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 1);
}

#[tokio::test]
async fn the_quoted_form_of_a_key_means_the_same_key() {
    let app = spawn_app().await;
    let a = app
        .send(&app.owner.token, Some("abc"), &text_to("+917999709798"))
        .await;
    let b = app
        .send(&app.owner.token, Some("\"abc\""), &text_to("+917999709798"))
        .await;
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(b.header("idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn a_key_reused_with_a_different_request_is_a_conflict() {
    let app = spawn_app().await;
    assert_eq!(
        app.send(&app.owner.token, Some("k"), &text_to("+917999709798"))
            .await
            .status,
        202
    );
    for other in [
        text_to("+917999709799"),
        json!({"to": "+917999709798", "type": "text", "text": "hello!"}),
        json!({"from": app.owner.phone, "to": "+917999709798", "type": "text", "text": "hello"}),
    ] {
        let r = app.send(&app.owner.token, Some("k"), &other).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "idempotency_conflict"),
            "{other}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_user() {
    let app = spawn_app().await;
    let a = app
        .send(&app.owner.token, Some("shared"), &text_to("+917999709798"))
        .await;
    let b = app
        .send(&app.member.token, Some("shared"), &text_to("+917999709798"))
        .await;
    assert_eq!((a.status, b.status), (202, 202));
    assert_ne!(a.json()["sendAttemptId"], b.json()["sendAttemptId"]);
    assert!(b.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_new_key_create_exactly_one_attempt() {
    let app = spawn_app().await;
    let body = text_to("+917999709798");
    let replies = futures_util::future::join_all(
        (0..20).map(|_| app.send(&app.owner.token, Some("burst-1"), &body)),
    )
    .await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.json()["sendAttemptId"].as_str().unwrap().to_string())
        .collect();
    for r in &replies {
        assert!(
            r.status == 202 || (r.status == 409 && r.code() == "idempotency_conflict"),
            "{}",
            r.status
        );
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.status == 202 && r.header("idempotent-replayed").is_none())
            .count(),
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 1);
}

#[tokio::test]
async fn refused_requests_store_nothing_under_their_key() {
    let app = spawn_app_with(|c| c.pacing.daily_limit = 1).await;
    assert_eq!(
        app.send(&app.member.token, None, &text_to("+917999709798"))
            .await
            .status,
        202
    );
    let limited = app
        .send(
            &app.member.token,
            Some("after-limit"),
            &text_to("+917999709798"),
        )
        .await;
    assert_eq!(limited.status, 429);
    let bad = app
        .send(&app.member.token, Some("bad-body"), &text_to("nope"))
        .await;
    assert_eq!(bad.status, 400);
    let forbidden = app
        .send(
            &app.member.token,
            Some("forbidden"),
            &json!({"from": app.owner.phone, "to": "+917999709798", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let app = spawn_app().await;
    let first = app
        .send(&app.owner.token, Some("durable"), &text_to("+917999709798"))
        .await;
    let app = app.restart().await;
    let again = app
        .send(&app.owner.token, Some("durable"), &text_to("+917999709798"))
        .await;
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn a_key_row_that_kept_its_answer_replays_that_answer() {
    // Rows of earlier versions kept the 202 they answered; newer rows keep
    // none and the replay is rebuilt from the attempt. Both must replay.
    let app = spawn_app().await;
    let first = app
        .send(&app.owner.token, Some("kept"), &text_to("+917999709798"))
        .await;
    assert_eq!(first.status, 202);
    let stored = br#"{"kept":"as answered"}"#.to_vec();
    app.execute(
        "UPDATE idempotency_keys SET response_body = ?1 WHERE key = 'kept'",
        stored.clone(),
    )
    .await;
    let again = app
        .send(&app.owner.token, Some("kept"), &text_to("+917999709798"))
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.bytes, stored);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}
