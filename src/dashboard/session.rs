//! Signing in and out: one-time links, the session cookie, and the CSRF and
//! `Origin` checks every state change passes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::header::{HeaderValue, COOKIE, ORIGIN, SET_COOKIE};
use hyper::{HeaderMap, Response};
use maud::html;

use super::{layout, redirect, Form, PageError};
use crate::api::{AppState, Body};
use crate::domain::token::{hash, hashes_equal};
use crate::store::admin::{Principal, User};
use crate::store::dashboard as store;

/// The session cookie (dashboard.md).
pub const COOKIE_NAME: &str = "whatan_session";

/// The hidden form field that carries the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// 256 random bits, URL-safe: link secrets, session ids, CSRF tokens.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new one-time sign-in link: the secret for the URL, its hash for the
/// store.
pub struct LoginLink {
    secret: String,
    pub hash: [u8; 32],
    pub expires_at: i64,
}

impl LoginLink {
    pub fn new(ttl: Duration) -> LoginLink {
        let secret = new_secret();
        LoginLink {
            hash: hash(&secret),
            secret,
            expires_at: crate::clock::now_ms()
                .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// `<public_url>/login/<secret>`.
    pub fn url(&self, public_url: &str) -> String {
        format!("{}/login/{}", public_url.trim_end_matches('/'), self.secret)
    }
}

/// A signed-in browser: its user, and what their token would be allowed.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub csrf_token: String,
    id_hash: [u8; 32],
    /// The cookie's session id, when this request renewed the session: the
    /// response sends the cookie again, so that it lasts 30 days from now.
    renewed: Option<String>,
}

impl SignedIn {
    /// What a Send API token of this user would be: the API's read rules
    /// take it, so a page never shows more than the token could read.
    pub fn principal(&self) -> Principal {
        Principal::of_user(&self.user.id, &self.user.workspace, self.user.role)
    }

    /// What keys this session's one-time secrets ([`super::flash`]).
    pub fn session_key(&self) -> [u8; 32] {
        self.id_hash
    }

    /// Owners and admins: the workspace's numbers, tokens, team, webhooks.
    pub fn manages_workspace(&self) -> bool {
        self.user.role.may_choose_sender()
    }

    /// 403 unless an owner or admin: "Only owners and admins {what}."
    pub fn require_manager(&self, what: &str) -> Result<(), PageError> {
        if self.manages_workspace() {
            Ok(())
        } else {
            Err(PageError::forbidden(format!(
                "Only owners and admins {what}."
            )))
        }
    }
}

/// The session the request's cookie names, if it is live.
pub async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SignedIn>, PageError> {
    let Some(id) = cookie(headers, COOKIE_NAME) else {
        return Ok(None);
    };
    let id_hash = hash(&id);
    let now = state.clock.now_ms();
    let Some(session) = state
        .store
        .read(move |c| store::session(c, &id_hash, now))
        .await?
    else {
        return Ok(None);
    };
    let renewed = if now - session.last_seen_at > store::SESSION_TOUCH_MS {
        state
            .store
            .write(move |c| store::touch_session(c, &id_hash, now))
            .await?;
        Some(id)
    } else {
        None
    };
    Ok(Some(SignedIn {
        user: session.user,
        csrf_token: session.csrf_token,
        id_hash,
        renewed,
    }))
}

/// The session cookie for session `id`: `Secure` when `public_url` is https.
fn session_cookie(state: &AppState, id: &str) -> Option<HeaderValue> {
    let secure = if state.config.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
        store::SESSION_IDLE_MS / 1000
    );
    HeaderValue::from_str(&cookie).ok()
}

/// Send the cookie again after a request renewed the session (unless the
/// response sets it itself: sign-out, a new sign-in).
pub fn refresh_cookie(state: &AppState, who: &SignedIn, response: &mut Response<Body>) {
    let Some(id) = &who.renewed else {
        return;
    };
    if response.headers().contains_key(SET_COOKIE) {
        return;
    }
    if let Some(cookie) = session_cookie(state, id) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// `GET /login/<secret>`: whose link this is, and a button to continue.
/// Opening the link spends nothing, so the link previews of chat apps and
/// the link scanners of mail systems cannot use it up; the button's POST
/// does (dashboard.md says "opening it signs in": one click more, see the
/// README).
pub async fn confirm_page(
    state: &AppState,
    who: Option<&SignedIn>,
    secret: &str,
) -> Result<Response<Body>, PageError> {
    let link_hash = hash(secret);
    let now = state.clock.now_ms();
    let user = state
        .store
        .read(move |c| store::login_link_user(c, &link_hash, now))
        .await?
        .ok_or_else(spent)?;
    let body = html! {
        section.card.narrow {
            h1 { "Sign in to whatan" }
            p { "This one-time link signs you in as " strong { (user.name) } "." }
            @if let Some(who) = who.filter(|w| w.user.id != user.id) {
                p.muted { "You are signed in as " (who.user.name) " now; continuing signs you in as " (user.name) " instead." }
            }
            form method="post" action={ "/login/" (secret) } {
                button type="submit" { "Continue as " (user.name) }
            }
        }
    };
    Ok(super::html(
        hyper::StatusCode::OK,
        layout::page(None, "Sign in", body),
    ))
}

fn spent() -> PageError {
    PageError::forbidden(
        "This sign-in link was already used, has expired, or is not one of ours. Ask for a new one.",
    )
}

/// `POST /login/<secret>` (the confirm page's button): spend the link,
/// start a session, end the one the browser had, go to the accounts. The
/// `Origin` must be `server.public_url`, so another site cannot sign a
/// browser into a session of its choosing.
pub async fn spend_link(
    state: &AppState,
    headers: &HeaderMap,
    origin: Option<&str>,
    secret: &str,
) -> Result<Response<Body>, PageError> {
    check_origin(state, origin)?;
    let link_hash = hash(secret);
    let previous = cookie(headers, COOKIE_NAME).map(|id| hash(&id));
    let now = state.clock.now_ms();
    let session_id = new_secret();
    let id_hash = hash(&session_id);
    let csrf = new_secret();
    let user = state
        .store
        .write(move |c| {
            let Some(user) = store::spend_login_link(c, &link_hash, now)? else {
                return Ok(None);
            };
            if let Some(previous) = previous {
                store::end_session(c, &previous)?;
            }
            store::create_session(c, &id_hash, &user, &csrf, now)?;
            Ok(Some(user))
        })
        .await?;
    if user.is_none() {
        return Err(spent());
    }
    let mut response = redirect("/accounts");
    if let Some(cookie) = session_cookie(state, &session_id) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /logout`: end the session and forget the cookie.
pub async fn sign_out(state: &AppState, who: &SignedIn) -> Result<Response<Body>, PageError> {
    let id_hash = who.id_hash;
    state
        .store
        .write(move |c| store::end_session(c, &id_hash))
        .await?;
    let mut response = redirect("/login");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("whatan_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// Every state change: the request's `Origin` is `server.public_url` and
/// the form carries the session's CSRF token. Otherwise 403, and nothing
/// changes.
pub fn check_csrf(
    state: &AppState,
    who: &SignedIn,
    origin: Option<&str>,
    form: &Form,
) -> Result<(), PageError> {
    check_origin(state, origin)?;
    let sent = form.get(CSRF_FIELD).map(String::as_str).unwrap_or("");
    if !hashes_equal(sent.as_bytes(), who.csrf_token.as_bytes()) {
        return Err(PageError::forbidden(
            "This form is out of date or did not come from the dashboard: reload the page and try again.",
        ));
    }
    Ok(())
}

/// The request's `Origin` is `server.public_url`.
fn check_origin(state: &AppState, origin: Option<&str>) -> Result<(), PageError> {
    let expected = state.config.public_url();
    match origin {
        Some(origin) if origin.trim_end_matches('/') == expected.trim_end_matches('/') => Ok(()),
        Some(other) => Err(PageError::forbidden(format!(
            "This form came from {other}, not from {expected}: refused. (Behind a proxy, set server.public_url to the address you open the dashboard at.)"
        ))),
        None => Err(PageError::forbidden(
            "This request names no Origin: refused.",
        )),
    }
}

/// The request's `Origin` header, if it is text.
pub fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `GET /login`: how to get in.
pub fn sign_in_page(who: Option<&SignedIn>) -> maud::Markup {
    layout::page(
        who,
        "Sign in",
        html! {
            section.card.narrow {
                h1 { "Sign in to whatan" }
                @if let Some(who) = who {
                    p { "You are signed in as " strong { (who.user.name) } ". " a href="/accounts" { "Go to your accounts" } "." }
                } @else {
                    p { "whatan signs you in with a one-time link. Ask an owner or admin of your workspace for one, or, on the server, run:" }
                    pre { code { "whatan user login-link USER_ID" } }
                    p.muted { "Each link works once and expires (15 minutes unless its creator chose otherwise)." }
                }
            }
        },
    )
}
