//! Every error code of the public API in one enum: its wire name and the
//! HTTP status it answers with. The contract's error table (and the codes the
//! later specs add) is checked against it by a test, so a code cannot drift
//! from its status in one handler.

use std::fmt;

/// A code of the contract's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    InvalidPhoneNumber,
    InvalidMediaUrl,
    SenderSelectionForbidden,
    SenderNotAllowed,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    IdempotencyConflict,
    WhatsappNotConnected,
    NotCancellable,
    RateLimited,
    InternalError,
    ServiceUnavailable,
    /// Reported on a failed attempt, never as an HTTP answer.
    RecipientNotFound,
    /// Reported on a failed attempt, never as an HTTP answer.
    SendFailed,
    /// Reported on an attempt its sender cancelled before the hand-off
    /// (`POST /api/v1/messages/{id}/cancel`), never as an HTTP answer.
    Cancelled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidPhoneNumber,
        ErrorCode::InvalidMediaUrl,
        ErrorCode::SenderSelectionForbidden,
        ErrorCode::SenderNotAllowed,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::IdempotencyConflict,
        ErrorCode::WhatsappNotConnected,
        ErrorCode::NotCancellable,
        ErrorCode::RateLimited,
        ErrorCode::InternalError,
        ErrorCode::ServiceUnavailable,
        ErrorCode::RecipientNotFound,
        ErrorCode::SendFailed,
        ErrorCode::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidPhoneNumber => "invalid_phone_number",
            ErrorCode::InvalidMediaUrl => "invalid_media_url",
            ErrorCode::SenderSelectionForbidden => "sender_selection_forbidden",
            ErrorCode::SenderNotAllowed => "sender_not_allowed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::WhatsappNotConnected => "whatsapp_not_connected",
            ErrorCode::NotCancellable => "not_cancellable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::RecipientNotFound => "recipient_not_found",
            ErrorCode::SendFailed => "send_failed",
            ErrorCode::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status of an answer with this code; `None` for the codes
    /// that only appear on a failed attempt. `invalid_request` is 400 here;
    /// a too-large body (413) or a body that does not arrive (408) say so
    /// where they are raised.
    pub const fn http_status(self) -> Option<u16> {
        Some(match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidPhoneNumber
            | ErrorCode::InvalidMediaUrl => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::SenderSelectionForbidden
            | ErrorCode::SenderNotAllowed
            | ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::IdempotencyConflict
            | ErrorCode::WhatsappNotConnected
            | ErrorCode::NotCancellable => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::RecipientNotFound | ErrorCode::SendFailed | ErrorCode::Cancelled => {
                return None
            }
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `| \`code\` ... | status |` of the error tables in the specs.
    fn spec_rows(spec: &str) -> Vec<(String, String)> {
        spec.lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                // ["", "`code` (added)", "409", "when", ""]
                let first = cells.get(1)?;
                let code = first.strip_prefix('`')?.split('`').next()?;
                let status = cells.get(2)?;
                let looks_like_status =
                    status.starts_with(|c: char| c.is_ascii_digit()) || status.starts_with("async");
                (looks_like_status && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                    .then(|| (code.to_string(), status.to_string()))
            })
            .collect()
    }

    const SPECS: [&str; 4] = ["contract.md", "operations.md", "webhooks.md", "mcp.md"];

    /// `(spec, code, status)` from the copy in `testdata/`.
    fn copied_rows() -> Vec<(String, String, String)> {
        include_str!("testdata/spec_error_codes.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let cells: Vec<&str> = l.split('\t').collect();
                (cells[0].into(), cells[1].into(), cells[2].into())
            })
            .collect()
    }

    #[test]
    fn every_row_of_the_specs_error_tables_matches_the_enum() {
        let rows = copied_rows();
        assert!(
            rows.len() >= 15,
            "the copied error tables have {} rows",
            rows.len()
        );
        for (spec, code, status) in rows {
            let parsed = ErrorCode::parse(&code)
                .unwrap_or_else(|| panic!("{spec}: code {code} is missing from ErrorCode"));
            match parsed.http_status() {
                Some(http) => assert!(
                    status.starts_with(&http.to_string()),
                    "{spec}: {code} is {status} in the spec but {http} in ErrorCode"
                ),
                None => assert!(
                    status.starts_with("async"),
                    "{spec}: {code} is {status} in the spec but attempt-only in ErrorCode"
                ),
            }
        }
    }

    /// Where the specs sit beside the repository (`../shared/spec`), the
    /// copy must be theirs; a clone elsewhere checks the copy only.
    #[test]
    fn the_copied_tables_are_the_specs_own() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec");
        if !dir.is_dir() {
            eprintln!(
                "note: {} is not here; the enum was checked against the copy only",
                dir.display()
            );
            return;
        }
        let mut live = Vec::new();
        for spec in SPECS {
            let text = std::fs::read_to_string(dir.join(spec))
                .unwrap_or_else(|e| panic!("{spec} must be readable: {e}"));
            live.extend(
                spec_rows(&text)
                    .into_iter()
                    .map(|(code, status)| (spec.to_string(), code, status)),
            );
        }
        assert_eq!(
            live,
            copied_rows(),
            "src/domain/testdata/spec_error_codes.tsv is out of date with the specs"
        );
    }

    #[test]
    fn names_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
