//! `/api/v1/webhooks...`: a workspace's webhook endpoints, for owner and
//! admin Send API tokens (members: 403 `forbidden`; another workspace's
//! endpoint or delivery: 404). The rules are `webhooks::manage`'s, shared
//! with the CLI.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{auth, json_response, read_body, ApiError, AppState, Body};
use crate::domain::ErrorCode;
use crate::store::admin::Principal;
use crate::store::webhooks as events;
use crate::webhooks::manage::{self, ManageError};

/// Which webhook route a path is (after `/api/v1/webhooks`).
pub enum WebhookRoute<'a> {
    Collection,
    Endpoint(&'a str),
    Rotate(&'a str),
    Deliveries(&'a str),
    Redeliver(&'a str),
}

pub const PREFIX: &str = "/api/v1/webhooks";

impl<'a> WebhookRoute<'a> {
    pub fn parse(path: &'a str) -> Option<WebhookRoute<'a>> {
        let rest = path.strip_prefix(PREFIX)?;
        if rest.is_empty() {
            return Some(WebhookRoute::Collection);
        }
        let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
        match parts.as_slice() {
            ["deliveries", id, "redeliver"] if !id.is_empty() => Some(WebhookRoute::Redeliver(id)),
            [id] if !id.is_empty() => Some(WebhookRoute::Endpoint(id)),
            [id, "rotate-secret"] if !id.is_empty() => Some(WebhookRoute::Rotate(id)),
            [id, "deliveries"] if !id.is_empty() => Some(WebhookRoute::Deliveries(id)),
            _ => None,
        }
    }

    pub fn template(&self) -> &'static str {
        match self {
            WebhookRoute::Collection => "/api/v1/webhooks",
            WebhookRoute::Endpoint(_) => "/api/v1/webhooks/{id}",
            WebhookRoute::Rotate(_) => "/api/v1/webhooks/{id}/rotate-secret",
            WebhookRoute::Deliveries(_) => "/api/v1/webhooks/{id}/deliveries",
            WebhookRoute::Redeliver(_) => "/api/v1/webhooks/deliveries/{id}/redeliver",
        }
    }

    /// The methods the route allows (its 405's `Allow`).
    pub fn allow(&self) -> &'static str {
        match self {
            WebhookRoute::Collection => "GET, POST",
            WebhookRoute::Endpoint(_) => "DELETE",
            WebhookRoute::Rotate(_) | WebhookRoute::Redeliver(_) => "POST",
            WebhookRoute::Deliveries(_) => "GET",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(field, message) => ApiError::invalid_field(field, message),
            ManageError::NotFound => ApiError::not_found(),
            ManageError::Store(e) => e.into(),
        }
    }
}

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    route: WebhookRoute<'_>,
) -> Result<Response<Body>, ApiError> {
    if !route.allows(req.method()) {
        return Err(super::method_not_allowed(route.allow()));
    }
    let principal = auth::authenticate(state, req.headers()).await?;
    if !principal.role.may_choose_sender() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only workspace owners and admins manage webhooks",
        ));
    }
    let now = state.clock.now_ms();
    match route {
        WebhookRoute::Collection if req.method() == Method::GET => {
            let ws = principal.workspace_id.clone();
            let all = state
                .store
                .read(move |c| events::list_endpoints(c, Some(&ws)))
                .await?;
            ok(json!(all))
        }
        WebhookRoute::Collection => {
            let body = read_body(req.into_body(), super::MAX_BODY_BYTES).await?;
            let (url, names, description) = parse_add(&body)?;
            let events = manage::parse_events(names)?;
            let (endpoint, secret) = manage::add(
                &state.store,
                &state.webhook_urls,
                &principal.workspace_id,
                &url,
                events,
                description,
                now,
            )
            .await?;
            Ok(json_response(
                StatusCode::CREATED,
                manage::added_json(&endpoint, &secret)
                    .to_string()
                    .into_bytes(),
            ))
        }
        WebhookRoute::Endpoint(id) => {
            own_endpoint(state, &principal, id).await?;
            let id = id.to_string();
            state
                .store
                .write(move |c| events::remove_endpoint(c, &id))
                .await?;
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        WebhookRoute::Rotate(id) => {
            own_endpoint(state, &principal, id).await?;
            let secret = manage::rotate(&state.store, id, now).await?;
            ok(json!({ "id": id, "secret": secret }))
        }
        WebhookRoute::Deliveries(id) => {
            own_endpoint(state, &principal, id).await?;
            let failed = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "failed=true" || p == "failed"));
            let id = id.to_string();
            let list = state
                .store
                .read(move |c| events::deliveries(c, &id, failed, events::RECENT_DELIVERIES))
                .await?;
            ok(json!(list))
        }
        WebhookRoute::Redeliver(id) => {
            let (id, ws) = (id.to_string(), principal.workspace_id.clone());
            let delivery = state
                .store
                .write(move |c| events::redeliver(c, &id, Some(&ws), now))
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(json_response(
                StatusCode::ACCEPTED,
                json!(delivery).to_string().into_bytes(),
            ))
        }
    }
}

fn ok(value: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        value.to_string().into_bytes(),
    ))
}

/// 404 unless the endpoint exists in the caller's workspace.
async fn own_endpoint(state: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    let id = id.to_string();
    let endpoint = state
        .store
        .read(move |c| events::get_endpoint(c, &id))
        .await?;
    match endpoint {
        Some(e) if e.workspace_id == principal.workspace_id => Ok(()),
        _ => Err(ApiError::not_found()),
    }
}

/// `{"url", "events"?, "description"?}`.
#[allow(clippy::type_complexity)]
fn parse_add(body: &[u8]) -> Result<(String, Option<Vec<String>>, Option<String>), ApiError> {
    let field = ApiError::invalid_field;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("request body must be a JSON object"));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !["url", "events", "description"].contains(&k.as_str()))
    {
        return Err(field(unknown, format!("unknown field {unknown:?}")));
    }
    let url = match obj.get("url") {
        Some(Value::String(u)) => u.clone(),
        None | Some(Value::Null) => return Err(field("url", "url is required".into())),
        Some(_) => return Err(field("url", "url must be a string".into())),
    };
    let events = match obj.get("events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| field("events", "events must be an array of strings".into()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(field("events", "events must be an array of strings".into())),
    };
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(field("description", "description must be a string".into())),
    };
    Ok((url, events, description))
}
