//! The team dashboard: server-rendered pages (maud templates, compiled in)
//! for signing in, linking phones, tokens, messages, the team and webhooks,
//! plus one small script for live updates and copy buttons.
//!
//! Architecture invariant: a page shows only what the same user's Send API
//! token would see. Visibility goes through the API's own rules
//! (`api::status::visible`, `api::status::readable`, [`senders`]), never a
//! copy. Every state change is a POST that carries the session's CSRF token
//! and an `Origin` equal to `server.public_url`; anything else is 403.
//! Like `api`, the dashboard never calls a driver: linking a `web` phone
//! goes through `dashboard::link`, which runs the driver crate's pairing.

mod accounts;
mod assets;
pub mod flash;
mod layout;
pub mod link;
mod messages;
mod qr;
pub mod session;
mod team;
mod tokens;
mod webhooks;

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use maud::Markup;

use crate::api::{AppState, Body};
use crate::store::StoreError;
use session::SignedIn;

/// Form bodies are small; anything bigger is refused.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A dashboard path, parsed once; [`Page::template`] names it in logs and
/// metrics without its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page<'a> {
    Home,
    SignIn,
    SignInLink(&'a str),
    SignOut,
    Asset(&'a str),
    Accounts,
    AccountNew,
    AccountLink(&'a str),
    AccountScan(&'a str),
    AccountDisconnect(&'a str),
    Tokens,
    TokenRevoke(&'a str),
    Messages,
    Message(&'a str),
    Team,
    TeamInvite,
    TeamLink(&'a str),
    TeamRemove(&'a str),
    Webhooks,
    WebhookEnable(&'a str),
    WebhookRedeliver(&'a str),
}

impl<'a> Page<'a> {
    /// The page a path names, or `None` for a path the dashboard does not
    /// serve (the API's, or nothing).
    pub fn parse(path: &'a str) -> Option<Page<'a>> {
        let page = match path {
            "/" => Page::Home,
            "/login" => Page::SignIn,
            "/logout" => Page::SignOut,
            "/accounts" => Page::Accounts,
            "/accounts/new" => Page::AccountNew,
            "/tokens" => Page::Tokens,
            "/messages" => Page::Messages,
            "/team" => Page::Team,
            "/team/invite" => Page::TeamInvite,
            "/webhooks" => Page::Webhooks,
            _ => {
                let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
                match segments.as_slice() {
                    ["login", secret] if !secret.is_empty() => Page::SignInLink(secret),
                    ["assets", name] if !name.is_empty() => Page::Asset(name),
                    ["accounts", id, "link"] if !id.is_empty() => Page::AccountLink(id),
                    ["accounts", id, "scan"] if !id.is_empty() => Page::AccountScan(id),
                    ["accounts", id, "disconnect"] if !id.is_empty() => Page::AccountDisconnect(id),
                    ["tokens", id, "revoke"] if !id.is_empty() => Page::TokenRevoke(id),
                    ["messages", id] if !id.is_empty() => Page::Message(id),
                    ["team", id, "link"] if !id.is_empty() => Page::TeamLink(id),
                    ["team", id, "remove"] if !id.is_empty() => Page::TeamRemove(id),
                    ["webhooks", id, "enable"] if !id.is_empty() => Page::WebhookEnable(id),
                    ["webhooks", "deliveries", id, "redeliver"] if !id.is_empty() => {
                        Page::WebhookRedeliver(id)
                    }
                    _ => return None,
                }
            }
        };
        Some(page)
    }

    pub fn template(&self) -> &'static str {
        match self {
            Page::Home => "/",
            Page::SignIn => "/login",
            Page::SignInLink(_) => "/login/{secret}",
            Page::SignOut => "/logout",
            Page::Asset(_) => "/assets/{name}",
            Page::Accounts => "/accounts",
            Page::AccountNew => "/accounts/new",
            Page::AccountLink(_) => "/accounts/{id}/link",
            Page::AccountScan(_) => "/accounts/{id}/scan",
            Page::AccountDisconnect(_) => "/accounts/{id}/disconnect",
            Page::Tokens => "/tokens",
            Page::TokenRevoke(_) => "/tokens/{id}/revoke",
            Page::Messages => "/messages",
            Page::Message(_) => "/messages/{id}",
            Page::Team => "/team",
            Page::TeamInvite => "/team/invite",
            Page::TeamLink(_) => "/team/{id}/link",
            Page::TeamRemove(_) => "/team/{id}/remove",
            Page::Webhooks => "/webhooks",
            Page::WebhookEnable(_) => "/webhooks/{id}/enable",
            Page::WebhookRedeliver(_) => "/webhooks/deliveries/{id}/redeliver",
        }
    }

    /// Pages that change state take POST only; the rest GET (and HEAD).
    fn is_action(&self) -> bool {
        matches!(
            self,
            Page::SignOut
                | Page::AccountScan(_)
                | Page::AccountDisconnect(_)
                | Page::TokenRevoke(_)
                | Page::TeamInvite
                | Page::TeamLink(_)
                | Page::TeamRemove(_)
                | Page::WebhookEnable(_)
                | Page::WebhookRedeliver(_)
        )
    }

    /// Pages that show a form on GET and take it on POST.
    fn has_form(&self) -> bool {
        matches!(
            self,
            Page::SignInLink(_) | Page::AccountNew | Page::AccountLink(_) | Page::Tokens
        )
    }
}

/// What went wrong, as the page that says so.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> PageError {
        PageError::new(StatusCode::NOT_FOUND, "There is nothing here.")
    }

    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn method_not_allowed() -> PageError {
        PageError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "That is not something this page does.",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => PageError::not_found(),
            StoreError::Invalid(m) | StoreError::Conflict(m) => PageError::bad_request(m),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database cannot take writes");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "whatan cannot store this right now (the disk is full or the database is not writable). Nothing was changed; try again later.",
                )
            }
            e => {
                tracing::error!(error = %e, "store error in the dashboard");
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server; nothing was changed.",
                )
            }
        }
    }
}

type PageResult = Result<Response<Body>, PageError>;

/// Answer a dashboard request. Every response carries the security headers;
/// every failure is a page that says what went wrong.
pub async fn handle(state: &AppState, req: Request<Incoming>, page: Page<'_>) -> Response<Body> {
    // The stylesheet and script need no session: no store trip for them.
    if let Page::Asset(name) = page {
        let response = match *req.method() {
            Method::GET | Method::HEAD => assets::serve(name),
            _ => Err(PageError::method_not_allowed()),
        };
        return with_security_headers(response.unwrap_or_else(|e| error_page(None, e)));
    }
    let signed_in = match session::signed_in(state, req.headers()).await {
        Ok(s) => s,
        Err(e) => return with_security_headers(error_page(None, e)),
    };
    let result = route(state, req, &page, signed_in.as_ref()).await;
    let mut response = result.unwrap_or_else(|e| error_page(signed_in.as_ref(), e));
    if let Some(who) = &signed_in {
        session::refresh_cookie(state, who, &mut response);
    }
    with_security_headers(response)
}

async fn route(
    state: &AppState,
    req: Request<Incoming>,
    page: &Page<'_>,
    who: Option<&SignedIn>,
) -> PageResult {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let origin = session::origin(req.headers());
    let allowed = if page.is_action() {
        method == Method::POST
    } else if page.has_form() {
        matches!(method, Method::GET | Method::HEAD | Method::POST)
    } else {
        matches!(method, Method::GET | Method::HEAD)
    };
    if !allowed {
        return Err(PageError::method_not_allowed());
    }
    // Pages anyone may open.
    match page {
        Page::SignIn => return Ok(html(StatusCode::OK, session::sign_in_page(who))),
        Page::SignInLink(secret) if method == Method::POST => {
            return session::spend_link(state, req.headers(), origin.as_deref(), secret).await
        }
        Page::SignInLink(secret) => return session::confirm_page(state, who, secret).await,
        _ => {}
    }
    let Some(who) = who else {
        return Ok(redirect("/login"));
    };
    let form = if method == Method::POST {
        let form = read_form(req).await?;
        session::check_csrf(state, who, origin.as_deref(), &form)?;
        Some(form)
    } else {
        None
    };
    match (page, form) {
        (Page::Home, _) => Ok(redirect("/accounts")),
        (Page::SignOut, _) => session::sign_out(state, who).await,
        (Page::Accounts, _) => accounts::list(state, who).await,
        (Page::AccountNew, None) => accounts::new_form(state, who, None).await,
        (Page::AccountNew, Some(form)) => accounts::add(state, who, &form).await,
        (Page::AccountLink(id), form) => accounts::link(state, who, id, form.as_ref()).await,
        (Page::AccountScan(id), _) => accounts::scan(state, who, id).await,
        (Page::AccountDisconnect(id), _) => accounts::disconnect(state, who, id).await,
        (Page::Tokens, None) => tokens::list(state, who).await,
        (Page::Tokens, Some(form)) => tokens::create(state, who, &form).await,
        (Page::TokenRevoke(id), _) => tokens::revoke(state, who, id).await,
        (Page::Messages, _) => messages::list(state, who, query.as_deref()).await,
        (Page::Message(id), _) => messages::detail(state, who, id).await,
        (Page::Team, _) => team::list(state, who).await,
        (Page::TeamInvite, Some(form)) => team::invite(state, who, &form).await,
        (Page::TeamLink(id), _) => team::sign_in_link(state, who, id).await,
        (Page::TeamRemove(id), _) => team::remove(state, who, id).await,
        (Page::Webhooks, _) => webhooks::list(state, who).await,
        (Page::WebhookEnable(id), _) => webhooks::enable(state, who, id).await,
        (Page::WebhookRedeliver(id), _) => webhooks::redeliver(state, who, id).await,
        _ => Err(PageError::not_found()),
    }
}

/// A submitted form's fields (the last value of a repeated name wins).
pub type Form = HashMap<String, String>;

async fn read_form(req: Request<Incoming>) -> Result<Form, PageError> {
    let body = crate::api::read_body(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|e| PageError::new(e.status, e.message))?;
    Ok(parse_form(&body))
}

fn parse_form(body: &[u8]) -> Form {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A form field, trimmed; empty counts as absent.
pub fn field<'f>(form: &'f Form, name: &str) -> Option<&'f str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

pub fn html(status: StatusCode, markup: Markup) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(markup.into_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// 303 See Other: where a form's POST sends the browser next.
pub fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn error_page(who: Option<&SignedIn>, e: PageError) -> Response<Body> {
    html(e.status, layout::error(who, e.status, &e.message))
}

/// The content security policy: scripts and styles only from this origin,
/// no inline script, no framing, forms only to this origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

fn with_security_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_paths_parse_to_pages_and_others_to_none() {
        assert_eq!(Page::parse("/"), Some(Page::Home));
        assert_eq!(Page::parse("/login/abc"), Some(Page::SignInLink("abc")));
        assert_eq!(
            Page::parse("/accounts/acc_1/link"),
            Some(Page::AccountLink("acc_1"))
        );
        assert_eq!(
            Page::parse("/webhooks/deliveries/dlv_1/redeliver"),
            Some(Page::WebhookRedeliver("dlv_1"))
        );
        for other in [
            "/api/v1/messages",
            "/webhooks/cloud/acc_1",
            "/login/",
            "/accounts//link",
            "/healthz",
            "/accounts/a/b/c",
        ] {
            assert_eq!(Page::parse(other), None, "{other}");
        }
    }

    #[test]
    fn forms_decode_and_empty_fields_count_as_absent() {
        let form = parse_form(b"name=Ana+Lima&phone=%2B917000000001&empty=++");
        assert_eq!(field(&form, "name"), Some("Ana Lima"));
        assert_eq!(field(&form, "phone"), Some("+917000000001"));
        assert_eq!(field(&form, "empty"), None);
        assert_eq!(field(&form, "missing"), None);
    }
}
