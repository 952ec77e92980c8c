//! The frame every page shares (head, navigation, sign-out) and small
//! pieces pages reuse: the CSRF field, status badges, times.

use hyper::StatusCode;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::{SignedIn, CSRF_FIELD};

/// A whole page: `title` in the tab and the header, `body` in the main
/// column. Signed-in users get the navigation their role allows.
pub fn page(who: Option<&SignedIn>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · whatan" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
                link rel="icon" href="data:,";
                script src=(super::assets::JS_PATH) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { span.logo { "w" } "whatan" }
                    @if let Some(who) = who {
                        nav {
                            a href="/accounts" { "Accounts" }
                            a href="/messages" { "Messages" }
                            a href="/tokens" { "Tokens" }
                            @if who.manages_workspace() {
                                a href="/team" { "Team" }
                                a href="/webhooks" { "Webhooks" }
                            }
                        }
                        form.signout method="post" action="/logout" {
                            (csrf(who))
                            span.muted { (who.user.name) " · " (who.user.role.as_str()) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn error(who: Option<&SignedIn>, status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        who,
        title,
        html! {
            section.card.narrow {
                h1 { (title) }
                p { (message) }
                p { a href=(if who.is_some() { "/accounts" } else { "/login" }) { "Back to whatan" } }
            }
        },
    )
}

/// The hidden field every form carries.
pub fn csrf(who: &SignedIn) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(who.csrf_token); }
}

/// A small POST form that is only a button (revoke, disconnect, ...).
/// `confirm`: the question the script asks first.
pub fn action_button(
    who: &SignedIn,
    action: &str,
    label: &str,
    confirm: Option<&str>,
    class: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf(who))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A status as a coloured badge (`connected`, `read`, `failed`, ...).
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status.replace('_', " ")) } }
}

/// A stored millisecond time, in UTC, to the second.
pub fn time(ms: i64) -> Markup {
    stamp(&crate::clock::rfc3339_ms(ms))
}

/// An RFC 3339 time as stored or shown by the API (`2026-12-06T02:39:05.123Z`),
/// to the second.
pub fn stamp(rfc3339: &str) -> Markup {
    let short = rfc3339
        .get(..19)
        .map(|t| t.replace('T', " "))
        .unwrap_or_else(|| rfc3339.to_string());
    html! { time datetime=(rfc3339) { (short) " UTC" } }
}

/// A secret shown once, with a copy button.
pub fn secret_once(id: &str, label: &str, secret: &str) -> Markup {
    html! {
        div.secret {
            p { strong { (label) } }
            div.copyrow {
                code id=(id) { (secret) }
                button.copy type="button" data-copy=(id) { "Copy" }
            }
            p.muted { "It is shown only this once; whatan keeps only a hash of it." }
        }
    }
}

/// An empty list's friendly line.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// Nothing on a page is inline script; this marks the one place where raw
/// markup (the QR code's SVG, built by `qr.rs` from numbers only) is used.
pub fn trusted_svg(svg: String) -> Markup {
    PreEscaped(svg)
}
