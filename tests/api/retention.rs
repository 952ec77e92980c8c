//! Retention: `whatan prune` (the built binary) and the background job.

use std::time::Duration;

use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

/// Insert an attempt of the owner's account directly, with the rows that
/// belong to it: an Idempotency-Key, and for a message id the sandbox
/// outbox and hand-off records.
async fn insert_attempt(
    app: &TestApp,
    id: &str,
    status: &str,
    age_ms: i64,
    message_id: Option<&str>,
) {
    let (ws, account, user) = (
        app.workspace.clone(),
        app.owner.account.clone().unwrap(),
        app.owner.user.clone(),
    );
    let (id, status, message_id) = (
        id.to_string(),
        status.to_string(),
        message_id.map(String::from),
    );
    app.store
        .write(move |c| {
            let at = whatan::clock::now_ms() - age_ms;
            c.execute(
                "INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, message_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'personal', '+917000000001', '+917999709798', 'text', '{\"text\":\"hi\"}', ?5, ?6, ?7, ?7)",
                whatan::params![id, ws, account, user, status, message_id, at],
            )?;
            c.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, attempt_id, http_status, response_body, created_at)
                 VALUES (?1, ?2, ?4, ?2, 202, ?5, ?3)",
                whatan::params![user, id, at, vec![0u8], b"{}".to_vec()],
            )?;
            if let Some(m) = message_id {
                c.execute(
                    "INSERT INTO sandbox_outbox (message_id, account_id, from_phone, to_phone, type, body, delivered_at)
                     VALUES (?1, ?2, '+917000000001', '+917999709798', 'text', '{}', ?3)",
                    whatan::params![m, account, at],
                )?;
                c.execute(
                    "INSERT INTO sandbox_handoffs (message_id, account_id, redelivery, received_at) VALUES (?1, ?2, 0, ?3)",
                    whatan::params![m, account, at],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

async fn ids(app: &TestApp, sql: &'static str) -> Vec<String> {
    app.store
        .read(move |c| {
            let mut s = c.prepare(sql)?;
            let rows = s.query_map((), |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn prune_deletes_only_attempts_final_for_longer_than_asked_with_their_keys() {
    let app = spawn_app().await;
    // The account is offline, so its pacer leaves the queued and in-flight
    // rows below as they are (else it may send them, adding outbox rows,
    // before the prune runs).
    app.set_status(
        app.owner.account.as_ref().unwrap(),
        whatan::domain::AccountStatus::Disconnected,
    )
    .await;
    insert_attempt(&app, "old-read", "read", 40 * DAY_MS, Some("MSG-OLD")).await;
    insert_attempt(&app, "old-failed", "failed", 40 * DAY_MS, None).await;
    insert_attempt(&app, "old-queued", "queued", 40 * DAY_MS, None).await;
    insert_attempt(
        &app,
        "old-sending",
        "sending",
        40 * DAY_MS,
        Some("MSG-SENDING"),
    )
    .await;
    insert_attempt(&app, "recent-read", "read", DAY_MS, Some("MSG-RECENT")).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whatan"))
        .envs([app.database_env()])
        .args(["--json", "prune", "--older-than", "30d"])
        .env_remove("WHATAN_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::json!({"deleted": 2}));

    let left = ids(&app, "SELECT id FROM send_attempts ORDER BY id").await;
    assert_eq!(left, ["old-queued", "old-sending", "recent-read"]);
    let keys = ids(&app, "SELECT key FROM idempotency_keys ORDER BY key").await;
    assert_eq!(keys, ["old-queued", "old-sending", "recent-read"]);
    let outbox = ids(
        &app,
        "SELECT message_id FROM sandbox_outbox ORDER BY message_id",
    )
    .await;
    assert_eq!(outbox, ["MSG-RECENT", "MSG-SENDING"]);
    let handoffs = ids(
        &app,
        "SELECT message_id FROM sandbox_handoffs ORDER BY message_id",
    )
    .await;
    assert_eq!(handoffs, ["MSG-RECENT", "MSG-SENDING"]);

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_whatan"))
        .envs([app.database_env()])
        .args(["prune", "--older-than", "soon"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn the_background_job_deletes_attempts_once_they_are_final_for_the_retention() {
    let app = spawn_app_with(|c| c.retention.attempts = Some(Duration::from_millis(300))).await;
    let r = app
        .send(
            &app.member.token,
            Some("retained-key"),
            &text_to("+917999709798"),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    app.wait_for_status(&app.member.token, &id, |b| b["status"] == "read")
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.count("SELECT count(*) FROM send_attempts").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM sandbox_outbox").await, 0);
    assert_eq!(app.status(&app.member.token, &id).await.status, 404);
}
