//! `GET /api/v1/messages`: the attempts a token may read (the status
//! endpoint's read rules, [`status::readable`]), newest first, a page at a
//! time. Filters and the cursor narrow the store's two index walks
//! (`store::listing::recent_attempts`), so a page costs the same however
//! many attempts there are.
//!
//! The query string is parsed strictly: an unknown or repeated parameter,
//! or a value that does not parse, is `invalid_request` naming the
//! parameter, reported after authentication like every 4xx.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use url::form_urlencoded;

use super::status;
use super::{auth, json_response, ApiError, AppState, Body};
use crate::clock::parse_rfc3339_ms;
use crate::domain::{AttemptStatus, Phone};
use crate::store::attempts::StatusBody;
use crate::store::listing::{self, AttemptFilter};

/// `limit` when none is given, and the most a page may hold.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// Longest `accountId` accepted (ours are `acc_` and 24 hex digits).
const MAX_ACCOUNT_ID_CHARS: usize = 64;

/// Every query parameter the route knows.
const PARAMETERS: [&str; 7] = [
    "status",
    "accountId",
    "from",
    "since",
    "until",
    "limit",
    "cursor",
];

/// The response: status bodies exactly as `GET /api/v1/messages/{id}`
/// answers them, and the cursor of the next page.
#[derive(Serialize)]
struct Page<'a> {
    data: Vec<StatusBody<'a>>,
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = ListQuery::parse(req.uri().query().unwrap_or(""));
    // One trip to a reader thread: the token, then (for a good query) the
    // page. A bad query is reported only once the token is known good.
    let wanted = query.as_ref().ok().cloned();
    let (_, rows) = auth::authenticate_with(state, req.headers(), move |c, principal| {
        let Some(q) = wanted else {
            return Ok(Vec::new());
        };
        let filter = AttemptFilter {
            status: q.status,
            account_id: q.account_id.as_deref(),
            from_phone: q.from.as_ref().map(Phone::e164),
            created_since: q.since,
            created_until: q.until,
            before_seq: q.before_seq,
        };
        // One more than the page holds says whether there is a next page.
        listing::recent_attempts(c, &status::readable(principal), &filter, q.limit + 1)
    })
    .await?;
    let query = query?;
    let more = rows.len() > query.limit;
    let shown = &rows[..rows.len().min(query.limit)];
    let page = Page {
        data: shown.iter().map(|a| a.status_body()).collect(),
        next_cursor: more
            .then(|| shown.last().map(|a| cursor::encode(a.seq)))
            .flatten(),
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&page).unwrap_or_default(),
    ))
}

/// A parsed, valid query string.
#[derive(Debug, Clone, PartialEq)]
struct ListQuery {
    status: Option<AttemptStatus>,
    account_id: Option<String>,
    from: Option<Phone>,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
    before_seq: Option<i64>,
}

impl ListQuery {
    /// Parse `raw` (the URL's query, without `?`), form-encoded: `%2B` is
    /// `+` and `+` is a space, except that a `from` that starts with an
    /// unencoded `+` means that `+` (`from=+917000000001` as typed in a
    /// shell), since a number never starts with a space.
    fn parse(raw: &str) -> Result<ListQuery, ApiError> {
        let mut query = ListQuery {
            status: None,
            account_id: None,
            from: None,
            since: None,
            until: None,
            limit: DEFAULT_LIMIT,
            before_seq: None,
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, mut value) = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .unwrap_or_default();
            let Some(&parameter) = PARAMETERS.iter().find(|p| **p == name) else {
                return Err(ApiError::invalid_field(
                    &name,
                    format!(
                        "unknown query parameter {name:?}; this route takes {}",
                        PARAMETERS.join(", ")
                    ),
                ));
            };
            if seen.contains(&parameter) {
                return Err(ApiError::invalid_field(
                    parameter,
                    format!("{parameter} may be given only once"),
                ));
            }
            seen.push(parameter);
            let bad = |why: &str| ApiError::invalid_field(parameter, format!("{parameter} {why}"));
            match parameter {
                "status" => {
                    query.status = Some(status::status_filter(&value)?);
                }
                "accountId" => {
                    let well_formed = (1..=MAX_ACCOUNT_ID_CHARS).contains(&value.len())
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !well_formed {
                        return Err(bad("must be an account id such as acc_3f9a0c..."));
                    }
                    query.account_id = Some(value);
                }
                "from" => {
                    let raw_value = pair.split_once('=').map_or("", |(_, v)| v);
                    if raw_value.starts_with('+') {
                        value.replace_range(..1, "+");
                    }
                    let phone = Phone::parse(&value)
                        .map_err(|e| ApiError::invalid_field(parameter, format!("from: {e}")))?;
                    query.from = Some(phone);
                }
                "since" | "until" => {
                    let at = parse_rfc3339_ms(&value).ok_or_else(|| {
                        bad("must be an RFC 3339 date-time such as 2026-05-14T10:00:00Z")
                    })?;
                    if parameter == "since" {
                        query.since = Some(at);
                    } else {
                        query.until = Some(at);
                    }
                }
                "limit" => {
                    query.limit = value
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| value.parse::<usize>().ok())
                        .flatten()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(&format!("must be an integer from 1 to {MAX_LIMIT}")))?;
                }
                "cursor" => {
                    query.before_seq = Some(cursor::decode(&value).ok_or_else(|| {
                        bad("is not a cursor this server gave out (use nextCursor as it is)")
                    })?);
                }
                _ => unreachable!("every name in PARAMETERS is handled"),
            }
        }
        Ok(query)
    }
}

/// The page cursor: the queue position (`seq`) of the last attempt shown;
/// the next page starts below it. Opaque to clients, so its form may
/// change; `c_` keeps it from looking like a number to be computed with.
mod cursor {
    const PREFIX: &str = "c_";

    pub fn encode(seq: i64) -> String {
        format!("{PREFIX}{seq}")
    }

    pub fn decode(s: &str) -> Option<i64> {
        let digits = s.strip_prefix(PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok().filter(|seq| *seq > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(raw: &str) -> Option<String> {
        ListQuery::parse(raw).err().and_then(|e| e.field)
    }

    #[test]
    fn a_query_parses_every_filter() {
        let q = ListQuery::parse(
            "status=queued&accountId=acc_1f&from=%2B91+7000-000001&since=2026-05-14T10:00:00Z\
             &until=2026-05-14T11:00:00.5%2B01:00&limit=200&cursor=c_42",
        )
        .unwrap();
        assert_eq!(q.status, Some(AttemptStatus::Queued));
        assert_eq!(q.account_id.as_deref(), Some("acc_1f"));
        assert_eq!(q.from.as_ref().map(Phone::e164), Some("+917000000001"));
        assert_eq!(q.since, Some(1_778_752_800_000));
        assert_eq!(q.until, Some(1_778_752_800_500));
        assert_eq!((q.limit, q.before_seq), (200, Some(42)));
        assert_eq!(ListQuery::parse("").unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(ListQuery::parse("&&").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn an_unencoded_leading_plus_in_from_is_the_plus_it_was_typed_as() {
        let q = ListQuery::parse("from=+917000000001").unwrap();
        assert_eq!(q.from.as_ref().map(Phone::e164), Some("+917000000001"));
        // Encoded as a space, it is a space, and no number starts with one.
        assert_eq!(field_of("from=%20917000000001").as_deref(), Some("from"));
    }

    #[test]
    fn a_bad_unknown_or_repeated_parameter_names_itself() {
        for (raw, field) in [
            ("status=sent", "status"),
            ("status=", "status"),
            ("status", "status"),
            ("status=Queued", "status"),
            ("accountId=", "accountId"),
            ("accountId=acc%201", "accountId"),
            ("from=%2B1", "from"),
            ("from=917000000001", "from"),
            ("since=yesterday", "since"),
            ("until=2026-05-14", "until"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=%2B5", "limit"),
            ("limit=-1", "limit"),
            ("limit=99999999999999999999999", "limit"),
            ("cursor=42", "cursor"),
            ("cursor=c_", "cursor"),
            ("cursor=c_-4", "cursor"),
            ("cursor=c_0", "cursor"),
            ("cursor=c_99999999999999999999", "cursor"),
            ("limit=5&limit=5", "limit"),
            ("status=queued&status=failed", "status"),
            ("page=2", "page"),
            ("Limit=5", "Limit"),
        ] {
            assert_eq!(field_of(raw).as_deref(), Some(field), "{raw}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        for seq in [1, 42, i64::MAX] {
            assert_eq!(cursor::decode(&cursor::encode(seq)), Some(seq));
        }
    }
}
