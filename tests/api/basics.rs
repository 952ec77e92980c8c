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
    // `/` is the dashboard's (a redirect to its accounts or sign-in page).
    for path in [
        "/nothing-here",
        "/api/v1/messages/",
        "/api/v1/messages/a/b",
        "/api/v1/messages/a/b/cancel",
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

#[tokio::test]
async fn garbage_on_the_wire_never_takes_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let token = app.owner.token.clone();
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /api/v1/messages/send HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"POST /api/v1/messages/send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        [
            format!("POST /api/v1/messages/send HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 10\r\n\r\n").into_bytes(),
            b"\xff\xfe\x00{{{{{{{".to_vec(),
        ]
        .concat(),
        format!("POST /api/v1/messages/send HTTP/1.1\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n")
            .into_bytes(),
        format!("GET /api/v1/messages/{} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n", "%".repeat(2000)).into_bytes(),
        b"GET /healthz HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n".to_vec(),
    ];
    for input in inputs {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(&input).await.unwrap();
        let _ = stream.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut out),
        )
        .await;
        if !out.is_empty() {
            let head = String::from_utf8_lossy(&out[..out.len().min(12)]).to_string();
            assert!(
                head.starts_with("HTTP/1.1 ") && !head.starts_with("HTTP/1.1 5"),
                "{head:?} for {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
    // JSON bodies of every wrong shape are answered with 400, never a 500.
    for body in [
        r#"{"to":["+917999709798"],"type":"text","text":"x"}"#,
        r#"{"to":"+917999709798","type":{"a":1},"text":"x"}"#,
        r#"{"to":"+917999709798","type":"image","image":{"url":["x"]}}"#,
        r#"{"to":"+917999709798","type":"document","document":{"url":"https://media.example.com/a","mimetype":{}}}"#,
        r#"{"to":"\u0000","type":"text","text":"\ud800"}"#,
        r#"{"to":"+917999709798","type":"text","text":"x","text":"y"}"#,
        "\u{feff}{}",
        "1e999999",
        &format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
    ] {
        let r = app.send_raw(&token, None, body.to_string()).await;
        assert!(
            r.status == 400 || r.status == 202,
            "{} for {body:.80}",
            r.status
        );
    }
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM send_attempts WHERE to_phone NOT LIKE '+%'")
            .await,
        0
    );
}
