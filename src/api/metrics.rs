//! `GET /metrics`: the Prometheus scrape, for a bearer token of kind
//! `metrics`. The gauges are read from the database here, one indexed
//! lookup per account (see `store::gauges`).

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::{auth, ApiError, AppState, Body};
use crate::store::{gauges, StoreError};

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    auth::authenticate_metrics(state, req.headers()).await?;
    let now = state.clock.now_ms();
    let accounts = state
        .store
        .read(move |c| gauges::account_gauges(c, now))
        .await?;
    let leases = state.engine.lease_gauges();
    let text = crate::metrics::render(&accounts, leases.as_ref(), now)
        .map_err(|e| ApiError::from(StoreError::Internal(format!("metrics: {e}"))))?;
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}
