//! Fetching image and document URLs without turning whatan into an SSRF proxy.
//!
//! Image and document messages carry a URL that whatan downloads on the caller's
//! behalf. Whoever can call the Send API could otherwise make the server reach
//! anything *it* can reach: the loopback admin ports, the cloud metadata service
//! at 169.254.169.254, the private network behind it. This module is the single
//! gate every driver goes through before touching such a URL:
//!
//! 1. **Syntax** ([`check_url_syntax`]): https only, no credentials, no
//!    `localhost` or single-label names, every IP literal checked against the
//!    IANA special-purpose registries. The decision is made on the URL as the
//!    `url` crate parsed it, but raw input that the WHATWG parser would have to
//!    *repair* (tabs, backslashes, `0x7f.1`, fullwidth dots, zero-width spaces,
//!    `https:/host`, ...) is refused outright: whatever the caller saw must be
//!    exactly what gets fetched, and tricks that rely on parser leniency never
//!    get the chance to meet a parser that is lenient in a different way.
//! 2. **Resolution** ([`MediaGuard::validate`]): names go through a static
//!    table first (like curl's `--resolve`), then the system resolver; the URL
//!    is refused if *any* answer is not public, or if nothing resolves.
//! 3. **Pinned fetch** ([`MediaGuard::fetch`]): the HTTP client may connect
//!    only to the addresses that were just validated (TLS still verifies the
//!    host name), so a DNS answer that changes between validation and
//!    connection (DNS rebinding) cannot redirect the request. Redirects are
//!    followed by hand, at most [`MAX_REDIRECTS`], and each hop is validated and
//!    pinned again. The whole fetch runs under one deadline and a byte cap that
//!    holds whether or not `Content-Length` is present or honest.
//!
//! A test-only allow-list (`unsafe_allow_networks_for_testing`) admits chosen
//! networks (for instance a loopback test server); it never relaxes the https
//! or syntax rules.
//!
//! Each step is a file with its own tests: `syntax` (what a URL parser would
//! have to repair), `ranges` (which addresses count as public), `resolve`
//! (the static table, then DNS) and `fetch` (the pinned client, redirects,
//! caps). This file is the small API the rest of whatan sees:
//! [`MediaGuard`], [`MediaConfig`], [`MediaKind`] and the error and result
//! types.

mod fetch;
mod post;
mod ranges;
mod resolve;
mod syntax;
#[cfg(test)]
mod testing;

pub use post::PinnedPost;
pub use ranges::is_public_ip;
pub use syntax::check_url_syntax;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use resolve::normalize_table_key;

/// Longest media URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Most redirects followed by one fetch.
pub const MAX_REDIRECTS: usize = 3;

/// Image content types accepted: what WhatsApp accepts for image messages.
pub const IMAGE_MIMETYPES: &[&str] = &["image/jpeg", "image/png", "image/webp"];

/// Content type used for a document when neither the caller nor the server named one.
pub const DEFAULT_DOCUMENT_MIMETYPE: &str = "application/octet-stream";

/// Settings of the media gate. `Default` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Static name-to-address table consulted before DNS (like curl's
    /// `--resolve`). A name found here is never looked up in DNS; an empty
    /// list means the name does not resolve. Keys are host names (any case,
    /// trailing dot and Unicode allowed); the addresses are still checked.
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
    /// Networks admitted even though they are not public, for tests only
    /// (e.g. `127.0.0.1/32` for a loopback test server). Empty in production.
    pub unsafe_allow_networks_for_testing: Vec<IpNet>,
    /// PEM file with extra trusted root certificates (private or test CA),
    /// added to the built-in webpki roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Limit on establishing one TCP + TLS connection (also bounds a DNS lookup).
    pub connect_timeout: Duration,
    /// Limit on a whole fetch: resolution, every redirect hop and the body.
    pub fetch_timeout: Duration,
    /// Byte cap for image bodies.
    pub max_image_bytes: u64,
    /// Byte cap for document bodies.
    pub max_document_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            resolve: BTreeMap::new(),
            unsafe_allow_networks_for_testing: Vec::new(),
            extra_ca_file: None,
            connect_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(60),
            max_image_bytes: 5_000_000,
            max_document_bytes: 100_000_000,
        }
    }
}

/// Which kind of message the media belongs to; decides the cap and the
/// accepted content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Document,
}

impl MediaKind {
    /// The byte cap for this kind under `config`.
    pub fn max_bytes(self, config: &MediaConfig) -> u64 {
        match self {
            MediaKind::Image => config.max_image_bytes,
            MediaKind::Document => config.max_document_bytes,
        }
    }

    fn accept_header(self) -> &'static str {
        match self {
            MediaKind::Image => "image/jpeg, image/png, image/webp",
            MediaKind::Document => "*/*",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Image => "image",
            MediaKind::Document => "document",
        })
    }
}

/// Why a media URL was refused or could not be fetched. The message is meant
/// for the API caller: it says what was wrong, never just "invalid".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaError(pub String);

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MediaError {}

/// Shorthand for the steps, which build many messages.
fn err(message: impl Into<String>) -> MediaError {
    MediaError(message.into())
}

/// The downloaded media.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchedMedia {
    pub bytes: Vec<u8>,
    /// For images, the (checked) response content type; for documents, the
    /// caller's declared type, else the response's, else
    /// `application/octet-stream`.
    pub mimetype: String,
    /// The URL the bytes came from, after redirects.
    pub final_url: Url,
}

// Hand-written so logging a FetchedMedia never dumps megabytes of bytes.
impl fmt::Debug for FetchedMedia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedMedia")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("mimetype", &self.mimetype)
            .field("final_url", &self.final_url.as_str())
            .finish()
    }
}

/// A URL that passed every check, with the socket addresses it was checked
/// against: the only addresses a fetch of it may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUrl {
    pub url: Url,
    pub addrs: Vec<SocketAddr>,
}

/// The media gate: validates and fetches media URLs. Cheap to clone.
///
/// Its methods live with their step: construction and `validate` here,
/// resolution in `resolve`, redirects and the pinned fetch in `fetch`.
#[derive(Clone)]
pub struct MediaGuard {
    inner: Arc<Inner>,
}

struct Inner {
    config: MediaConfig,
    /// `config.resolve` with normalised keys.
    resolve: BTreeMap<String, Vec<IpAddr>>,
    extra_roots: Vec<reqwest::Certificate>,
}

impl fmt::Debug for MediaGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaGuard")
            .field("config", &self.inner.config)
            .field("extra_roots", &self.inner.extra_roots.len())
            .finish()
    }
}

impl MediaGuard {
    /// Builds the guard; reads `extra_ca_file` once.
    pub fn new(config: MediaConfig) -> Result<MediaGuard, MediaError> {
        if config.connect_timeout.is_zero() || config.fetch_timeout.is_zero() {
            return Err(err(
                "media connect_timeout and fetch_timeout must be positive",
            ));
        }
        if config.max_image_bytes == 0 || config.max_document_bytes == 0 {
            return Err(err("media byte caps must be positive"));
        }
        let mut resolve = BTreeMap::new();
        for (key, addrs) in &config.resolve {
            resolve.insert(normalize_table_key(key)?, addrs.clone());
        }
        let extra_roots = match &config.extra_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    err(format!("cannot read media CA file {}: {e}", path.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    err(format!(
                        "media CA file {} is not valid PEM: {e}",
                        path.display()
                    ))
                })?;
                if certs.is_empty() {
                    return Err(err(format!(
                        "media CA file {} contains no certificates",
                        path.display()
                    )));
                }
                certs
            }
        };
        let guard = MediaGuard {
            inner: Arc::new(Inner {
                config,
                resolve,
                extra_roots,
            }),
        };
        // Build one client now so a bad certificate is reported at startup,
        // not on the first message.
        guard.client_builder().build().map_err(|e| {
            err(format!(
                "cannot set up the media HTTP client: {}",
                error_chain(&e)
            ))
        })?;
        Ok(guard)
    }

    /// The configuration the guard was built with.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// Full validation at request time: syntax + resolution. Returns the
    /// parsed URL and the addresses it was validated against.
    pub async fn validate(&self, raw: &str) -> Result<ValidatedUrl, MediaError> {
        let url = check_url_syntax(raw, &self.inner.config.unsafe_allow_networks_for_testing)?;
        let addrs = self.resolve(&url).await?;
        Ok(ValidatedUrl { url, addrs })
    }
}

/// An error and its sources, `: `-separated (reqwest's own message alone
/// rarely says what went wrong).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_file_is_reported_at_startup() {
        let missing = MediaGuard::new(MediaConfig {
            extra_ca_file: Some("/nonexistent/whatan-ca.pem".into()),
            ..MediaConfig::default()
        });
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("cannot read media CA file"));
    }
}
