//! Messages: recent attempts under the list route's read rule and filters,
//! and one attempt's timeline (queued → accepted → delivered → read, or
//! the failure and its reason).

use hyper::StatusCode;
use maud::{html, Markup};

use super::layout::{self, badge, time};
use super::session::SignedIn;
use super::{html, PageError, PageResult};
use crate::api::status::{attempt_id, readable, visible};
use crate::api::AppState;
use crate::domain::AttemptStatus;
use crate::store::attempts::{self, AttemptRow, StepTimes};
use crate::store::listing::{self, AttemptFilter};

/// Rows per page.
const PAGE_SIZE: usize = 50;

/// The filters of the Messages page, from its query string.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filters {
    status: Option<AttemptStatus>,
    account: Option<String>,
    /// `YYYY-MM-DD`, UTC, inclusive, as written (for the form and the
    /// page links) and as the listing's bounds in milliseconds.
    from: Option<String>,
    to: Option<String>,
    created_since: Option<i64>,
    created_until: Option<i64>,
    before: Option<i64>,
}

impl Filters {
    fn parse(query: Option<&str>) -> Result<Filters, PageError> {
        let mut f = Filters::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.trim().to_string();
            if value.is_empty() {
                continue;
            }
            match key.as_ref() {
                "status" => {
                    f.status = Some(AttemptStatus::parse(&value).ok_or_else(|| {
                        PageError::bad_request(format!("There is no status {value:?}."))
                    })?)
                }
                "account" => f.account = Some(value),
                "from" => {
                    f.created_since = Some(day_start(&value)?);
                    f.from = Some(value);
                }
                "to" => {
                    f.created_until = Some(day_start(&value)? + DAY_MS);
                    f.to = Some(value);
                }
                "before" => {
                    f.before = Some(value.parse().map_err(|_| {
                        PageError::bad_request(
                            "That page link is broken: start again from the first page.",
                        )
                    })?)
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// The query string of these filters, with `before` replaced.
    fn query(&self, before: Option<i64>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = self.status {
            q.append_pair("status", s.as_str());
        }
        for (k, v) in [
            ("account", &self.account),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            q.append_pair("before", &b.to_string());
        }
        q.finish()
    }
}

/// `YYYY-MM-DD` as the millisecond its UTC day starts.
fn day_start(value: &str) -> Result<i64, PageError> {
    crate::clock::parse_rfc3339_ms(&format!("{value}T00:00:00Z"))
        .ok_or_else(|| PageError::bad_request(format!("{value:?} is not a date (YYYY-MM-DD).")))
}

const DAY_MS: i64 = 86_400_000;

pub async fn list(state: &AppState, who: &SignedIn, query: Option<&str>) -> PageResult {
    let filters = Filters::parse(query)?;
    let (since, until) = (filters.created_since, filters.created_until);
    let principal = who.principal();
    let (status, account, before) = (filters.status, filters.account.clone(), filters.before);
    let (rows, senders) = state
        .store
        .read(move |c| {
            let filter = AttemptFilter {
                status,
                account_id: account.as_deref(),
                created_since: since,
                created_until: until,
                before_seq: before,
                ..AttemptFilter::default()
            };
            let who = readable(&principal);
            Ok((
                listing::recent_attempts(c, &who, &filter, PAGE_SIZE + 1)?,
                listing::senders(c, &who)?,
            ))
        })
        .await?;
    let more = rows.len() > PAGE_SIZE;
    let rows = &rows[..rows.len().min(PAGE_SIZE)];
    let older = more.then(|| rows.last().map(|r| r.seq)).flatten();
    let body = html! {
        h1 { "Messages" }
        p.lead { "What was sent from the numbers you can see, newest first. Statuses update by themselves." }
        form.filters method="get" action="/messages" {
            label { "Status" select name="status" {
                option value="" { "Any" }
                @for s in AttemptStatus::ALL { option value=(s.as_str()) selected[filters.status == Some(s)] { (s.as_str()) } }
            } }
            label { "From number" select name="account" {
                option value="" { "Any" }
                @for a in &senders { option value=(a.id) selected[filters.account.as_deref() == Some(a.id.as_str())] { (a.phone) } }
            } }
            label { "From" input type="date" name="from" value=[filters.from.as_deref()]; }
            label { "To" input type="date" name="to" value=[filters.to.as_deref()]; }
            button.secondary type="submit" { "Filter" }
        }
        div #messages data-live {
            @if rows.is_empty() {
                (layout::empty("No messages match."))
            } @else {
                div.tablewrap { table {
                    thead { tr { th { "Created" } th { "From" } th { "To" } th { "Type" } th { "Status" } } }
                    tbody { @for a in rows { (row(a)) } }
                } }
            }
        }
        @if let Some(seq) = older {
            p { a.button.secondary href={ "/messages?" (filters.query(Some(seq))) } { "Older messages" } }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Messages", body),
    ))
}

fn row(a: &AttemptRow) -> Markup {
    html! {
        tr data-attempt=(a.id) {
            td { a href={ "/messages/" (a.id) } { (time(a.created_at)) } }
            td { (a.from_phone) }
            td { (a.to_phone) }
            td { (a.type_name) }
            td.status { (badge(a.status.as_str())) }
        }
    }
}

pub async fn detail(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    let id = attempt_id(id).ok_or_else(PageError::not_found)?;
    let (attempt, times) = state
        .store
        .read(move |c| {
            let attempt = attempts::get_attempt(c, &id)?;
            Ok((attempt, attempts::step_times(c, &id)?))
        })
        .await?;
    let attempt = attempt
        .filter(|a| visible(&who.principal(), a))
        .ok_or_else(PageError::not_found)?;
    let body = html! {
        p { a href="/messages" { "← Messages" } }
        h1 { "To " (attempt.to_phone) }
        section.card {
            div #attempt data-live {
                (timeline(&attempt, times))
                dl.facts {
                    dt { "Send attempt" } dd { code { (attempt.id) } }
                    dt { "From" } dd { (attempt.from_phone) " (" (attempt.mode.as_str()) " sender)" }
                    dt { "Type" } dd { (attempt.type_name) }
                    dt { "Message id" } dd { code { (attempt.message_id.clone().unwrap_or_else(|| "not yet".into())) } }
                    dt { "Last change" } dd { (time(attempt.updated_at)) }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Message", body),
    ))
}

/// The steps an attempt goes through, each marked done once reached, with
/// the time it was first reached where whatan saw it (a receipt can skip
/// `delivered`).
fn timeline(a: &AttemptRow, times: StepTimes) -> Markup {
    let reached = |s: AttemptStatus| a.status != AttemptStatus::Failed && a.status >= s;
    let handed = a.handed_off_at.is_some();
    let steps: [(&str, bool, Option<i64>); 4] = [
        ("Queued", true, Some(a.created_at)),
        (
            "Handed to WhatsApp and accepted",
            reached(AttemptStatus::Accepted),
            times.accepted_at.or(a.handed_off_at),
        ),
        (
            "Delivered to the phone",
            reached(AttemptStatus::Delivered),
            times.delivered_at,
        ),
        ("Read", reached(AttemptStatus::Read), times.read_at),
    ];
    html! {
        p { "Status: " (badge(a.status.as_str())) }
        ol.timeline {
            @for (label, done, at) in steps {
                li class=(if done { "done" } else { "" }) {
                    (label)
                    @if let (true, Some(at)) = (done, at) { " · " (time(at)) }
                }
            }
            @if a.status == AttemptStatus::Failed {
                li.bad {
                    strong { "Failed" } " · " (time(a.updated_at))
                    @if handed { " (after the hand-off)" }
                    br;
                    code { (a.error_code.clone().unwrap_or_default()) } " "
                    (a.error_message.clone().unwrap_or_default())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_come_from_the_query_and_go_back_into_page_links() {
        let f = Filters::parse(Some(
            "status=read&account=acc_1&from=2026-12-01&to=&before=42",
        ))
        .unwrap();
        assert_eq!(f.status, Some(AttemptStatus::Read));
        assert_eq!(f.account.as_deref(), Some("acc_1"));
        assert_eq!(f.from.as_deref(), Some("2026-12-01"));
        assert_eq!(f.to, None);
        assert_eq!(
            f.query(Some(7)),
            "status=read&account=acc_1&from=2026-12-01&before=7"
        );
        assert!(Filters::parse(Some("status=lost")).is_err());
        assert!(Filters::parse(Some("from=yesterday")).is_err());
        assert!(Filters::parse(Some("before=x")).is_err());
    }
}
