//! What operators rely on: `X-Request-Id` on every response and in error
//! bodies, and `/readyz`.

use serde_json::json;

use crate::helpers::*;

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_error_bodies_repeat_it() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    let mut replies = vec![
        ("healthz", reply(get("/healthz").await.unwrap()).await),
        ("readyz", reply(get("/readyz").await.unwrap()).await),
        ("404", reply(get("/nope/123").await.unwrap()).await),
        (
            "405",
            reply(app.client.delete(app.url("/healthz")).send().await.unwrap()).await,
        ),
        ("401", app.send("", None, &text_to("+917999709798")).await),
        (
            "400",
            app.send_raw(&app.owner.token, None, "{not json").await,
        ),
        (
            "413",
            app.send_raw(&app.owner.token, None, vec![b' '; 70 * 1024])
                .await,
        ),
    ];
    replies.push((
        "202",
        app.send(&app.owner.token, None, &text_to("+917999709798"))
            .await,
    ));
    let mut seen = std::collections::HashSet::new();
    for (what, r) in &replies {
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no X-Request-Id"));
        assert!(is_uuid(&id), "{what}: generated ids are UUIDs: {id}");
        assert!(seen.insert(id.clone()), "{what}: ids differ per request");
        if r.status >= 400 {
            assert_eq!(r.json()["error"]["requestId"], json!(id), "{what}");
        }
    }
}

#[tokio::test]
async fn a_clients_request_id_is_kept_when_well_formed_and_replaced_otherwise() {
    let app = spawn_app().await;
    let with_id = |id: &str| {
        app.client
            .get(app.url("/api/v1/messages/not-an-id"))
            .bearer_auth(&app.owner.token)
            .header("X-Request-Id", id)
            .send()
    };
    let kept = "crm-run:42.step_7-retry";
    let r = reply(with_id(kept).await.unwrap()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id").as_deref(), Some(kept));
    assert_eq!(r.json()["error"]["requestId"], json!(kept));

    for bad in ["has space", "slash/es", &"x".repeat(129)] {
        let r = reply(with_id(bad).await.unwrap()).await;
        let id = r.header("x-request-id").unwrap();
        assert!(
            is_uuid(&id),
            "{bad:?} is replaced by a generated id, got {id}"
        );
        assert_eq!(r.json()["error"]["requestId"], json!(id));
    }
}

#[tokio::test]
async fn readyz_is_ready_while_the_database_takes_writes() {
    let app = spawn_app().await;
    let r = reply(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ready"}));

    // A batch that failed (SQLite ended its transaction, as on a full
    // disk) outweighs the earlier commit: readiness is then decided by a
    // probe, which commits, because the database takes writes again.
    let broken = app
        .store
        .write(|c| {
            c.execute_batch("ROLLBACK")?;
            Ok(())
        })
        .await;
    assert!(broken.is_err());
    let last_failure = app.store.writer().last_failure_ms().expect("recorded");
    let again = reply(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(again.status, 200, "{}", again.json());
    let probe = app
        .store
        .writer()
        .last_commit_ms()
        .expect("probe committed");
    assert!(probe >= last_failure);
}

#[tokio::test]
async fn readyz_is_not_ready_with_a_reason_once_the_database_refuses_writes() {
    let app = spawn_app().await;
    // What a read-only database file gives: BEGIN IMMEDIATE fails with
    // SQLITE_READONLY from now on (this app is not healed; it is dropped).
    // On PostgreSQL: the writer's session turns read-only, as on a standby.
    app.store
        .write(|c| {
            match c.sqlite() {
                Some(sqlite) => sqlite.pragma_update(None, "query_only", true)?,
                None => c.execute_batch("SET SESSION default_transaction_read_only = on")?,
            }
            Ok(())
        })
        .await
        .unwrap();
    let send = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!(send.status, 503, "{}", send.json());

    let r = reply(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["status"], "not_ready");
    let reasons = body["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{body}");
    let reason = reasons[0].as_str().unwrap();
    assert!(
        reason.starts_with("database not writable: ")
            && (reason.contains("readonly") || reason.contains("read-only")),
        "{reason}"
    );
    assert!(
        !r.bytes.windows(4).any(|w| w == b".db\""),
        "no paths: {body}"
    );
    // Liveness is another question: the process still serves HTTP.
    let live = reply(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(live.status, 200);
}
