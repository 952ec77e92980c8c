//! Managing endpoints, for both surfaces: the CLI (`webhook ...`) and the
//! API (`/api/v1/webhooks...`) call these, so the rules (event names, URL
//! checks, secrets shown once, the 24-hour overlap after a rotation) live
//! once.

use std::time::Duration;

use serde_json::{json, Value};

use super::sign::new_secret;
use crate::media::MediaGuard;
use crate::store::webhooks::{self as events, Endpoint, EVENT_TYPES};
use crate::store::{Store, StoreError};

/// After `rotate-secret`, deliveries carry the old key's signature too for
/// this long, so a consumer can switch without losing one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Why a management request was refused.
#[derive(Debug)]
pub enum ManageError {
    /// `field` and what is wrong with it.
    Invalid(&'static str, String),
    NotFound,
    Store(StoreError),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        ManageError::Store(e)
    }
}

/// The subscription: every event type when none is named; each name must
/// be one of [`EVENT_TYPES`]; repeats are dropped.
pub fn parse_events(names: Option<Vec<String>>) -> Result<Vec<String>, ManageError> {
    let Some(names) = names else {
        return Ok(EVENT_TYPES.iter().map(|s| s.to_string()).collect());
    };
    if names.is_empty() {
        return Err(ManageError::Invalid(
            "events",
            "events must name at least one event type (omit it for all)".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim().to_string();
        if !EVENT_TYPES.contains(&name.as_str()) {
            return Err(ManageError::Invalid(
                "events",
                format!(
                    "unknown event {name:?}; events are {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Longest description kept.
const MAX_DESCRIPTION: usize = 500;

/// Add an endpoint (or enable the disabled one of the same URL): the URL
/// passes the media rules now and again at every delivery. Returns the
/// endpoint and its secret, which is shown this once.
pub async fn add(
    store: &Store,
    urls: &MediaGuard,
    workspace: &str,
    url: &str,
    events: Vec<String>,
    description: Option<String>,
    now: i64,
) -> Result<(Endpoint, String), ManageError> {
    urls.validate_webhook(url)
        .await
        .map_err(|e| ManageError::Invalid("url", e.to_string()))?;
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ManageError::Invalid(
            "description",
            format!("description is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    if description.as_ref().is_some_and(|d| {
        d.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    }) {
        return Err(ManageError::Invalid(
            "description",
            "description must not contain control characters (other than line breaks and tabs)"
                .into(),
        ));
    }
    let (secret, key) = new_secret();
    let (workspace, url) = (workspace.to_string(), url.to_string());
    let endpoint = store
        .write(move |c| {
            if crate::store::admin::list_workspaces(c)?
                .iter()
                .all(|w| w.id != workspace)
            {
                return Err(StoreError::NotFound(format!(
                    "unknown workspace {workspace}"
                )));
            }
            events::add_endpoint(
                c,
                &workspace,
                &url,
                &events,
                description.as_deref(),
                &key,
                now,
            )
        })
        .await?;
    Ok((endpoint, secret))
}

/// A new secret; the old one keeps signing for [`ROTATION_OVERLAP`].
pub async fn rotate(store: &Store, id: &str, now: i64) -> Result<String, ManageError> {
    let (secret, key) = new_secret();
    let id = id.to_string();
    let until = now + ROTATION_OVERLAP.as_millis() as i64;
    let found = store
        .write(move |c| events::rotate_key(c, &id, &key, until))
        .await?;
    if !found {
        return Err(ManageError::NotFound);
    }
    Ok(secret)
}

/// What `add` shows: the endpoint with its secret.
pub fn added_json(endpoint: &Endpoint, secret: &str) -> Value {
    json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "status": endpoint.status,
        "secret": secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_default_to_all_and_unknown_names_are_refused() {
        assert_eq!(parse_events(None).unwrap().len(), 8);
        assert_eq!(
            parse_events(Some(vec!["message.read".into(), "message.read".into()])).unwrap(),
            ["message.read"]
        );
        assert!(matches!(
            parse_events(Some(vec!["message.sent".into()])),
            Err(ManageError::Invalid("events", m)) if m.contains("message.sent")
        ));
        assert!(parse_events(Some(vec![])).is_err());
    }
}
