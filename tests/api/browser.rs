//! The dashboard in a real browser: Debian's Chromium driven by
//! playwright-core (`tests/browser/dashboard.mjs`) against the real server.
//! It signs in with a login link, adds and links a sandbox phone through
//! the QR page (`whatan sandbox scan` plays the phone), creates a token and
//! sends with it, watches the message reach `read` on the Messages page,
//! revokes the token, checks that another member's personal attempt stays
//! hidden and that a cross-site POST is refused, and takes the screenshots
//! of the README (`docs/screenshots/`, refreshed when
//! `WHATAN_UPDATE_SCREENSHOTS=1`; `target/screenshots/` otherwise).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::external_tool::{available_or_skip, find_or_skip};
use crate::helpers::{login_link, reply, spawn_app_with, text_to};
use crate::receiver::Receiver;
use whatan::domain::Role;
use whatan::store::admin;

const LEFT_OUT: &str = "the dashboard in a real browser";

/// The browser-test folder, with playwright-core installed by
/// `npm ci --prefix tests/browser` (scripts/test-all does it).
fn playwright_or_skip() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let installed = dir.join("node_modules/playwright-core").is_dir();
    available_or_skip(
        installed,
        "playwright-core (npm ci --prefix tests/browser) is",
        LEFT_OUT,
    )
    .then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_end_to_end_in_a_real_browser() {
    let (Some(chromium), Some(node), Some(dir)) = (
        find_or_skip("chromium", LEFT_OUT),
        find_or_skip("node", LEFT_OUT),
        playwright_or_skip(),
    ) else {
        return;
    };
    let hooks = Receiver::start(200).await;
    let app = spawn_app_with(|c| {
        c.webhooks.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.webhooks.poll_interval = Duration::from_millis(20);
    })
    .await;
    // Mia: a member with no number yet.
    let workspace = app.workspace.clone();
    let mia = app
        .store
        .write(move |c| admin::add_user(c, &workspace, "Mia", Role::Member))
        .await
        .unwrap()
        .id;
    // Another member's personal send, which Mia must not see.
    let other = app
        .send_id(&app.member.token, &text_to("+917999000001"))
        .await;
    // An endpoint, so the Webhooks page has deliveries to show.
    let added = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.owner.token)
        .body(json!({"url": hooks.url(), "description": "CRM"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply(added).await.status, 201);

    let update = std::env::var("WHATAN_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = if update {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    };
    let envs: [(&str, String); 9] = [
        ("BASE", format!("http://{}", app.addr)),
        ("MIA_LINK", login_link(&app, &mia).await),
        ("OWNER_LINK", login_link(&app, &app.owner.user).await),
        ("OWNER_LINK_PHONE", login_link(&app, &app.owner.user).await),
        ("OTHER_ATTEMPT", other),
        ("WHATAN_BIN", env!("CARGO_BIN_EXE_whatan").to_string()),
        app.database_env(),
        ("CHROMIUM", chromium.display().to_string()),
        ("SCREENSHOTS", shots.display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(node)
            .arg(dir.join("dashboard.mjs"))
            .current_dir(&dir)
            .envs(envs)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");

    // What the browser did is what the database holds.
    let mia_tokens = {
        let mia = mia.clone();
        app.store
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT count(*), count(revoked_at) FROM tokens WHERE user_id = ?1",
                    [mia],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?)
            })
            .await
            .unwrap()
    };
    assert_eq!(
        mia_tokens,
        (1, 1),
        "one token, created and revoked; none by the cross-site POST"
    );
    let account = app
        .store
        .read(move |c| admin::account_of_user(c, &mia))
        .await
        .unwrap()
        .expect("Mia's number");
    assert_eq!(account.phone, "+917000000042");
    assert_eq!(account.status.as_str(), "connected");
    for name in [
        "link-phone",
        "tokens",
        "messages",
        "message-detail",
        "accounts",
        "team",
        "webhooks",
        "accounts-phone",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "no screenshot {name}"
        );
    }
}
