//! The dashboard over HTTP, as a browser would speak to it (cookies by
//! hand, no redirects followed): sign-in links, the session cookie, the
//! CSRF and Origin checks, the security headers, and that every page shows
//! only what the same user's token could read. The same flows in a real
//! browser: `tests/browser.rs`.

use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::redirect::Policy;

use crate::helpers::{login_link, spawn_app, spawn_app_with, text_to, Reply, TestApp};
use whatan::dashboard::session::LoginLink;
use whatan::store::dashboard as store;

/// A form's fields, as `(name, value)`.
type Fields<'a> = &'a [(&'a str, &'a str)];

/// A signed-in browser: its cookie and the CSRF token of its forms.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: String,
    csrf: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn sign_in<'a>(app: &'a TestApp, user: &str) -> Browser<'a> {
    let origin = format!("http://{}", app.addr);
    open_link(app, &login_link(app, user).await, &origin)
        .await
        .0
}

/// Open a sign-in link at `url` (its path, on this server) and press its
/// "Continue" button from `origin`: the signed-in browser and the
/// `Set-Cookie` it got.
async fn open_link<'a>(app: &'a TestApp, url: &str, origin: &str) -> (Browser<'a>, String) {
    let path = &url[url.find("/login/").expect("a sign-in link")..];
    let client = client();
    let confirm = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    assert!(confirm.text().await.unwrap().contains("Continue as"));
    let resp = client
        .post(app.url(path))
        .header(ORIGIN, origin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let mut browser = Browser {
        app,
        client,
        cookie: set_cookie.split(';').next().unwrap().to_string(),
        csrf: String::new(),
    };
    let page = browser.get("/accounts").await;
    browser.csrf = between(&page.text(), "name=\"csrf\" value=\"", "\"")
        .expect("a signed-in page carries the CSRF token")
        .to_string();
    (browser, set_cookie)
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl Browser<'_> {
    fn origin(&self) -> String {
        format!("http://{}", self.app.addr)
    }

    async fn get(&self, path: &str) -> Reply {
        let resp = self
            .client
            .get(self.app.url(path))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        crate::helpers::reply(resp).await
    }

    /// POST a form with the session's CSRF token and the right `Origin`.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all, Some(&self.origin())).await
    }

    async fn post_raw(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Reply {
        let mut req = self
            .client
            .post(self.app.url(path))
            .header(COOKIE, &self.cookie)
            .form(fields);
        if let Some(origin) = origin {
            req = req.header(ORIGIN, origin);
        }
        crate::helpers::reply(req.send().await.unwrap()).await
    }
}

#[tokio::test]
async fn a_login_link_signs_in_once_with_an_http_only_lax_cookie() {
    let app = spawn_app().await;
    let url = login_link(&app, &app.member.user).await;
    let origin = format!("http://{}", app.addr);
    // Opening it (and a link previewer's GET or HEAD) spends nothing.
    for _ in 0..2 {
        let page = client().get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers().get(SET_COOKIE).is_none());
        assert!(page
            .text()
            .await
            .unwrap()
            .contains("Continue as member user"));
    }
    assert_eq!(client().head(&url).send().await.unwrap().status(), 200);
    // Its button, posted from another site or from none, is refused.
    for origin in [Some("https://evil.example"), None] {
        let mut post = client().post(&url);
        if let Some(origin) = origin {
            post = post.header(ORIGIN, origin);
        }
        let refused = post.send().await.unwrap();
        assert_eq!(refused.status(), 403, "{origin:?}");
        assert!(refused.headers().get(SET_COOKIE).is_none());
    }
    let first = client()
        .post(&url)
        .header(ORIGIN, &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()[LOCATION].to_str().unwrap(), "/accounts");
    let cookie = first.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for part in [
        "whatan_session=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=2592000",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain-http public_url: {cookie}"
    );

    let again = client()
        .post(&url)
        .header(ORIGIN, &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    assert!(again.headers().get(SET_COOKIE).is_none());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 403);

    let anonymous = client().get(app.url("/accounts")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()[LOCATION].to_str().unwrap(), "/login");
}

#[tokio::test]
async fn signing_in_again_ends_the_browsers_previous_session() {
    let app = spawn_app().await;
    let first = sign_in(&app, &app.member.user).await;
    let url = login_link(&app, &app.owner.user).await;
    let switched = first
        .client
        .post(&url)
        .header(COOKIE, &first.cookie)
        .header(ORIGIN, first.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 303);
    assert_eq!(
        first.get("/accounts").await.status,
        303,
        "the old cookie is dead"
    );
}

#[tokio::test]
async fn an_expired_link_signs_nobody_in_and_sign_out_ends_the_session() {
    let app = spawn_app().await;
    let link = LoginLink::new(Duration::from_secs(900));
    let (user, hash) = (app.member.user.clone(), link.hash);
    app.store
        .write(move |c| store::create_login_link(c, &user, &hash, 1, 0))
        .await
        .unwrap();
    let url = link.url(&format!("http://{}", app.addr));
    let expired = client().get(&url).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    let pressed = client()
        .post(&url)
        .header(ORIGIN, format!("http://{}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), 403);

    let browser = sign_in(&app, &app.member.user).await;
    assert_eq!(browser.get("/accounts").await.status, 200);
    let out = browser.post("/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(browser.get("/accounts").await.status, 303);
}

#[tokio::test]
async fn every_page_forbids_inline_script_and_framing() {
    let app = spawn_app().await;
    let browser = sign_in(&app, &app.owner.user).await;
    let attempt = app
        .send_id(&app.owner.token, &text_to("+917999000001"))
        .await;
    let account = app.owner.account.clone().unwrap();
    let pages = [
        "/login".to_string(),
        "/accounts".into(),
        "/accounts/new".into(),
        format!("/accounts/{account}/link"),
        "/tokens".into(),
        "/messages".into(),
        format!("/messages/{attempt}"),
        "/team".into(),
        "/webhooks".into(),
        "/accounts/acc_unknown/link".into(),
    ];
    for path in pages {
        let page = browser.get(&path).await;
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(
            page.header("x-frame-options").as_deref(),
            Some("DENY"),
            "{path}"
        );
        assert_eq!(
            page.header("referrer-policy").as_deref(),
            Some("same-origin"),
            "{path}"
        );
        let html = page.text();
        // No inline script bodies, no event-handler attributes, no inline styles.
        assert!(
            !html.contains("<script>") && !html.contains("\" on"),
            "{path}"
        );
        for tag in html.split("<script").skip(1) {
            assert!(
                tag.contains("src=\"/assets/") && tag.contains("></script>"),
                "{path}: {tag}"
            );
        }
        for attr in [" onclick=", " onload=", " onsubmit=", " style="] {
            assert!(!html.contains(attr), "{path} has {attr}");
        }
    }
    let page = browser.get("/accounts").await.text();
    let script = between(&page, "<script src=\"", "\"").unwrap().to_string();
    let js = browser.get(&script).await;
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
}

#[tokio::test]
async fn a_state_change_without_the_origin_or_the_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let browser = sign_in(&app, &app.member.user).await;
    let tokens = || app.count("SELECT count(*) FROM tokens");
    let before = tokens().await;
    let (csrf, origin) = (browser.csrf.clone(), browser.origin());
    let refused: [(Fields, Option<&str>); 4] = [
        (
            &[("csrf", &csrf), ("kind", "send")],
            Some("https://evil.example"),
        ),
        (&[("csrf", &csrf), ("kind", "send")], None),
        (&[("csrf", "forged"), ("kind", "send")], Some(&origin)),
        (&[("kind", "send")], Some(&origin)),
    ];
    for (fields, origin) in refused {
        let reply = browser.post_raw("/tokens", fields, origin).await;
        assert_eq!(reply.status, 403, "{fields:?} from {origin:?}");
    }
    assert_eq!(tokens().await, before);

    // Signed out, a forged form changes nothing either.
    let anonymous = client()
        .post(app.url("/tokens"))
        .header(ORIGIN, browser.origin())
        .form(&[("kind", "send")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(tokens().await, before);

    let made = browser
        .post("/tokens", &[("kind", "send"), ("name", "n8n")])
        .await;
    assert_eq!(
        made.status, 303,
        "the POST redirects: a reload makes nothing twice"
    );
    assert_eq!(made.header("location").as_deref(), Some("/tokens"));
    assert_eq!(tokens().await, before + 1);
    let shown = browser.get("/tokens").await.text();
    let secret = between(&shown, "id=\"new-token\">", "<")
        .unwrap()
        .to_string();
    assert!(secret.starts_with("whatan_send_"));
    let again = browser.get("/tokens").await.text();
    assert!(!again.contains(&secret), "the secret is shown once");
    let sent = app.send(&secret, None, &text_to("+917999000001")).await;
    assert_eq!(sent.status, 202, "the page's token works on the Send API");
}

#[tokio::test]
async fn a_member_sees_only_what_their_token_could_read() {
    let app = spawn_app().await;
    let owners = app
        .send_id(&app.owner.token, &text_to("+917999000001"))
        .await;
    let mine = app
        .send_id(&app.member.token, &text_to("+917999000002"))
        .await;

    let member = sign_in(&app, &app.member.user).await;
    let list = member.get("/messages").await.text();
    assert!(list.contains(&mine) && !list.contains(&owners));
    assert_eq!(member.get(&format!("/messages/{owners}")).await.status, 404);
    app.wait_for_status(&app.member.token, &mine, |v| v["status"] == "read")
        .await;
    let detail = member.get(&format!("/messages/{mine}")).await;
    assert_eq!(detail.status, 200);
    for step in [
        "Queued · ",
        "accepted · ",
        "Delivered to the phone · ",
        "Read · ",
    ] {
        assert!(detail.text().contains(step), "the timeline dates {step:?}");
    }
    let accounts = member.get("/accounts").await.text();
    assert!(accounts.contains(&app.member.phone) && !accounts.contains(&app.owner.phone));
    assert_eq!(member.get("/team").await.status, 403);
    assert_eq!(member.get("/webhooks").await.status, 403);
    let owner_account = app.owner.account.clone().unwrap();
    assert_eq!(
        member
            .get(&format!("/accounts/{owner_account}/link"))
            .await
            .status,
        404
    );
    let disconnect = member
        .post(&format!("/accounts/{owner_account}/disconnect"), &[])
        .await;
    assert_eq!(disconnect.status, 404);

    // Personal sends are the sender's own: the owner does not see the member's.
    let owner = sign_in(&app, &app.owner.user).await;
    assert_eq!(owner.get(&format!("/messages/{mine}")).await.status, 404);
    assert!(owner
        .get("/accounts")
        .await
        .text()
        .contains(&app.member.phone));
}

#[tokio::test]
async fn removing_a_member_or_revoking_a_token_stops_it_on_the_api_at_once() {
    let app = spawn_app().await;
    let owner = sign_in(&app, &app.owner.user).await;
    let member = sign_in(&app, &app.member.user).await;

    let token_id: String = {
        let user = app.owner.user.clone();
        app.store
            .read(move |c| {
                Ok(
                    c.query_row("SELECT id FROM tokens WHERE user_id = ?1", [user], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap()
    };
    let revoked = owner.post(&format!("/tokens/{token_id}/revoke"), &[]).await;
    assert_eq!(revoked.status, 303);
    let refused = app
        .send(&app.owner.token, None, &text_to("+917999000001"))
        .await;
    assert_eq!(refused.status, 401);

    let removed = owner
        .post(&format!("/team/{}/remove", app.member.user), &[])
        .await;
    assert_eq!(removed.status, 303);
    let refused = app
        .send(&app.member.token, None, &text_to("+917999000001"))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        member.get("/accounts").await.status,
        303,
        "their session ended"
    );
    assert!(!owner.get("/team").await.text().contains(&app.member.user));
    let myself = owner
        .post(&format!("/team/{}/remove", app.owner.user), &[])
        .await;
    assert_eq!(myself.status, 400);
}

#[tokio::test]
async fn an_invited_member_adds_a_sandbox_number_and_links_it_through_the_qr_page() {
    let app = spawn_app().await;
    let owner = sign_in(&app, &app.owner.user).await;
    let invite = owner
        .post("/team/invite", &[("name", "Mia"), ("role", "member")])
        .await;
    assert_eq!(invite.status, 303);
    let url = between(&owner.get("/team").await.text(), "id=\"invite-link\">", "<")
        .unwrap()
        .to_string();
    assert!(url.starts_with(&format!("http://{}/login/", app.addr)));
    let (mia, _) = open_link(&app, &url, &format!("http://{}", app.addr)).await;
    let page = mia.get("/accounts").await.text();
    assert!(page.contains("Link your phone"));

    let bad = mia
        .post("/accounts/new", &[("phone", "12"), ("driver", "sandbox")])
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("not valid"));
    let added = mia
        .post(
            "/accounts/new",
            &[("phone", "+91 70000 00009"), ("driver", "sandbox")],
        )
        .await;
    assert_eq!(added.status, 303);
    let link = added.header("location").unwrap();
    let account = link
        .trim_start_matches("/accounts/")
        .trim_end_matches("/link")
        .to_string();
    let waiting = mia.get(&link).await.text();
    assert!(waiting.contains("<svg") && waiting.contains("Waiting for the phone"));
    assert!(waiting.contains(&format!("whatan sandbox scan {account}")));

    let scanned = mia.post(&format!("/accounts/{account}/scan"), &[]).await;
    assert_eq!(scanned.status, 303);
    let linked = mia.get(&link).await.text();
    assert!(linked.contains("Connected."), "{linked}");
    let accounts = mia.get("/accounts").await.text();
    assert!(accounts.contains("+917000000009") && accounts.contains("badge connected"));
    // One number per member: the second is refused with the reason.
    let second = mia
        .post(
            "/accounts/new",
            &[("phone", "+917000000010"), ("driver", "sandbox")],
        )
        .await;
    assert_eq!(second.status, 400);
    assert!(
        second.text().contains("already has an account"),
        "{}",
        second.text()
    );
}

#[tokio::test]
async fn behind_a_proxy_links_use_public_url_the_cookie_is_secure_and_only_that_origin_may_post() {
    let app =
        spawn_app_with(|c| c.server.public_url = Some("https://whatan.example.com".into())).await;
    let link = LoginLink::new(Duration::from_secs(900));
    let (user, hash, expires) = (app.owner.user.clone(), link.hash, link.expires_at);
    app.store
        .write(move |c| store::create_login_link(c, &user, &hash, expires, 0))
        .await
        .unwrap();
    let url = link.url("https://whatan.example.com");
    let (browser, cookie) = open_link(&app, &url, "https://whatan.example.com").await;
    assert!(cookie.contains("; Secure"), "{cookie}");
    let fields = [
        ("csrf", browser.csrf.as_str()),
        ("name", "Leo"),
        ("role", "member"),
    ];
    let direct = browser
        .post_raw("/team/invite", &fields, Some(&browser.origin()))
        .await;
    assert_eq!(
        direct.status, 403,
        "the listen address is not the public origin"
    );
    let proxied = browser
        .post_raw("/team/invite", &fields, Some("https://whatan.example.com"))
        .await;
    assert_eq!(proxied.status, 303);
    let team = browser.get("/team").await.text();
    assert!(team.contains("https://whatan.example.com/login/"));
}

#[cfg(feature = "web")]
#[tokio::test]
async fn a_web_phone_whose_linking_fails_says_why_on_the_link_page() {
    // Pairing stops before any network use: the session folder next to the
    // database cannot be created (a file is in the way). On PostgreSQL
    // sessions are rows, and nothing stops pairing before the network.
    if crate::database::sqlite_only("a session folder that cannot be created") {
        return;
    }
    let app = spawn_app_with(|c| {
        let dir = c.database.path.parent().unwrap().to_path_buf();
        std::fs::write(dir.join("web-sessions"), b"in the way").unwrap();
    })
    .await;
    let workspace = app.workspace.clone();
    let leo = app
        .store
        .write(move |c| {
            whatan::store::admin::add_user(c, &workspace, "Leo", whatan::domain::Role::Member)
        })
        .await
        .unwrap()
        .id;
    let leo = sign_in(&app, &leo).await;
    let added = leo
        .post(
            "/accounts/new",
            &[("phone", "+917000000077"), ("driver", "web")],
        )
        .await;
    assert_eq!(added.status, 303);
    let link = added.header("location").unwrap();
    let mut page = String::new();
    for _ in 0..200 {
        page = leo.get(&link).await.text();
        if page.contains("Linking failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        page.contains("Linking failed") && page.contains("web-sessions"),
        "{page}"
    );
    assert!(page.contains("Try again with a QR code") && page.contains("Use a pair code"));
    let account = link
        .trim_start_matches("/accounts/")
        .trim_end_matches("/link")
        .to_string();
    let stored = app
        .store
        .read(move |c| whatan::store::admin::get_account(c, &account))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status.as_str(),
        "disconnected",
        "nothing half-written"
    );
}

#[tokio::test]
async fn an_admin_enables_a_disabled_endpoint_and_redelivers_from_the_webhooks_page() {
    let app = spawn_app_with(|c| {
        c.webhooks.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let added = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.owner.token)
        .body(serde_json::json!({"url": "http://127.0.0.1:9/hook"}).to_string())
        .send()
        .await
        .unwrap();
    let endpoint = crate::helpers::reply(added).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let attempt = app
        .send_id(&app.admin.token, &text_to("+917999000001"))
        .await;
    app.wait_for_status(&app.admin.token, &attempt, |v| v["status"] == "read")
        .await;
    app.execute(
        "UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ?1",
        endpoint.clone(),
    )
    .await;

    let admin = sign_in(&app, &app.admin.user).await;
    let page = admin.get("/webhooks").await.text();
    assert!(page.contains("http://127.0.0.1:9/hook") && page.contains("badge disabled"));
    let delivery = between(&page, "action=\"/webhooks/deliveries/", "/redeliver")
        .unwrap()
        .to_string();
    let before = app.count("SELECT count(*) FROM webhook_deliveries").await;
    let again = admin
        .post(&format!("/webhooks/deliveries/{delivery}/redeliver"), &[])
        .await;
    assert_eq!(again.status, 303);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        before + 1
    );

    let enabled = admin
        .post(&format!("/webhooks/{endpoint}/enable"), &[])
        .await;
    assert_eq!(enabled.status, 303);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_endpoints WHERE status = 'enabled'")
            .await,
        1
    );
    // A member has no Webhooks page, and no way to act on one.
    let member = sign_in(&app, &app.member.user).await;
    assert_eq!(
        member
            .post(&format!("/webhooks/{endpoint}/enable"), &[])
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_number_an_admin_disconnected_stays_down_until_an_admin_links_it() {
    let app = spawn_app().await;
    let account = app.member.account.clone().unwrap();
    let admin = sign_in(&app, &app.admin.user).await;
    let member = sign_in(&app, &app.member.user).await;
    let own = member
        .post(&format!("/accounts/{account}/disconnect"), &[])
        .await;
    assert_eq!(own.status, 403, "members do not disconnect");
    let off = admin
        .post(&format!("/accounts/{account}/disconnect"), &[])
        .await;
    assert_eq!(off.status, 303);

    let page = member
        .get(&format!("/accounts/{account}/link"))
        .await
        .text();
    assert!(page.contains("ask them to link it again"), "{page}");
    let start = member
        .post(&format!("/accounts/{account}/link"), &[("mode", "qr")])
        .await;
    assert_eq!(start.status, 403);
    assert_eq!(
        member
            .post(&format!("/accounts/{account}/scan"), &[])
            .await
            .status,
        403
    );

    let start = admin
        .post(&format!("/accounts/{account}/link"), &[("mode", "qr")])
        .await;
    assert_eq!(start.status, 303);
    let held = app
        .count("SELECT count(*) FROM accounts WHERE held_by_operator = 1")
        .await;
    assert_eq!(held, 1, "the hold lasts until the scan");
    assert_eq!(
        admin
            .post(&format!("/accounts/{account}/scan"), &[])
            .await
            .status,
        303
    );
    let after = app
        .count("SELECT count(*) FROM accounts WHERE held_by_operator = 0 AND status = 'connected'")
        .await;
    assert_eq!(after, 3);
}

#[tokio::test]
async fn admins_make_sign_in_links_for_and_remove_members_only() {
    let app = spawn_app().await;
    let admin = sign_in(&app, &app.admin.user).await;
    let team = admin.get("/team").await.text();
    assert!(team.contains(&format!("/team/{}/link", app.member.user)));
    assert!(!team.contains(&format!("/team/{}/link", app.owner.user)));
    let for_owner = admin
        .post(&format!("/team/{}/link", app.owner.user), &[])
        .await;
    assert_eq!(for_owner.status, 400);
    assert!(!for_owner.text().contains("/login/"));
    let remove_owner = admin
        .post(&format!("/team/{}/remove", app.owner.user), &[])
        .await;
    assert_eq!(remove_owner.status, 400);
    let for_member = admin
        .post(&format!("/team/{}/link", app.member.user), &[])
        .await;
    assert_eq!(for_member.status, 303);
    assert!(admin.get("/team").await.text().contains("/login/"));
    let invite_owner = admin
        .post("/team/invite", &[("name", "Zoe"), ("role", "owner")])
        .await;
    assert_eq!(invite_owner.status, 400, "admins do not make owners");
}

#[tokio::test]
async fn a_session_in_use_is_renewed_and_its_cookie_sent_again() {
    let app = spawn_app().await;
    let browser = sign_in(&app, &app.member.user).await;
    let fresh = browser.get("/accounts").await;
    assert_eq!(fresh.header("set-cookie"), None, "no write per page");
    app.store
        .write(|c| {
            c.execute(
                "UPDATE sessions SET last_seen_at = last_seen_at - 7200000",
                (),
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let renewed = browser.get("/accounts").await;
    assert_eq!(renewed.status, 200);
    let cookie = renewed
        .header("set-cookie")
        .expect("the cookie is sent again");
    assert!(cookie.starts_with(&browser.cookie) && cookie.contains("Max-Age=2592000"));
    let since = whatan::clock::now_ms() - 60_000;
    let recent: i64 = app
        .store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM sessions WHERE last_seen_at > ?1",
                [since],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(recent, 1);
}

#[tokio::test]
async fn odd_paths_queries_and_forms_get_a_page_never_a_5xx() {
    let app = spawn_app().await;
    let browser = sign_in(&app, &app.owner.user).await;
    let long = "x".repeat(5000);
    let gets = [
        format!("/login/{long}"),
        "/login/%00%ff".to_string(),
        "/messages/not-a-uuid".into(),
        "/messages/%E2%9C%93".into(),
        "/messages?before=99999999999999999999".into(),
        "/messages?from=9999-99-99".into(),
        "/messages?from=2026-02-30&to=2026-13-01".into(),
        "/messages?status=%ff&account=%00".into(),
        "/accounts/%C3%A9/link".into(),
        "/assets/app.js".into(),
        "/assets/../Cargo.toml".into(),
        format!("/team/{long}/link"),
    ];
    for path in &gets {
        let reply = browser.get(path).await;
        assert!(reply.status < 500, "{path}: {}", reply.status);
        assert!(
            reply.status != 200 || reply.text().contains("<!DOCTYPE html>"),
            "{path}"
        );
    }
    let huge = "y".repeat(20 * 1024);
    let forms: [(&str, Vec<(&str, &str)>); 5] = [
        ("/tokens", vec![("kind", "root")]),
        ("/tokens", vec![("kind", "send"), ("name", &huge)]),
        ("/accounts/new", vec![("phone", "+1"), ("driver", "cloud")]),
        ("/team/invite", vec![("name", "  "), ("role", "member")]),
        (
            "/accounts/new",
            vec![("phone", "\u{0}\u{202e}"), ("driver", "sandbox")],
        ),
    ];
    for (path, fields) in &forms {
        let reply = browser.post(path, fields).await;
        assert!(
            (400..500).contains(&reply.status),
            "{path} {:?}: {}",
            fields.iter().map(|f| f.0).collect::<Vec<_>>(),
            reply.status
        );
    }
    let raw = browser
        .client
        .post(app.url("/tokens"))
        .header(COOKIE, &browser.cookie)
        .header(ORIGIN, browser.origin())
        .body(vec![0xff, 0xfe, b'=', 0xc3])
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.status(),
        403,
        "bytes that are no form carry no CSRF token"
    );
}
