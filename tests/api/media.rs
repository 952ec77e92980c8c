//! Media end to end: a send with a media URL is validated when it arrives,
//! and the driver receives the bytes of whatan's own pinned fetch, never the
//! raw URL.

use crate::helpers::*;
use crate::tls_server::{Reply, TestPki, TestServer};
use serde_json::json;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not really a picture";

/// The app, with `media.test` pinned to the loopback test server, loopback
/// admitted by the test-only allow-list, and the test CA trusted.
async fn app_trusting(pki: &TestPki) -> TestApp {
    let ca = pki.ca_path().to_path_buf();
    spawn_app_with(move |c| {
        c.media
            .resolve
            .insert("media.test".into(), vec!["127.0.0.1".parse().unwrap()]);
        c.media.unsafe_allow_networks_for_testing = vec!["127.0.0.1/32".parse().unwrap()];
        c.media.extra_ca_file = Some(ca);
    })
    .await
}

#[tokio::test]
async fn image_and_document_bytes_reach_the_sandbox_through_the_pinned_fetch() {
    let pki = TestPki::new(&["media.test"]);
    let server = TestServer::start(&pki, |req, _| match req.path.as_str() {
        "/promo.png" => Reply::ok("image/png", PNG),
        "/quote.pdf" => Reply::ok("application/pdf", b"%PDF-1.7 tiny"),
        _ => Reply::status(404),
    })
    .await;
    let app = app_trusting(&pki).await;
    let image = app
        .send(&app.owner.token, None, &json!({"to": "+917999709798", "type": "image",
            "image": {"url": format!("https://media.test:{}/promo.png", server.port), "caption": "New arrivals"}}))
        .await;
    assert_eq!(image.status, 202);
    let doc = app
        .send(
            &app.owner.token,
            None,
            &json!({"to": "+917999709798", "type": "document",
            "document": {"url": format!("https://media.test:{}/quote.pdf", server.port),
                         "fileName": "quote.pdf", "mimetype": "application/pdf"}}),
        )
        .await;
    assert_eq!(doc.status, 202);
    for r in [&image, &doc] {
        let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
        app.wait_for_status(&app.owner.token, &id, |b| b["status"] == "read")
            .await;
    }
    let outbox = app.store.read(whatan::store::outbox::list).await.unwrap();
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0].type_name, "image");
    assert_eq!(
        outbox[0].body["media"],
        json!({"bytes": PNG.len(), "mimetype": "image/png"})
    );
    assert_eq!(outbox[0].body["caption"], "New arrivals");
    assert_eq!(outbox[1].body["media"]["mimetype"], "application/pdf");
    assert_eq!(outbox[1].body["fileName"], "quote.pdf");
    // One fetch per message, at the pinned address, with the right name.
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.sni.as_deref() == Some("media.test")));
}

#[tokio::test]
async fn a_media_server_answering_html_fails_the_attempt_with_the_reason() {
    let pki = TestPki::new(&["media.test"]);
    let server =
        TestServer::start(&pki, |_, _| Reply::ok("text/html", b"<html>login</html>")).await;
    let app = app_trusting(&pki).await;
    let r = app
        .send(
            &app.owner.token,
            None,
            &json!({"to": "+917999709798", "type": "image",
            "image": {"url": format!("https://media.test:{}/x.png", server.port)}}),
        )
        .await;
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    let failed = app
        .wait_for_status(&app.owner.token, &id, |b| b["status"] == "failed")
        .await;
    assert_eq!(failed["errorCode"], "invalid_media_url");
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap()
            .contains("text/html"),
        "{failed}"
    );
    assert!(app
        .store
        .read(whatan::store::outbox::list)
        .await
        .unwrap()
        .is_empty());
}
