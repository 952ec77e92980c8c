//! Webhook endpoints are user URLs too: the same syntax, resolution and
//! pinning rules as media, for a POST instead of a GET, and no redirect is
//! ever followed (a 3xx is an answer like any other, and not a success).
//! Plain `http` is accepted only when every address of the host is inside
//! the operator's allow-list (the guard's allowed networks).

use std::time::Duration;

use url::{Host, Url};

use super::{err, error_chain, MediaError, MediaGuard, ValidatedUrl};

const USER_AGENT: &str = concat!("whatan/", env!("CARGO_PKG_VERSION"), " (webhooks)");

/// A media error reworded for a webhook URL.
fn reword(e: MediaError) -> MediaError {
    MediaError(
        e.0.replace("media URL", "webhook URL")
            .replace("media server", "webhook endpoint"),
    )
}

impl MediaGuard {
    /// Validate a webhook endpoint URL: the media rules, except that `http`
    /// is accepted for addresses inside the allowed networks only.
    pub async fn validate_webhook(&self, raw: &str) -> Result<ValidatedUrl, MediaError> {
        let plain = raw
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if !plain {
            return self.validate(raw).await.map_err(reword);
        }
        // Checked as the https URL of the same host and path; then the
        // scheme and default port are put back.
        let checked = self
            .validate(&format!("https://{}", &raw[7..]))
            .await
            .map_err(reword)?;
        let allow = &self.inner.config.unsafe_allow_networks_for_testing;
        if let Some(outside) = checked
            .addrs
            .iter()
            .find(|a| !allow.iter().any(|net| net.contains(&a.ip())))
        {
            return Err(err(format!(
                "webhook URL must use https; plain http is accepted only for addresses in \
                 webhooks.allow_networks, and {} is not",
                outside.ip()
            )));
        }
        let url = Url::parse(raw).map_err(|e| err(format!("webhook URL is not valid ({e})")))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = checked
            .addrs
            .into_iter()
            .map(|mut a| {
                a.set_port(port);
                a
            })
            .collect();
        Ok(ValidatedUrl { url, addrs })
    }

    /// Validate `raw` now and build a client that can connect only to the
    /// addresses it resolved to, follows no redirect, and gives each POST
    /// `timeout` for the whole exchange. One per endpoint per dispatch pass:
    /// its tries share the resolution and the TLS setup.
    pub async fn pin_webhook(
        &self,
        raw: &str,
        timeout: Duration,
    ) -> Result<PinnedPost, MediaError> {
        let target = self.validate_webhook(raw).await?;
        let mut builder = self
            .client_builder()
            .https_only(target.url.scheme() == "https")
            .user_agent(USER_AGENT)
            .timeout(timeout);
        if let Some(Host::Domain(domain)) = target.url.host() {
            builder = builder.resolve_to_addrs(domain, &target.addrs);
        }
        let client = builder.build().map_err(|e| {
            err(format!(
                "cannot set up the webhook client: {}",
                error_chain(&e)
            ))
        })?;
        Ok(PinnedPost {
            client,
            url: target.url,
            timeout,
        })
    }
}

/// A webhook endpoint's URL, validated and pinned ([`MediaGuard::pin_webhook`]).
pub struct PinnedPost {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
}

impl PinnedPost {
    /// One JSON POST; the answer's status code, or why there was none.
    pub async fn post(
        &self,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<u16, MediaError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                err(format!("no answer within {:?}", self.timeout))
            } else {
                err(error_chain(&e))
            }
        })?;
        Ok(response.status().as_u16())
    }
}
