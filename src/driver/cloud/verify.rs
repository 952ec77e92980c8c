//! `whatan account connect` for a Cloud API account: one read of the
//! phone number from the Graph API, to tell the operator before any message
//! is queued whether the token works and the id is this account's number.
//!
//! It runs from the CLI, so its errors are sentences for a person at a
//! terminal, and it shares the client settings of the driver.

use serde::Deserialize;

use super::errors::{truncate, GraphError};
use super::graph::{Exchange, Graph};
use super::CloudSettings;
use crate::config::CloudConfig;
use crate::store::admin::Account;

/// `account connect` for a cloud account: ask the phone number endpoint
/// (`GET /{version}/{phone-number-id}`) with the stored token whether the
/// credentials work and the number is this account's. `Ok` carries a
/// one-line description of the number; `Err` says exactly what is wrong.
pub async fn verify_credentials(config: &CloudConfig, account: &Account) -> Result<String, String> {
    let settings = CloudSettings::from_json(&account.settings)?;
    let graph = Graph::new(config)?;
    let url = format!(
        "{}?fields=display_phone_number,verified_name,quality_rating",
        graph.url(&settings.phone_number_id, "")
    );
    let request = graph.http.get(url).bearer_auth(&settings.access_token);
    let (status, body) = match graph.exchange(request).await {
        Exchange::Answered { status, body, .. } => (status, body),
        Exchange::NotSent(e) => {
            return Err(format!(
                "cannot reach the Graph API at {}: {e}",
                graph.base_url
            ))
        }
        Exchange::Unknown(e) => {
            return Err(format!(
                "the Graph API at {} did not answer: {e}",
                graph.base_url
            ))
        }
    };
    let id = &settings.phone_number_id;
    if !(200..300).contains(&status) {
        let Some(error) = GraphError::parse(&body).filter(|e| e.code.is_some()) else {
            let snippet = truncate(String::from_utf8_lossy(&body).trim().to_string(), 200);
            return Err(format!(
                "the Graph API answered HTTP {status} for phone number id {id}: {snippet}"
            ));
        };
        let label = if error.kind.is_empty() {
            "Meta error"
        } else {
            error.kind.as_str()
        };
        let described = error.describe_as(label);
        return Err(match error.code {
            Some(190 | 102) => format!("the Cloud API refused the access token ({described})"),
            Some(10 | 200..=299) => format!(
                "the access token may not use phone number id {id}: give its system user the \
                 whatsapp_business_messaging and whatsapp_business_management permissions \
                 ({described})"
            ),
            Some(33 | 100 | 803) => format!(
                "phone number id {id} does not exist or this access token cannot see it \
                 ({described})"
            ),
            _ => format!("the Graph API refused the check of phone number id {id} ({described})"),
        });
    }
    #[derive(Deserialize)]
    struct PhoneNumber {
        display_phone_number: Option<String>,
        verified_name: Option<String>,
        quality_rating: Option<String>,
    }
    let number: PhoneNumber = serde_json::from_slice(&body).map_err(|_| {
        format!("the Graph API's answer for phone number id {id} is not the phone number object")
    })?;
    let Some(display) = number.display_phone_number.filter(|d| !d.trim().is_empty()) else {
        return Err(format!(
            "id {id} is not a WhatsApp phone number id (the Graph API returned no \
             display_phone_number); use the id from WhatsApp Manager > API Setup"
        ));
    };
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let name = number.verified_name.unwrap_or_default();
    if digits(&display) != digits(&account.phone) {
        return Err(format!(
            "phone number id {id} belongs to {display}{}, not to this account's {}",
            if name.is_empty() {
                String::new()
            } else {
                format!(" ({name})")
            },
            account.phone
        ));
    }
    let mut summary = format!("Cloud API number {display}");
    if !name.is_empty() {
        summary.push_str(&format!(" ({name})"));
    }
    if let Some(rating) = number.quality_rating.filter(|r| !r.is_empty()) {
        summary.push_str(&format!(", quality {rating}"));
    }
    Ok(summary)
}

/// [`verify_credentials`] for the synchronous CLI, on a small
/// current-thread runtime of its own.
pub fn verify_credentials_blocking(
    config: &CloudConfig,
    account: &Account,
) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the Graph API check: {e}"))?;
    runtime.block_on(verify_credentials(config, account))
}
