//! Status webhooks out (webhooks.md): endpoints managed by owners and
//! admins, events written with the change that causes them, signatures a
//! Standard Webhooks library verifies, retries, disabling and redelivery.
//! The consumer is a loopback server (`tests/support/receiver.rs`).

use std::time::Duration;

use serde_json::{json, Value};
use whatan::config::Config;
use whatan::domain::{AccountStatus, AttemptStatus, Role};
use whatan::store::attempts::{self, AttemptKey, TransitionFields};
use whatan::store::{admin, StoreError};

use crate::helpers::*;
use crate::receiver::{Received, Receiver};

/// Loopback endpoints allowed, tries milliseconds apart.
fn fast(c: &mut Config) {
    c.webhooks.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
    c.webhooks.retry_schedule = vec![Duration::from_millis(5), Duration::from_millis(5)];
    c.webhooks.poll_interval = Duration::from_millis(5);
    c.webhooks.timeout = Duration::from_secs(5);
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    reply(req.send().await.unwrap()).await
}

/// Add an endpoint as the owner: `(id, secret)`.
async fn add(app: &TestApp, url: &str, events: Option<Value>) -> (String, String) {
    let mut body = json!({ "url": url, "description": "CRM" });
    if let Some(events) = events {
        body["events"] = events;
    }
    let r = call(
        app,
        "POST",
        "/api/v1/webhooks",
        &app.owner.token,
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

fn of_type<'a>(all: &'a [Received], event: &str) -> Vec<&'a Received> {
    all.iter().filter(|r| r.event_type() == event).collect()
}

/// Verify with the official `standardwebhooks` package; `None` when it is
/// not installed (and not required).
fn verify_with_standardwebhooks(cases: &[Value]) -> Option<()> {
    if !crate::external_tool::python_module_or_skip(
        "standardwebhooks",
        "standardwebhooks",
        "webhook signatures with the official library",
    ) {
        return None;
    }
    let out = crate::external_tool::python_with_stdin(
        &[concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/verify_webhooks.py"
        )],
        Value::Array(cases.to_vec()).to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "standardwebhooks refused a delivery: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], cases.len());
    Some(())
}

fn case(secret: &str, r: &Received, expect: &str) -> Value {
    json!({
        "secret": secret,
        "headers": {
            "webhook-id": r.header("webhook-id"),
            "webhook-timestamp": r.header("webhook-timestamp"),
            "webhook-signature": r.header("webhook-signature"),
        },
        "body": String::from_utf8(r.body.clone()).unwrap(),
        "expect": expect,
    })
}

#[tokio::test]
async fn only_owners_and_admins_manage_endpoints_of_their_own_workspace() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start(200).await;

    let r = call(
        &app,
        "POST",
        "/api/v1/webhooks",
        &app.member.token,
        Some(json!({"url": receiver.url()})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden".to_string()));
    let r = call(&app, "GET", "/api/v1/webhooks", &app.member.token, None).await;
    assert_eq!(r.status, 403);

    let (id, secret) = add(&app, &receiver.url(), None).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let r = call(&app, "GET", "/api/v1/webhooks", &app.admin.token, None).await;
    assert_eq!(r.status, 200);
    let listed = r.json();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "enabled");
    assert_eq!(listed[0]["events"].as_array().unwrap().len(), 8);
    assert!(
        !r.bytes.windows(6).any(|w| w == b"whsec_"),
        "the secret is never shown again"
    );
    // Nor is it in the database: only states a signature can be made from.
    let secret_body = secret.trim_start_matches("whsec_").to_string();
    let bytes = match app.store.path() {
        Some(file) => std::fs::read(file).unwrap(),
        // PostgreSQL: every stored row, as text.
        None => app
            .store
            .read(|c| Ok(crate::database::stored_text(c)))
            .await
            .unwrap()
            .into_bytes(),
    };
    assert!(!bytes
        .windows(secret_body.len())
        .any(|w| w == secret_body.as_bytes()));

    // Another workspace: its owner sees nothing of ours.
    let other = app
        .store
        .write(|c| {
            let ws = admin::create_workspace(c, "Other")?;
            add_member(c, &ws.id, Role::Owner, "")
        })
        .await
        .unwrap();
    let r = call(&app, "GET", "/api/v1/webhooks", &other.token, None).await;
    assert_eq!(r.json(), json!([]));
    for (method, path) in [
        ("DELETE", format!("/api/v1/webhooks/{id}")),
        ("POST", format!("/api/v1/webhooks/{id}/rotate-secret")),
        ("GET", format!("/api/v1/webhooks/{id}/deliveries")),
    ] {
        let r = call(&app, method, &path, &other.token, None).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found".to_string()),
            "{method} {path}"
        );
    }

    // Bad input names its field.
    for (body, field) in [
        (json!({"url": "https://10.1.2.3/hook"}), "url"),
        (json!({"url": "http://93.184.215.14/hook"}), "url"),
        (json!({"url": "https://hooks.invalid/x"}), "url"),
        (
            json!({"url": receiver.url(), "events": ["message.sent"]}),
            "events",
        ),
        (
            json!({"url": receiver.url(), "events": "message.read"}),
            "events",
        ),
        (json!({"events": []}), "url"),
        (json!({"url": receiver.url(), "secret": "mine"}), "secret"),
        // PostgreSQL's TEXT cannot hold U+0000; both stores refuse it alike.
        (
            json!({"url": receiver.url(), "description": "CRM\u{0}"}),
            "description",
        ),
    ] {
        let r = call(
            &app,
            "POST",
            "/api/v1/webhooks",
            &app.owner.token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.code(), "invalid_request");
        assert_eq!(r.json()["error"]["field"], field, "{body}");
    }

    let r = call(
        &app,
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        &app.admin.token,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call(&app, "GET", "/api/v1/webhooks", &app.owner.token, None).await;
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn message_events_carry_the_status_body_and_verify_with_standardwebhooks() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start(204).await;
    let (_, secret) = add(&app, &receiver.url(), None).await;

    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    let all = receiver
        .wait_for("accepted, delivered and read", |all| {
            ["message.accepted", "message.delivered", "message.read"]
                .iter()
                .all(|t| all.iter().any(|r| r.event_type() == *t))
        })
        .await;

    // `data` is the status body at that status, plus the workspace.
    let status = app.status(&app.owner.token, &id).await.json();
    let read = of_type(&all, "message.read")[0].json();
    let mut expected = status.clone();
    expected["workspaceId"] = json!(app.workspace);
    assert_eq!(read["data"], expected);
    assert!(read["timestamp"].as_str().unwrap().ends_with('Z'));
    let accepted = of_type(&all, "message.accepted")[0].json();
    assert_eq!(accepted["data"]["status"], "accepted");
    assert_eq!(accepted["data"]["sendAttemptId"], id.as_str());
    // Three events, three webhook-ids.
    let mut ids: Vec<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());

    // Rotate: for 24 hours, deliveries carry both signatures.
    let endpoint = call(&app, "GET", "/api/v1/webhooks", &app.owner.token, None)
        .await
        .json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(
        &app,
        "POST",
        &format!("/api/v1/webhooks/{endpoint}/rotate-secret"),
        &app.owner.token,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let new_secret = r.json()["secret"].as_str().unwrap().to_string();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/webhooks/{endpoint}/rotate-secret")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "rotating needs a token");
    assert_ne!(new_secret, secret);
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let second = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    let all = receiver
        .wait_for("the second send's read", |all| {
            all.iter().any(|r| {
                r.event_type() == "message.read"
                    && r.json()["data"]["sendAttemptId"] == second.as_str()
            })
        })
        .await;
    let (before, after): (Vec<&Received>, Vec<&Received>) = all
        .iter()
        .partition(|r| r.json()["data"]["sendAttemptId"] == id.as_str());
    assert!(before
        .iter()
        .all(|r| r.header("webhook-signature").split(' ').count() == 1));
    assert!(after
        .iter()
        .all(|r| r.header("webhook-signature").split(' ').count() == 2));

    // The official library agrees: before the rotation with the first
    // secret only, after it with either; never with a stranger's.
    let (stranger, _) = whatan::webhooks::sign::new_secret();
    let mut cases = Vec::new();
    for r in &before {
        cases.push(case(&secret, r, "valid"));
        cases.push(case(&new_secret, r, "invalid"));
    }
    for r in &after {
        cases.push(case(&secret, r, "valid"));
        cases.push(case(&new_secret, r, "valid"));
        cases.push(case(&stranger, r, "invalid"));
    }
    verify_with_standardwebhooks(&cases);
}

#[tokio::test]
async fn retries_follow_the_schedule_then_fail_and_redelivery_keeps_the_webhook_id() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start(500).await;
    let (endpoint, _) = add(&app, &receiver.url(), Some(json!(["message.read"]))).await;

    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!(r.status, 202);
    // One try and the schedule's two retries, each answered 500.
    let tries = receiver.wait_for("three tries", |all| all.len() >= 3).await;
    let deliveries_path = format!("/api/v1/webhooks/{endpoint}/deliveries");
    let failed = app
        .wait_for_get(
            &format!("{deliveries_path}?failed=true"),
            &app.owner.token,
            |list| list.as_array().is_some_and(|l| !l.is_empty()),
        )
        .await[0]
        .clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["lastStatusCode"], 500);
    assert_eq!(failed["type"], "message.read");
    assert_eq!(
        receiver.received().len(),
        3,
        "no try after the schedule ran out"
    );
    let webhook_id = tries[0].header("webhook-id").to_string();
    assert!(tries.iter().all(|r| r.header("webhook-id") == webhook_id));
    assert_eq!(failed["eventId"], webhook_id.as_str());

    // Redeliver: the same event, the same webhook-id, now answered 200.
    receiver.set_status(200);
    let r = call(
        &app,
        "POST",
        &format!(
            "/api/v1/webhooks/deliveries/{}/redeliver",
            failed["id"].as_str().unwrap()
        ),
        &app.admin.token,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["eventId"], webhook_id.as_str());
    let all = receiver
        .wait_for("the redelivery", |all| all.len() == 4)
        .await;
    assert_eq!(all[3].header("webhook-id"), webhook_id);
    assert_eq!(all[3].body, tries[0].body);
    // A stranger's delivery id is not found.
    let r = call(
        &app,
        "POST",
        "/api/v1/webhooks/deliveries/dlv_nope/redeliver",
        &app.owner.token,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_add_enables_it() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks.disable_after = Duration::from_millis(1);
    })
    .await;
    let receiver = Receiver::start(503).await;
    let (endpoint, _) = add(&app, &receiver.url(), Some(json!(["message.read"]))).await;
    app.send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    receiver
        .wait_for("two failed tries", |all| all.len() >= 2)
        .await;
    let status = app
        .wait_for_get("/api/v1/webhooks", &app.owner.token, |list| {
            list[0]["status"] == "disabled"
        })
        .await[0]["status"]
        .clone();
    assert_eq!(status, "disabled");
    // Disabled: no further tries, and new events are not queued for it.
    let seen = receiver.received().len();
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    app.wait_for_status(&app.owner.token, &id, |b| b["status"] == "read")
        .await;
    assert_eq!(receiver.received().len(), seen);

    // Adding the same URL enables it again (same endpoint, new secret).
    receiver.set_status(200);
    let (again, _) = add(&app, &receiver.url(), None).await;
    assert_eq!(again, endpoint);
    let list = call(&app, "GET", "/api/v1/webhooks", &app.owner.token, None)
        .await
        .json();
    assert_eq!(list[0]["status"], "enabled");
}

#[tokio::test]
async fn account_events_come_from_the_account_state_machine() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start(200).await;
    add(
        &app,
        &receiver.url(),
        Some(json!(["account.disconnected", "account.connected"])),
    )
    .await;
    let account = app.admin.account.clone().unwrap();

    app.set_status(&account, AccountStatus::Disconnected).await;
    // A reconnect that fails is no news: no second `disconnected`.
    app.set_status(&account, AccountStatus::Connecting).await;
    app.set_status(&account, AccountStatus::Disconnected).await;
    app.set_status(&account, AccountStatus::Connecting).await;
    app.set_status(&account, AccountStatus::Connected).await;
    let all = receiver
        .wait_for("disconnected then connected", |all| all.len() >= 2)
        .await;
    let types: Vec<String> = all.iter().map(Received::event_type).collect();
    assert!(
        types.contains(&"account.disconnected".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"account.connected".to_string()),
        "{types:?}"
    );
    let down = of_type(&all, "account.disconnected")[0].json();
    assert_eq!(
        down["data"],
        json!({"accountId": account, "phone": app.admin.phone, "driver": "sandbox",
               "status": "disconnected", "statusDetail": null, "workspaceId": app.workspace})
    );
    // `connecting` is no event, and the second `disconnected` was no news:
    // two events written in all.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE type LIKE 'account.%'")
            .await,
        2
    );
}

#[tokio::test]
async fn a_change_whose_transaction_did_not_commit_emits_nothing() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start(200).await;
    add(&app, &receiver.url(), None).await;
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    app.wait_for_status(&app.owner.token, &id, |b| b["status"] == "read")
        .await;
    receiver
        .wait_for("read", |all| {
            all.iter().any(|r| r.event_type() == "message.read")
        })
        .await;
    let events = app.count("SELECT COUNT(*) FROM webhook_deliveries").await;

    // A write job that queues an attempt and fails it, then fails itself:
    // rolled back, its event included.
    let (workspace, account, user) = (
        app.workspace.clone(),
        app.owner.account.clone().unwrap(),
        app.owner.user.clone(),
    );
    let result: Result<(), StoreError> = app
        .store
        .write(move |c| {
            c.execute(
                "INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone,
                     to_phone, type, payload, status, created_at, updated_at)
                 VALUES ('rolled-back', ?1, ?2, ?3, 'personal', '+917000000001', '+917999709798',
                     'text', '{}', 'queued', 1, 1)",
                [&workspace, &account, &user],
            )?;
            let moved = attempts::transition(
                c,
                AttemptKey::Id("rolled-back"),
                AttemptStatus::Failed,
                &TransitionFields {
                    error_code: Some("send_failed"),
                    ..TransitionFields::default()
                },
                1,
            )?;
            let emitted: i64 = c.query_row(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE type = 'message.failed'",
                (),
                |r| r.get(0),
            )?;
            Err(StoreError::Internal(format!(
                "the job fails after the change (moved {moved}, emitted {emitted})"
            )))
        })
        .await;
    // Inside the job the event was written with the change...
    let message = result.unwrap_err().to_string();
    assert!(message.contains("moved true, emitted 1"), "{message}");
    // ...and neither outlived the rollback.
    let failed_events = app
        .count("SELECT COUNT(*) FROM webhook_deliveries WHERE type = 'message.failed'")
        .await;
    assert_eq!(failed_events, 0, "a rolled-back change emitted an event");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries").await,
        events
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM send_attempts WHERE id = 'rolled-back'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_slow_endpoint_gets_at_most_its_bound_in_flight_and_sends_do_not_wait() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks.max_in_flight_per_endpoint = 2;
    })
    .await;
    let slow = Receiver::start(200).await;
    slow.set_delay(Duration::from_millis(50));
    add(&app, &slow.url(), Some(json!(["message.accepted"]))).await;

    // Twelve sends: their events pile up behind the slow endpoint while
    // every send is answered at once.
    for _ in 0..12 {
        let r = app
            .send(&app.owner.token, None, &text_to("+917999709798"))
            .await;
        assert_eq!(r.status, 202);
    }
    slow.wait_for("every accepted event", |all| all.len() == 12)
        .await;
    assert_eq!(slow.max_in_flight(), 2, "the per-endpoint bound");
}

#[tokio::test]
async fn a_cancelled_send_emits_message_failed_with_its_status_body() {
    let app = spawn_app_with(|c| {
        fast(c);
        // The second send waits an hour behind the first.
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
    })
    .await;
    let receiver = Receiver::start(200).await;
    add(&app, &receiver.url(), Some(json!(["message.failed"]))).await;
    app.send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    let second = r.json()["sendAttemptId"].as_str().unwrap().to_string();

    let r = call(
        &app,
        "POST",
        &format!("/api/v1/messages/{second}/cancel"),
        &app.owner.token,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));

    let all = receiver
        .wait_for("message.failed", |all| !all.is_empty())
        .await;
    let mut expected = r.json();
    expected["workspaceId"] = json!(app.workspace);
    assert_eq!(all[0].json()["data"], expected);
    assert_eq!(all[0].json()["data"]["errorCode"], "cancelled");
}
