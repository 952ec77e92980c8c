//! The Graph API client and the media upload body: the HTTP side of the
//! Cloud driver.
//!
//! It only reports how an exchange ended ([`Exchange`]: answered, certainly
//! not sent, or unknown). What an answer means is decided by `errors` and by
//! the driver, which alone knows whether trying again could send a message
//! twice.

use std::time::Duration;

use super::MAX_RETRY_AFTER;
use crate::config::{format_duration, CloudConfig};

/// Graph API answers are small JSON documents; anything bigger is cut off.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How one HTTP exchange with the Graph API ended.
pub(super) enum Exchange {
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    /// No connection was made: the request certainly did not reach Meta.
    NotSent(String),
    /// The request may have reached Meta, but no answer came back.
    Unknown(String),
}

/// The HTTP side: one client, built once, no system proxy, no redirects
/// (a redirected POST could be replayed), every call bounded by
/// `cloud.request_timeout`.
pub(super) struct Graph {
    pub(super) http: reqwest::Client,
    pub(super) base_url: String,
    version: String,
    timeout: Duration,
}

impl Graph {
    pub(super) fn new(config: &CloudConfig) -> Result<Graph, String> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            // Shorter than the whole-call limit, so a slow connect is reported
            // as a connect failure (nothing sent, safe to retry).
            .connect_timeout((config.request_timeout / 2).min(Duration::from_secs(10)))
            // Reusing a connection the server is closing can fail a POST after
            // it was written, which whatan must then report as "outcome
            // unknown"; idle connections are dropped early to make that rare.
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("whatan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the Graph API client: {}", error_chain(&e)))?;
        Ok(Graph {
            http,
            base_url: config.graph_base_url.trim_end_matches('/').to_string(),
            version: config.graph_version.clone(),
            timeout: config.request_timeout,
        })
    }

    pub(super) fn url(&self, phone_number_id: &str, edge: &str) -> String {
        let mut url = format!("{}/{}/{phone_number_id}", self.base_url, self.version);
        if !edge.is_empty() {
            url.push('/');
            url.push_str(edge);
        }
        url
    }

    pub(super) async fn exchange(&self, request: reqwest::RequestBuilder) -> Exchange {
        let response = match request.send().await {
            Ok(response) => response,
            // Connecting (DNS, TCP, TLS) failed or timed out: nothing was written.
            Err(e) if e.is_connect() => return Exchange::NotSent(error_chain(&e)),
            Err(e) if e.is_timeout() => {
                return Exchange::Unknown(format!(
                    "no answer within {}",
                    format_duration(self.timeout)
                ))
            }
            Err(e) => return Exchange::Unknown(error_chain(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err(e) => {
                // The status line arrived, so Meta did answer; only the body
                // is lost. Callers decide from the status alone.
                tracing::warn!(status, error = %e, "could not read a Graph API answer body");
                Vec::new()
            }
        };
        Exchange::Answered {
            status,
            retry_after,
            body,
        }
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// A `multipart/form-data` body with Meta's three upload fields:
/// `messaging_product`, `type` (the MIME type) and `file`. Built by hand
/// because it is three parts; reqwest's `multipart` feature would add a
/// dependency for this alone. The boundary is random (122 bits), so it
/// cannot occur in the file by accident.
pub(super) fn multipart_body(
    boundary: &str,
    bytes: &[u8],
    mimetype: &str,
    file_name: Option<&str>,
) -> Vec<u8> {
    let mimetype = header_safe_mimetype(mimetype);
    let file_name = file_name
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(200)
                .collect::<String>()
        })
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "upload".into());
    let mut body = Vec::with_capacity(bytes.len() + 512);
    for (name, value) in [
        ("messaging_product", "whatsapp"),
        ("type", mimetype.as_str()),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {mimetype}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The MIME type without parameters, if it is a plain `type/subtype` token;
/// `application/octet-stream` otherwise (it goes into part headers).
fn header_safe_mimetype(mimetype: &str) -> String {
    let essence = mimetype.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => essence.to_ascii_lowercase(),
        _ => "application/octet-stream".into(),
    }
}

/// An error and its sources on one line (reqwest's `Display` stops at the
/// top level: "error sending request for url (...)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_body_has_the_three_fields() {
        let body = multipart_body("B", b"\x89PNG", "image/png; x=y", Some("a\"b\r\n.pdf"));
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n"
        ));
        assert!(text.contains("name=\"type\"\r\n\r\nimage/png\r\n"));
        assert!(text
            .contains("name=\"file\"; filename=\"a_b__.pdf\"\r\nContent-Type: image/png\r\n\r\n"));
        assert!(text.ends_with("\r\n--B--\r\n"));
        assert_eq!(
            header_safe_mimetype("text/html\r\nX: y"),
            "application/octet-stream"
        );
    }
}
