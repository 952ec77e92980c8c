//! Bearer-token authentication. Every request reads the token row (no
//! cache), so a token revoked by the CLI fails on the very next request.
//! The secret is hashed once with SHA-256 (tokens carry 256 random bits, so
//! a slow KDF would add latency and no safety) and looked up by that hash.

use crate::store::Conn;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use super::{ApiError, AppState};
use crate::domain::token::{self, TokenKind};
use crate::domain::Role;
use crate::store::admin::{self, Principal};
use crate::store::StoreError;

pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    authenticate_with(state, headers, |_, _| Ok(()))
        .await
        .map(|(principal, ())| principal)
}

/// A valid token of kind `metrics` held by an owner (`GET /metrics`).
pub async fn authenticate_metrics(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    authenticate_kind(state, headers, TokenKind::Metrics, |_, _| Ok(()))
        .await
        .map(|(principal, ())| principal)
}

/// A valid token of kind `mcp` (`/mcp`); Send API tokens are refused there,
/// as MCP tokens are on the Send API.
pub async fn authenticate_mcp(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    authenticate_kind(state, headers, TokenKind::Mcp, |_, _| Ok(()))
        .await
        .map(|(principal, ())| principal)
}

/// Authenticate and, in the same trip to a reader thread, run `then` for a
/// valid Send API token: the handler's next read costs no second hand-off.
/// `then` never runs for an unknown, revoked, expired or non-send token.
pub async fn authenticate_with<T, F>(
    state: &AppState,
    headers: &HeaderMap,
    then: F,
) -> Result<(Principal, T), ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Conn, &Principal) -> Result<T, StoreError> + Send + 'static,
{
    authenticate_kind(state, headers, TokenKind::Send, then).await
}

/// [`authenticate_with`] for a token of kind `kind`.
async fn authenticate_kind<T, F>(
    state: &AppState,
    headers: &HeaderMap,
    kind: TokenKind,
    then: F,
) -> Result<(Principal, T), ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Conn, &Principal) -> Result<T, StoreError> + Send + 'static,
{
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthorized(
            "send an Authorization: Bearer <token> header",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let secret = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "the Authorization header must use the Bearer scheme",
            ))
        }
    };
    if !token::looks_like_token(secret) {
        return Err(ApiError::unauthorized("invalid token"));
    }
    let hash = token::hash(secret);
    let now = state.clock.now_ms();
    let authenticated = state
        .store
        .read_in_snapshot(move |c| {
            let principal = admin::principal_by_hash(c, &hash)?
                .filter(|p| token::hashes_equal(&p.secret_hash, &hash))
                .ok_or_else(|| ApiError::unauthorized("invalid token"));
            let principal = match principal.and_then(|p| check(p, kind, now)) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let extra = then(c, &principal)?;
            Ok(Ok((principal, extra)))
        })
        .await??;
    super::observe::note_token(&authenticated.0.token_id);
    Ok(authenticated)
}

/// Revocation, expiry and kind, in that order. A metrics token also needs
/// an owner (it is refused at creation otherwise; checked again here).
fn check(principal: Principal, kind: TokenKind, now: i64) -> Result<Principal, ApiError> {
    if principal.revoked {
        return Err(ApiError::unauthorized("this token has been revoked"));
    }
    if principal.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::unauthorized("this token has expired"));
    }
    if principal.kind != kind {
        return Err(ApiError::unauthorized(match kind {
            TokenKind::Metrics => "this is not a metrics token",
            TokenKind::Mcp => {
                "this is not an MCP token; create one with whatan token create --kind mcp"
            }
            TokenKind::Send => "this is not a Send API token",
        }));
    }
    if kind == TokenKind::Metrics && principal.role != Role::Owner {
        return Err(ApiError::unauthorized(
            "metrics tokens are valid only for owners",
        ));
    }
    Ok(principal)
}
