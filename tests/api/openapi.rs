//! The OpenAPI document stays true to the server: the routes it describes
//! are the routes the router serves, its error codes are `ErrorCode::ALL`,
//! and the page's examples in it are accepted as it says.

use std::collections::BTreeSet;

use serde_json::Value;
use whatan::api::{OPENAPI_JSON, OPENAPI_PATH, ROUTES};
use whatan::domain::ErrorCode;

use crate::helpers::spawn_app;

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(METHOD, path)` of every operation in the document.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// A concrete path for a template: each `{param}` becomes a well-formed
/// value that names nothing stored.
fn concrete(template: &str) -> String {
    template
        .replace("{sendAttemptId}", "f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53")
        .replace("{accountId}", "acc_none")
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_of_the_router() {
    // Arrange
    let doc = document();
    let app = spawn_app().await;
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();

    // Act / Assert: the list and the document agree...
    assert_eq!(
        documented_routes(&doc),
        listed,
        "api::ROUTES vs openapi.json paths"
    );
    // ...and the router serves every one of them (whatever it answers, it is
    // not the catch-all "no route" 404).
    for (method, template) in ROUTES {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(method.clone(), app.url(&concrete(template)))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!(
            !(status == 404 && body.contains("no route")),
            "{method} {template} is documented but the router has no route for it"
        );
        assert_ne!(
            status, 405,
            "{method} {template}: the router refuses the method"
        );
    }
    // A path outside the list is the catch-all, so the check above can fail.
    let missing = app
        .client
        .get(app.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("no route"));
}

#[tokio::test]
async fn the_document_is_served_without_auth_as_json() {
    let app = spawn_app().await;

    let resp = app.client.get(app.url(OPENAPI_PATH)).send().await.unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(served, document());
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn the_error_code_enum_is_every_error_code() {
    let doc = document();
    let documented: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, all);
    // The error body: code and message always, field and requestId optional.
    let inner = &doc["components"]["schemas"]["Error"]["properties"]["error"];
    assert_eq!(inner["required"], serde_json::json!(["code", "message"]));
    assert!(inner["properties"]["field"].is_object());
    assert!(inner["properties"]["requestId"].is_object());
}

#[tokio::test]
async fn the_documents_text_examples_are_queued_as_documented() {
    // Arrange: the page's owner number is the fixture owner's (+917000000001).
    let doc = document();
    let app = spawn_app().await;
    let send = &doc["paths"]["/api/v1/messages/send"]["post"];
    let examples = send["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap();
    let queued = &send["responses"]["202"]["content"]["application/json"]["example"];
    let required = doc["components"]["schemas"]["QueuedResponse"]["required"]
        .as_array()
        .unwrap();

    for name in ["workspaceText", "personalText"] {
        // Act
        let reply = app
            .send(&app.owner.token, Some(name), &examples[name]["value"])
            .await;

        // Assert
        assert_eq!(
            reply.status,
            202,
            "{name}: {}",
            String::from_utf8_lossy(&reply.bytes)
        );
        let body = reply.json();
        for field in required {
            let field = field.as_str().unwrap();
            assert!(body.get(field).is_some(), "{name}: no {field} in {body}");
        }
        assert_eq!(body["to"], queued["to"]);
        assert_eq!(body["normalizedPhone"], queued["normalizedPhone"]);
        assert_eq!(body["status"], "queued");
    }
}
