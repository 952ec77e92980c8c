//! POST /api/v1/messages/send: the queued response, every error code in the
//! contract's order of checks, and every row of the page's sender rules.

use crate::helpers::*;
use serde_json::json;
use whatan::domain::{AccountStatus, Role};

#[tokio::test]
async fn a_personal_text_send_is_queued_with_the_pages_fields() {
    let app = spawn_app().await;
    let r = app
        .send(
            &app.member.token,
            Some("invoice-123-reminder"),
            &json!({
                "to": "+91 7999-709798", "type": "text", "text": "Your invoice is ready."
            }),
        )
        .await;
    assert_eq!(r.status, 202);
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "accepted",
        "sendAttemptId",
        "messageId",
        "remoteJid",
        "from",
        "to",
        "normalizedPhone",
        "status",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    assert_eq!(body["accepted"], true);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["from"], "+917000000003");
    assert_eq!(body["to"], "+917999709798");
    assert_eq!(body["normalizedPhone"], "917999709798");
    assert!(body["messageId"].is_null() && body["remoteJid"].is_null());
    assert!(uuid::Uuid::parse_str(body["sendAttemptId"].as_str().unwrap()).is_ok());
    // Field order follows the page.
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"accepted":true,"sendAttemptId":"#),
        "{text}"
    );
}

#[tokio::test]
async fn image_and_document_sends_are_queued() {
    let app = spawn_app().await;
    let image = json!({"to": "+917999709798", "type": "image",
        "image": {"url": "https://media.example.com/promo.png", "caption": "New arrivals are live."}});
    assert_eq!(app.send(&app.owner.token, None, &image).await.status, 202);
    let doc = json!({"to": "+917999709798", "type": "document", "document": {
        "url": "https://media.example.com/quote.pdf", "fileName": "quote.pdf",
        "mimetype": "application/pdf", "caption": "Attached quote for review."}});
    assert_eq!(app.send(&app.owner.token, None, &doc).await.status, 202);
}

#[tokio::test]
async fn workspace_sender_mode_lets_owners_and_admins_pick_any_workspace_number() {
    let app = spawn_app().await;
    for (who, from) in [
        (&app.owner, &app.member.phone),
        (&app.admin, &app.owner.phone),
        (&app.owner, &app.owner.phone),
    ] {
        let r = app
            .send(
                &who.token,
                None,
                &json!({"from": from, "to": "+917999709798", "type": "text", "text": "x"}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
        assert_eq!(r.json()["from"], from.as_str());
    }
}

#[tokio::test]
async fn members_may_not_pick_a_sender_even_their_own() {
    let app = spawn_app().await;
    for from in [&app.member.phone, &app.owner.phone] {
        let r = app
            .send(
                &app.member.token,
                None,
                &json!({"from": from, "to": "+917999709798", "type": "text", "text": "x"}),
            )
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(r.code(), "sender_selection_forbidden");
    }
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);
}

#[tokio::test]
async fn a_from_outside_the_workspace_is_sender_not_allowed() {
    let app = spawn_app().await;
    let other = app
        .store
        .write(|c| {
            let ws = whatan::store::admin::create_workspace(c, "Other")?;
            add_member(c, &ws.id, Role::Owner, "+917000000009")
        })
        .await
        .unwrap();
    for from in ["+917000000009", "+917000000008"] {
        let r = app
            .send(
                &app.owner.token,
                None,
                &json!({"from": from, "to": "+917999709798", "type": "text", "text": "x"}),
            )
            .await;
        assert_eq!(r.status, 403, "{from}");
        assert_eq!(r.code(), "sender_not_allowed");
    }
    // And the other workspace's owner cannot send from ours.
    let r = app
        .send(
            &other.token,
            None,
            &json!({"from": app.owner.phone, "to": "+917999709798", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(r.code(), "sender_not_allowed");
}

#[tokio::test]
async fn a_disconnected_sender_or_a_user_without_account_is_whatsapp_not_connected() {
    let app = spawn_app().await;
    app.set_status(
        app.member.account.as_ref().unwrap(),
        AccountStatus::Disconnected,
    )
    .await;
    let r = app
        .send(
            &app.member.token,
            Some("k-offline"),
            &text_to("+917999709798"),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "whatsapp_not_connected")
    );
    let r = app
        .send(
            &app.owner.token,
            None,
            &json!({"from": app.member.phone, "to": "+917999709798", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "whatsapp_not_connected")
    );

    let ws = app.workspace.clone();
    let lonely = app
        .store
        .write(move |c| add_member(c, &ws, Role::Member, ""))
        .await
        .unwrap();
    let r = app
        .send(&lonely.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "whatsapp_not_connected")
    );
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);

    // The refused request stored nothing under its key: after reconnecting,
    // the CRM's retry with the same key succeeds.
    app.set_status(
        app.member.account.as_ref().unwrap(),
        AccountStatus::Connected,
    )
    .await;
    let r = app
        .send(
            &app.member.token,
            Some("k-offline"),
            &text_to("+917999709798"),
        )
        .await;
    assert_eq!(r.status, 202);
    assert!(r.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request_naming_the_field() {
    let app = spawn_app().await;
    let long_text = "a".repeat(4097);
    let long_caption = "c".repeat(1025);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{".into(), None),
        ("".into(), None),
        ("[]".into(), None),
        ("\"text\"".into(), None),
        (r#"{"type":"text","text":"x"}"#.into(), Some("to")),
        (r#"{"to":917999709798,"type":"text","text":"x"}"#.into(), Some("to")),
        (r#"{"to":"+917999709798","text":"x"}"#.into(), Some("type")),
        (r#"{"to":"+917999709798","type":"sticker"}"#.into(), Some("type")),
        (r#"{"to":"+917999709798","type":"text"}"#.into(), Some("text")),
        (r#"{"to":"+917999709798","type":"text","text":""}"#.into(), Some("text")),
        (format!(r#"{{"to":"+917999709798","type":"text","text":"{long_text}"}}"#), Some("text")),
        (r#"{"to":"+917999709798","type":"image","text":"x"}"#.into(), Some("text")),
        (r#"{"to":"+917999709798","type":"image"}"#.into(), Some("image")),
        (r#"{"to":"+917999709798","type":"image","image":{"caption":"x"}}"#.into(), Some("image.url")),
        (format!(r#"{{"to":"+917999709798","type":"image","image":{{"url":"https://media.example.com/a.png","caption":"{long_caption}"}}}}"#), Some("image.caption")),
        (r#"{"to":"+917999709798","type":"document","document":{"fileName":"a.pdf"}}"#.into(), Some("document.url")),
        (r#"{"to":"+917999709798","type":"document","document":{"url":"https://media.example.com/a.pdf","fileName":5}}"#.into(), Some("document.fileName")),
    ];
    for (body, field) in cases {
        let r = app
            .send_raw(&app.owner.token, Some("same-key"), body.clone())
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.code(), "invalid_request", "{body}");
        assert_eq!(r.json()["error"]["field"].as_str(), field, "{body}");
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
}

#[tokio::test]
async fn bad_idempotency_keys_are_invalid_request() {
    let app = spawn_app().await;
    for key in ["", "has space", &"k".repeat(256)] {
        let r = app
            .send(&app.owner.token, Some(key), &text_to("+917999709798"))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_request"),
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn bad_phone_numbers_are_invalid_phone_number() {
    let app = spawn_app().await;
    for to in [
        "917999709798",
        "07999 709798",
        "++917999709798",
        "tel:+917999709798",
        "+91 7000O 00001",
        "+917999709798 x12",
        "+12",
        "+999 1234567",
    ] {
        let r = app.send(&app.owner.token, None, &text_to(to)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_phone_number"),
            "{to}"
        );
        assert_eq!(r.json()["error"]["field"], "to");
    }
    let r = app
        .send(
            &app.owner.token,
            None,
            &json!({"from": "12345", "to": "+917999709798", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(
        (r.code().as_str(), r.json()["error"]["field"].as_str()),
        ("invalid_phone_number", Some("from"))
    );
}

#[tokio::test]
async fn a_trunk_prefix_after_the_country_code_is_dropped_as_libphonenumber_drops_it() {
    let app = spawn_app().await;
    for (to, e164) in [
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+91 0 70000 00001", "+917000000001"),
    ] {
        let r = app.send(&app.owner.token, None, &text_to(to)).await;
        assert_eq!(r.status, 202, "{to}");
        assert_eq!(r.json()["to"], e164);
        assert_eq!(r.json()["normalizedPhone"], &e164[1..]);
    }
    // A national number without its country code is still refused.
    let r = app
        .send(&app.owner.token, None, &text_to("020 7946 0958"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_phone_number"));
}

#[tokio::test]
async fn unsafe_media_urls_are_invalid_media_url() {
    let app = spawn_app().await;
    for url in [
        "http://media.example.com/a.png",
        "https://localhost/a.png",
        "https://127.0.0.1/a.png",
        "https://10.0.0.1/a.png",
        "https://[::1]/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://2130706433/a.png",
        "https://nothing-resolves-here.invalid/a.png",
    ] {
        let r = app
            .send(
                &app.owner.token,
                None,
                &json!({"to": "+917999709798", "type": "image", "image": {"url": url}}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_media_url"),
            "{url}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);
}

#[tokio::test]
async fn checks_run_in_the_contracts_order() {
    let app = spawn_app().await;
    // auth before body shape
    let r = app.send_raw("", None, "{").await;
    assert_eq!(r.code(), "unauthorized");
    // body shape before phone numbers
    let r = app
        .send_raw(&app.owner.token, None, r#"{"to":"bad","type":"nope"}"#)
        .await;
    assert_eq!(r.code(), "invalid_request");
    // phone numbers before sender selection
    let r = app
        .send(
            &app.member.token,
            None,
            &json!({"from": app.owner.phone, "to": "bad", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(r.code(), "invalid_phone_number");
    // sender selection before media URL
    let r = app
        .send(&app.member.token, None, &json!({"from": app.owner.phone, "to": "+917999709798", "type": "image", "image": {"url": "http://x"}}))
        .await;
    assert_eq!(r.code(), "sender_selection_forbidden");
    // media URL before connection state
    app.set_status(
        app.member.account.as_ref().unwrap(),
        AccountStatus::Disconnected,
    )
    .await;
    let r = app
        .send(&app.member.token, None, &json!({"to": "+917999709798", "type": "image", "image": {"url": "https://10.1.1.1/x.png"}}))
        .await;
    assert_eq!(r.code(), "invalid_media_url");
}
