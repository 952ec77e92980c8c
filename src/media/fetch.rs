//! The fetch step: download a validated URL, connecting only to the
//! addresses it was validated against.
//!
//! Each hop gets a client of its own, pinned to that hop's addresses (TLS
//! still checks the host name), so a DNS answer that changes after
//! validation cannot move the request. Redirects are followed by hand and
//! every target goes through syntax and resolution again. One deadline
//! covers the whole fetch, and the byte cap holds whatever
//! `Content-Length` says.

use std::sync::Arc;
use std::time::Duration;

use url::{Host, Url};

use super::syntax::{check_raw_characters, has_scheme};
use super::{
    check_url_syntax, err, error_chain, FetchedMedia, MediaError, MediaGuard, MediaKind,
    ValidatedUrl, DEFAULT_DOCUMENT_MIMETYPE, IMAGE_MIMETYPES, MAX_REDIRECTS,
};

const USER_AGENT: &str = concat!("whatan/", env!("CARGO_PKG_VERSION"), " (media fetch)");

/// Where a fetch was when its deadline passed, for the error message.
#[derive(Debug, Clone, Copy)]
enum Progress {
    Resolving,
    Waiting,
    Downloading(u64),
}

impl Progress {
    fn timeout_error(self, limit: Duration) -> MediaError {
        match self {
            Progress::Resolving => err(format!(
                "media URL host could not be resolved within {limit:?}"
            )),
            Progress::Waiting => err(format!("media server did not answer within {limit:?}")),
            Progress::Downloading(received) => err(format!(
                "media download did not finish within {limit:?} ({received} bytes received)"
            )),
        }
    }
}

/// DNS for the HTTP client: refuses every name. The client only ever learns
/// addresses through `resolve_to_addrs` pins, so a name that somehow was not
/// pinned fails instead of quietly falling back to system DNS.
struct PinnedOnly;

impl reqwest::dns::Resolve for PinnedOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!(
            "{} was not validated and pinned; refusing to resolve it",
            name.as_str()
        );
        Box::pin(std::future::ready(Err(message.into())))
    }
}

impl MediaGuard {
    /// Validates a redirect `location` received while fetching `current`.
    async fn validate_redirect(
        &self,
        current: &Url,
        location: &str,
    ) -> Result<ValidatedUrl, MediaError> {
        let refused = |target: &str, why: MediaError| {
            MediaError(format!("redirect to {} refused: {why}", shorten(target)))
        };
        check_raw_characters(location).map_err(|e| refused(location, e))?;
        if location.is_empty() {
            return Err(err("media server sent a redirect with an empty Location"));
        }
        let joined = current
            .join(location)
            .map_err(|e| refused(location, err(format!("not a valid URL ({e})"))))?;
        // Check the text as the server wrote it when it names a scheme or a
        // host, so the same parser-repair rules apply as for the caller's URL;
        // a path-only Location keeps the already checked host and is checked
        // in its joined, canonical form.
        let text = if has_scheme(location) {
            location.to_owned()
        } else if location.starts_with("//") {
            format!("{}:{location}", current.scheme())
        } else {
            joined.to_string()
        };
        let allow = &self.inner.config.unsafe_allow_networks_for_testing;
        let url = check_url_syntax(&text, allow).map_err(|e| refused(joined.as_str(), e))?;
        let addrs = self
            .resolve(&url)
            .await
            .map_err(|e| refused(url.as_str(), e))?;
        Ok(ValidatedUrl { url, addrs })
    }

    /// Pinned fetch: validates again, connects only to the validated
    /// addresses, follows at most [`MAX_REDIRECTS`] re-validated redirects,
    /// enforces the byte cap and checks the content type against `kind`.
    pub async fn fetch(
        &self,
        raw: &str,
        kind: MediaKind,
        declared_mimetype: Option<&str>,
    ) -> Result<FetchedMedia, MediaError> {
        let limit = self.inner.config.fetch_timeout;
        let mut progress = Progress::Resolving;
        let outcome = tokio::time::timeout(
            limit,
            self.fetch_until_done(raw, kind, declared_mimetype, &mut progress),
        )
        .await;
        match outcome {
            Ok(result) => result,
            Err(_elapsed) => Err(progress.timeout_error(limit)),
        }
    }

    async fn fetch_until_done(
        &self,
        raw: &str,
        kind: MediaKind,
        declared_mimetype: Option<&str>,
        progress: &mut Progress,
    ) -> Result<FetchedMedia, MediaError> {
        *progress = Progress::Resolving;
        let mut target = self.validate(raw).await?;
        let mut redirects = 0;
        loop {
            *progress = Progress::Waiting;
            let response = self.send(&target, kind).await?;
            let status = response.status();
            if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return self
                    .read_body(response, target, kind, declared_mimetype, progress)
                    .await;
            }
            if redirects == MAX_REDIRECTS {
                return Err(err(format!(
                    "too many redirects (more than {MAX_REDIRECTS})"
                )));
            }
            redirects += 1;
            let location = match response.headers().get(reqwest::header::LOCATION) {
                Some(value) => std::str::from_utf8(value.as_bytes())
                    .map_err(|_| {
                        err("media server sent a redirect whose Location is not valid UTF-8")
                    })?
                    .to_owned(),
                None => {
                    return Err(err(format!(
                        "media server answered {status} without a Location header"
                    )))
                }
            };
            // The redirect body is never read: dropping the response closes
            // the connection.
            drop(response);
            *progress = Progress::Resolving;
            target = self.validate_redirect(&target.url, &location).await?;
        }
    }

    /// Client settings shared by every hop.
    pub(super) fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            // No HTTP(S)_PROXY from the environment: a proxy would make its
            // own connection to wherever it likes.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .referer(false)
            .connect_timeout(self.inner.config.connect_timeout)
            .pool_max_idle_per_host(0)
            .dns_resolver(Arc::new(PinnedOnly))
            .user_agent(USER_AGENT);
        for cert in &self.inner.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
    }

    /// One request to a validated URL, with a client pinned to its addresses.
    /// A new client per hop: pins differ per hop, and no pooled connection
    /// can outlive its validation.
    async fn send(
        &self,
        target: &ValidatedUrl,
        kind: MediaKind,
    ) -> Result<reqwest::Response, MediaError> {
        let mut builder = self.client_builder();
        if let Some(Host::Domain(domain)) = target.url.host() {
            // TLS still verifies `domain`; only the address lookup is fixed.
            builder = builder.resolve_to_addrs(domain, &target.addrs);
        }
        let client = builder.build().map_err(|e| {
            err(format!(
                "cannot set up the media HTTP client: {}",
                error_chain(&e)
            ))
        })?;
        tracing::debug!(url = %target.url, addrs = ?target.addrs, "fetching media");
        client
            .get(target.url.clone())
            .header(reqwest::header::ACCEPT, kind.accept_header())
            .send()
            .await
            .map_err(|e| self.describe_send_error(&e, target))
    }

    fn describe_send_error(&self, e: &reqwest::Error, target: &ValidatedUrl) -> MediaError {
        let host = target.url.host_str().unwrap_or("?");
        let addrs = target
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if e.is_connect() && e.is_timeout() {
            err(format!(
                "could not connect to media server {host} ({addrs}) within {:?}",
                self.inner.config.connect_timeout
            ))
        } else if e.is_connect() {
            err(format!(
                "could not connect to media server {host} ({addrs}): {}",
                error_chain(e)
            ))
        } else if e.is_timeout() {
            err(format!(
                "media server did not answer within {:?}",
                self.inner.config.fetch_timeout
            ))
        } else {
            err(format!(
                "media request to {host} failed: {}",
                error_chain(e)
            ))
        }
    }

    /// Checks status and content type, then reads the body under the cap.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        target: ValidatedUrl,
        kind: MediaKind,
        declared_mimetype: Option<&str>,
        progress: &mut Progress,
    ) -> Result<FetchedMedia, MediaError> {
        let status = response.status();
        if !status.is_success() {
            return Err(err(format!(
                "media server answered {status} for {}",
                shorten(target.url.as_str())
            )));
        }

        let served_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|v| !v.is_empty());
        let mimetype = match kind {
            MediaKind::Image => match served_type {
                Some(t) if IMAGE_MIMETYPES.contains(&t.as_str()) => t,
                Some(t) => {
                    return Err(err(format!(
                        "media content type {t} is not an image \
                         (expected image/jpeg, image/png or image/webp)"
                    )))
                }
                None => {
                    return Err(err("media server sent no content type; an image must be \
                         image/jpeg, image/png or image/webp"))
                }
            },
            // The caller knows best what its document is; the server's label
            // is the fallback.
            MediaKind::Document => declared_mimetype
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .or(served_type)
                .unwrap_or_else(|| DEFAULT_DOCUMENT_MIMETYPE.to_owned()),
        };

        let cap = kind.max_bytes(&self.inner.config);
        let too_large = || err(format!("media larger than {cap} bytes ({kind} limit)"));
        let announced = response.content_length();
        if announced.is_some_and(|len| len > cap) {
            return Err(too_large());
        }
        // Never trust the announced length for more than a modest
        // pre-allocation; the loop below enforces the cap on what arrives.
        let initial = announced.unwrap_or(0).min(cap).min(1 << 20);
        let mut bytes = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
        *progress = Progress::Downloading(0);
        let host = target.url.host_str().unwrap_or("?").to_owned();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            err(format!(
                "media download from {host} failed: {}",
                error_chain(&e)
            ))
        })? {
            let total = bytes.len() as u64 + chunk.len() as u64;
            if total > cap {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
            *progress = Progress::Downloading(total);
        }
        if bytes.is_empty() {
            return Err(err("media server sent an empty body"));
        }
        Ok(FetchedMedia {
            bytes,
            mimetype,
            final_url: target.url,
        })
    }
}

/// Cuts long URLs in messages; a Location header can be huge.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::table_guard;

    #[tokio::test]
    async fn redirect_locations_are_revalidated() {
        let guard = table_guard();
        let current = Url::parse("https://public.test/dir/a.png").unwrap();
        let ok = |loc: &'static str| {
            let (guard, current) = (guard.clone(), current.clone());
            async move { guard.validate_redirect(&current, loc).await }
        };
        let v = ok("/b.png").await.unwrap();
        assert_eq!(v.url.as_str(), "https://public.test/b.png");
        assert_eq!(
            ok("c.png").await.unwrap().url.as_str(),
            "https://public.test/dir/c.png"
        );
        assert_eq!(
            ok("?v=2").await.unwrap().url.as_str(),
            "https://public.test/dir/a.png?v=2"
        );
        assert!(ok("//public.test/x").await.is_ok());
        assert!(ok("https://93.184.215.14/x").await.is_ok());

        let refused = |loc: &'static str| {
            let (guard, current) = (guard.clone(), current.clone());
            async move {
                guard
                    .validate_redirect(&current, loc)
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        assert_eq!(
            refused("http://public.test/x").await,
            "redirect to http://public.test/x refused: media URL must use https"
        );
        assert!(refused("//private.test/x")
            .await
            .contains("private address (10.0.0.1)"));
        assert!(refused("https://10.0.0.1/x").await.contains("refused"));
        assert!(refused("https://0x7f.1/").await.contains("dotted-quad"));
        assert!(refused("//0x5db8d70e/").await.contains("dotted-quad"));
        assert!(refused("https:/public.test/x")
            .await
            .contains("two slashes"));
        assert!(refused("https:public.test/x").await.contains("two slashes"));
        assert!(refused("/a\\b").await.contains("backslash"));
        assert!(refused("https://localhost/").await.contains("localhost"));
        assert!(refused("file:///etc/passwd").await.contains("https"));
        assert!(refused("").await.contains("empty Location"));
    }
}
