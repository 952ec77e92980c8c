//! Bearer-token authentication. Every request reads the token row (no
//! cache), so a token revoked by the CLI fails on the very next request.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::domain::token::{self, TokenKind};
use crate::store::admin::{self, Principal};

pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
    let principal = state
        .store
        .read(move |c| admin::principal_by_hash(c, &hash))
        .await?
        .filter(|p| token::hashes_equal(&p.secret_hash, &hash))
        .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
    if principal.revoked {
        return Err(ApiError::unauthorized("this token has been revoked"));
    }
    if principal.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(ApiError::unauthorized("this token has expired"));
    }
    if principal.kind != TokenKind::Send {
        return Err(ApiError::unauthorized("this is not a Send API token"));
    }
    Ok(principal)
}
