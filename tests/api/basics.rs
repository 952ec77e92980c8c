use crate::helpers::*;
use whatan::domain::token::{self, TokenKind};
use whatan::store::admin;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/api/v1/messages",
        "/api/v1/messages/a/b",
        "/api/v2/messages/send",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_allow() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/messages/send"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = app
        .client
        .delete(app.url("/api/v1/messages/f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}

#[tokio::test]
async fn requests_without_a_valid_send_token_get_401_with_www_authenticate() {
    let app = spawn_app().await;
    let (mcp, expired, revoked) = app
        .store
        .write({
            let user = app.owner.user.clone();
            move |c| {
                let mcp = token::generate(TokenKind::Mcp);
                admin::create_token(c, &user, TokenKind::Mcp, None, None, &mcp)?;
                let expired = token::generate(TokenKind::Send);
                admin::create_token(c, &user, TokenKind::Send, None, Some(1), &expired)?;
                let revoked = token::generate(TokenKind::Send);
                let id = admin::create_token(c, &user, TokenKind::Send, None, None, &revoked)?;
                admin::revoke_token(c, &id)?;
                Ok((mcp.secret, expired.secret, revoked.secret))
            }
        })
        .await
        .unwrap();
    let body = text_to("+917999709798");
    let unknown = token::generate(TokenKind::Send).secret;
    for t in [
        "",
        "garbage",
        unknown.as_str(),
        mcp.as_str(),
        expired.as_str(),
        revoked.as_str(),
    ] {
        let r = app.send(t, None, &body).await;
        assert_eq!(r.status, 401, "token {t:?}");
        assert_eq!(r.code(), "unauthorized");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let r = app
        .client
        .post(app.url("/api/v1/messages/send"))
        .header("Authorization", format!("Basic {}", app.owner.token))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);
}

#[tokio::test]
async fn a_token_revoked_while_serving_fails_on_the_next_request() {
    let app = spawn_app().await;
    let body = text_to("+917999709798");
    assert_eq!(app.send(&app.owner.token, None, &body).await.status, 202);
    let user = app.owner.user.clone();
    app.store
        .write(move |c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM tokens WHERE user_id = ?1")?
                .query_map([&user], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                admin::revoke_token(c, &id)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(app.send(&app.owner.token, None, &body).await.status, 401);
}

#[tokio::test]
async fn bodies_over_64_kib_get_413_invalid_request() {
    let app = spawn_app().await;
    let big = format!(
        r#"{{"to":"+917999709798","type":"text","text":"{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let r = app.send_raw(&app.owner.token, None, big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 0);
}

#[tokio::test]
async fn a_huge_header_is_refused_without_harm() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("X-Big", "a".repeat(64 * 1024))
        .send()
        .await;
    // hyper answers 431 or closes the connection; either way the server lives on.
    if let Ok(r) = r {
        assert!(r.status().is_client_error());
    }
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_returns() {
    let mut app = spawn_app().await;
    assert_eq!(
        app.send(&app.owner.token, None, &text_to("+917999709798"))
            .await
            .status,
        202
    );
    app.stop().await;
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());
}
