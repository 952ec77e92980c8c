//! GET /api/v1/messages/{id}: the status body and the read rules.

use crate::helpers::*;
use serde_json::json;
use whatan::domain::Role;

async fn queue(app: &TestApp, token: &str, from: Option<&str>) -> String {
    let mut body = text_to("+917999709798");
    if let Some(f) = from {
        body["from"] = json!(f);
    }
    let r = app.send(token, None, &body).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    r.json()["sendAttemptId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_status_body_has_the_pages_fields() {
    let app = spawn_app().await;
    let id = queue(&app, &app.member.token, None).await;
    let r = app.status(&app.member.token, &id).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    for k in [
        "sendAttemptId",
        "status",
        "messageId",
        "remoteJid",
        "errorCode",
        "errorMessage",
        "createdAt",
        "updatedAt",
    ] {
        assert!(body.get(k).is_some(), "missing {k}");
    }
    assert_eq!(body["sendAttemptId"], id.as_str());
    let created = body["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), "2026-05-14T10:00:04.000Z".len());
    assert!(created.ends_with('Z') && created.as_bytes()[19] == b'.');
}

#[tokio::test]
async fn read_rules_follow_the_page() {
    let app = spawn_app().await;
    let owner_personal = queue(&app, &app.owner.token, None).await;
    let admin_workspace = queue(&app, &app.admin.token, Some(&app.member.phone)).await;
    let member_personal = queue(&app, &app.member.token, None).await;
    let ws = app.workspace.clone();
    let other_admin = app
        .store
        .write(move |c| add_member(c, &ws, Role::Admin, "+917000000004"))
        .await
        .unwrap();
    let outsider = app
        .store
        .write(|c| {
            let ws = whatan::store::admin::create_workspace(c, "Other")?;
            add_member(c, &ws.id, Role::Owner, "+917000000005")
        })
        .await
        .unwrap();

    let cases = [
        // Own attempts, any role.
        (&app.owner.token, &owner_personal, 200),
        (&app.member.token, &member_personal, 200),
        (&app.admin.token, &admin_workspace, 200),
        // Owners and admins read workspace-sender-mode attempts of the workspace...
        (&app.owner.token, &admin_workspace, 200),
        (&other_admin.token, &admin_workspace, 200),
        // ...but not another user's personal attempts.
        (&app.owner.token, &member_personal, 404),
        (&app.admin.token, &owner_personal, 404),
        // Members read only their own, even a workspace attempt sent from their number.
        (&app.member.token, &admin_workspace, 404),
        (&app.member.token, &owner_personal, 404),
        // Other workspaces see nothing.
        (&outsider.token, &admin_workspace, 404),
        (&outsider.token, &owner_personal, 404),
    ];
    for (token, id, status) in cases {
        let r = app.status(token, id).await;
        assert_eq!(r.status, status, "{id}");
        if status == 404 {
            assert_eq!(r.code(), "not_found");
        }
    }
}

#[tokio::test]
async fn malformed_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    for id in [
        "nope",
        "f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53",
        "%27%20OR%201%3D1",
        "1",
    ] {
        let r = app.status(&app.owner.token, id).await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{id}");
    }
    let r = app.status("", "f1f7a5a0-2ff4-4ef7-b4bf-1a3b50ad6f53").await;
    assert_eq!(r.status, 401);
}
