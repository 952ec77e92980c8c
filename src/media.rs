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

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longest media URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Most redirects followed by one fetch.
pub const MAX_REDIRECTS: usize = 3;

/// Image content types accepted: what WhatsApp accepts for image messages.
pub const IMAGE_MIMETYPES: &[&str] = &["image/jpeg", "image/png", "image/webp"];

/// Content type used for a document when neither the caller nor the server named one.
pub const DEFAULT_DOCUMENT_MIMETYPE: &str = "application/octet-stream";

const USER_AGENT: &str = concat!("whatan/", env!("CARGO_PKG_VERSION"), " (media fetch)");

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

// ---------------------------------------------------------------------------
// Address ranges
// ---------------------------------------------------------------------------

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose
/// Address Registry plus multicast and reserved space), with the words used in
/// error messages. First match wins, so the broadcast address sits before
/// 240/4.
const V4_SPECIAL: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "a this-network"),
    (v4(10, 0, 0, 0, 8), "a private"),
    (v4(100, 64, 0, 0, 10), "a shared (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "a loopback"),
    (v4(169, 254, 0, 0, 16), "a link-local"),
    (v4(172, 16, 0, 0, 12), "a private"),
    // The whole IETF protocol assignments block, including the few entries
    // (192.0.0.9, 192.0.0.10) IANA marks global: none of them serves media.
    (v4(192, 0, 0, 0, 24), "an IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "a documentation"),
    (v4(192, 88, 99, 0, 24), "a 6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "a private"),
    (v4(198, 18, 0, 0, 15), "a benchmarking"),
    (v4(198, 51, 100, 0, 24), "a documentation"),
    (v4(203, 0, 113, 0, 24), "a documentation"),
    (v4(224, 0, 0, 0, 4), "a multicast"),
    (v4(255, 255, 255, 255, 32), "a broadcast"),
    (v4(240, 0, 0, 0, 4), "a reserved"),
];

/// The only IPv6 space admitted at all: global unicast.
const V6_GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// IPv6 ranges refused. Everything outside 2000::/3 is refused anyway; the
/// ranges outside it are listed too so the error message can name them.
/// Specific ranges come before the blocks that contain them.
const V6_SPECIAL: &[(Ipv6Net, &str)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), "an unspecified"),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), "a loopback"),
    (v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96), "an IPv4-mapped"),
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 96), "an IPv4-compatible"),
    (v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96), "a NAT64"),
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), "a local-use NAT64"),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "a discard-only"),
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 32), "a Teredo"),
    (v6(0x2001, 0x2, 0, 0, 0, 0, 0, 0, 48), "a benchmarking"),
    (v6(0x2001, 0x10, 0, 0, 0, 0, 0, 0, 28), "an ORCHID"),
    (v6(0x2001, 0x20, 0, 0, 0, 0, 0, 0, 28), "an ORCHIDv2"),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), "a documentation"),
    // The rest of the IETF protocol assignments block (anycast services, AMT,
    // AS112, DETs). RIR allocations start at 2001:200::, so no real media
    // server lives here.
    (
        v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),
        "an IETF protocol assignment",
    ),
    (v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16), "a 6to4"),
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), "a documentation"),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "a unique-local"),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), "a link-local"),
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), "a site-local"),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "a multicast"),
];

/// Describes why `ip` is not public ("a private", "a loopback", ...), or
/// `None` if it is globally routable.
fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => V4_SPECIAL
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind),
        IpAddr::V6(ip) => V6_SPECIAL
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind)
            .or_else(|| {
                (!V6_GLOBAL_UNICAST.contains(&ip)).then_some("a reserved (non-global-unicast)")
            }),
    }
}

/// Whether an address is globally routable: not in any IANA special-purpose
/// range listed above and, for IPv6, inside global unicast 2000::/3. The test
/// allow-list is not consulted.
pub fn is_public_ip(ip: IpAddr) -> bool {
    non_public_kind(ip).is_none()
}

fn ip_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    is_public_ip(ip) || allow.iter().any(|net| net.contains(&ip))
}

// ---------------------------------------------------------------------------
// Syntax
// ---------------------------------------------------------------------------

/// Dots other than U+002E that IDNA mapping (or a careless reader) turns into
/// a label separator, plus look-alikes. Refused anywhere in the URL.
const NON_ASCII_DOTS: &[char] = &[
    '\u{3002}', // IDEOGRAPHIC FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{FE12}', // PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC FULL STOP
    '\u{2024}', // ONE DOT LEADER
    '\u{2E3C}', // STENOGRAPHIC FULL STOP
    '\u{06D4}', // ARABIC FULL STOP
    '\u{0701}', // SYRIAC SUPRALINEAR FULL STOP
    '\u{0702}', // SYRIAC SUBLINEAR FULL STOP
    '\u{1362}', // ETHIOPIC FULL STOP
    '\u{A4FF}', // LISU PUNCTUATION FULL STOP
];

fn is_non_ascii_dot(c: char) -> bool {
    NON_ASCII_DOTS.contains(&c)
        // DIGIT ONE FULL STOP .. NUMBER TWENTY FULL STOP: map to "1." .. "20."
        || ('\u{2488}'..='\u{249B}').contains(&c)
        // DIGIT ZERO FULL STOP, DIGIT ZERO COMMA .. : map to "0." etc.
        || ('\u{1F100}'..='\u{1F10A}').contains(&c)
}

/// Invisible characters: the whole Unicode `Cf` (format) category, plus the
/// other default-ignorable code points (variation selectors, fillers) that
/// IDNA silently drops.
const INVISIBLE_RANGES: &[(u32, u32)] = &[
    // Cf
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    // Other default-ignorables
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
];

fn is_invisible(c: char) -> bool {
    let c = u32::from(c);
    INVISIBLE_RANGES
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Refuses characters the WHATWG parser would strip, translate or map:
/// controls and whitespace (stripped or removed), backslashes (read as `/`),
/// invisible characters (dropped by IDNA) and non-ASCII dots (read as `.`).
fn check_raw_characters(raw: &str) -> Result<(), MediaError> {
    for (at, c) in raw.char_indices() {
        let what = if c.is_control() || c.is_whitespace() {
            "a control or whitespace character"
        } else if c == '\\' {
            "a backslash"
        } else if is_invisible(c) {
            "an invisible formatting character"
        } else if is_non_ascii_dot(c) {
            "a non-ASCII dot"
        } else {
            continue;
        };
        return Err(err(format!(
            "media URL contains {what} (U+{:04X}) at byte {at}; send the exact URL to fetch, \
             percent-encoded",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Pure checks, no IO: syntax + IP literal ranges (honouring the test
/// allow-list). Returns the parsed URL.
///
/// The decision is taken on the parsed URL, but input the parser would have
/// to repair is refused, so the URL checked, logged and fetched is the URL the
/// caller wrote.
pub fn check_url_syntax(raw: &str, allow: &[IpNet]) -> Result<Url, MediaError> {
    if raw.is_empty() {
        return Err(err("media URL is empty"));
    }
    if raw.len() > MAX_URL_BYTES {
        return Err(err(format!(
            "media URL is longer than {MAX_URL_BYTES} bytes ({} bytes)",
            raw.len()
        )));
    }
    check_raw_characters(raw)?;
    let url =
        Url::parse(raw).map_err(|e| err(format!("media URL is not a valid absolute URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(err("media URL must use https"));
    }

    // The parser accepts `https:host`, `https:/host` and `https:///host` and
    // repairs them; only the one true form is accepted. The parser lowercases
    // the scheme, so `HTTPS://` is fine.
    let after_scheme = match raw.get(..6) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https:") => &raw[6..],
        _ => return Err(err("media URL must start with https://")),
    };
    let Some(after_slashes) = after_scheme.strip_prefix("//") else {
        return Err(err(
            "media URL must have exactly two slashes after https: (https://host/...)",
        ));
    };
    if after_slashes.starts_with('/') {
        return Err(err(
            "media URL must have exactly two slashes after https: (https://host/...)",
        ));
    }

    // Backslashes are refused above, so for https the authority ends at the
    // first `/`, `?` or `#`, exactly where the parser ends it.
    let authority_end = after_slashes
        .find(['/', '?', '#'])
        .unwrap_or(after_slashes.len());
    let authority = &after_slashes[..authority_end];
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        // Also catches an empty `https://@host`, which the parser drops silently.
        return Err(err(
            "media URL must not contain user credentials (user@host)",
        ));
    }
    if authority.contains('%') {
        return Err(err("media URL host must not be percent-encoded"));
    }
    let (raw_host, raw_port) = split_authority(authority)?;
    if raw_port == Some("") {
        return Err(err("media URL has an empty port after ':'"));
    }
    if url.port() == Some(0) {
        return Err(err("media URL port 0 is not allowed"));
    }

    match url.host() {
        None => return Err(err("media URL has no host")),
        Some(Host::Ipv4(ip)) => {
            // Decimal (`2130706433`), hex (`0x7f.1`), octal (`0177.0.0.1`),
            // short (`127.1`), trailing-dot or fullwidth spellings all parse
            // to an IPv4 address; only the canonical dotted quad is accepted.
            if raw_host != ip.to_string() {
                return Err(err(format!(
                    "media URL host {raw_host} is not a plain dotted-quad IPv4 address \
                     (it would be read as {ip})"
                )));
            }
            check_ip_literal(IpAddr::V4(ip), allow)?;
        }
        Some(Host::Ipv6(ip)) => check_ip_literal(IpAddr::V6(ip), allow)?,
        Some(Host::Domain(domain)) => check_domain(raw_host, domain)?,
    }
    Ok(url)
}

/// Splits `host[:port]` / `[v6][:port]` as written.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), MediaError> {
    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err(err("media URL has an unterminated IPv6 address"));
        };
        let (host, rest) = authority.split_at(close + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(err("media URL has junk after its IPv6 address")),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn check_ip_literal(ip: IpAddr, allow: &[IpNet]) -> Result<(), MediaError> {
    if ip_allowed(ip, allow) {
        return Ok(());
    }
    let kind = non_public_kind(ip).unwrap_or("a non-public");
    Err(err(format!("media URL host {ip} is {kind} address")))
}

/// Checks a domain host: `raw` as written, `parsed` as the parser returned it
/// (lowercase, punycode, trailing dot kept).
fn check_domain(raw: &str, parsed: &str) -> Result<(), MediaError> {
    // Same labels, ASCII ones unchanged but for case, Unicode ones turned into
    // punycode of themselves. Anything else means the IDNA mapping rewrote the
    // host (fullwidth letters, `⒈`, ligatures, ...).
    let raw_labels: Vec<&str> = raw.split('.').collect();
    let parsed_labels: Vec<&str> = parsed.split('.').collect();
    let canonical = raw_labels.len() == parsed_labels.len()
        && raw_labels.iter().zip(&parsed_labels).all(|(r, p)| {
            if r.is_ascii() {
                r.eq_ignore_ascii_case(p)
            } else {
                idn_label_is_canonical(r, p)
            }
        });
    if !canonical {
        return Err(err(format!(
            "media URL host {raw} is not written in canonical form (it would be read as {parsed})"
        )));
    }

    // A single trailing dot (the root label) is legitimate; the name is
    // judged without it, so `localhost.` is localhost.
    let name = parsed.strip_suffix('.').unwrap_or(parsed);
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(err(format!("media URL host {parsed} has an empty label")));
    }
    if !name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
    }) {
        return Err(err(format!(
            "media URL host {parsed} contains characters not allowed in a DNS name"
        )));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(err(format!(
            "media URL host {parsed} points at localhost; media must come from a public server"
        )));
    }
    if !name.contains('.') {
        return Err(err(format!(
            "media URL host {parsed} is a single-label name; use a fully qualified domain name"
        )));
    }
    Ok(())
}

/// Whether the punycode label `parsed` encodes the Unicode label `raw` with
/// no character mapped to ASCII on the way. Punycode copies a label's ASCII
/// characters, in order, before its last `-`; if that prefix differs from the
/// ASCII characters actually written, IDNA turned something non-ASCII into
/// ASCII (`ｘｎ－－...`, `ﬁ`, `㎏`, fullwidth letters).
fn idn_label_is_canonical(raw: &str, parsed: &str) -> bool {
    let Some(encoded) = parsed.strip_prefix("xn--") else {
        return false;
    };
    let basic = encoded.rfind('-').map_or("", |at| &encoded[..at]);
    let written: String = raw
        .chars()
        .filter(char::is_ascii)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    basic == written
}

/// The host name as used for the resolve table: lowercase punycode, no
/// trailing dot.
fn table_key(parsed_domain: &str) -> &str {
    parsed_domain.strip_suffix('.').unwrap_or(parsed_domain)
}

/// Normalises a configured resolve-table key the way URL hosts are normalised.
fn normalize_table_key(key: &str) -> Result<String, MediaError> {
    match Host::parse(key.strip_suffix('.').unwrap_or(key)) {
        Ok(Host::Domain(domain)) if !domain.is_empty() => Ok(domain.to_ascii_lowercase()),
        Ok(_) => Err(err(format!(
            "media resolve table key {key:?} must be a host name, not an IP address"
        ))),
        Err(e) => Err(err(format!(
            "media resolve table key {key:?} is not a valid host name ({e})"
        ))),
    }
}

// ---------------------------------------------------------------------------
// Guard: resolution and pinned fetch
// ---------------------------------------------------------------------------

/// The media gate: validates and fetches media URLs. Cheap to clone.
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

    /// Resolves a syntactically checked URL and checks every answer.
    async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, MediaError> {
        let port = url.port_or_known_default().unwrap_or(443);
        let domain = match url.host() {
            Some(Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
            Some(Host::Domain(domain)) => domain,
            None => return Err(err("media URL has no host")),
        };
        let name = table_key(domain);
        let mut ips: Vec<IpAddr> = match self.inner.resolve.get(name) {
            Some(table) => table.clone(),
            None => self.lookup(domain, port).await?,
        };
        // Keep the resolver's order (it is the connection order) but drop
        // repeats such as the same address for two socket types.
        let mut seen = std::collections::HashSet::new();
        ips.retain(|ip| seen.insert(*ip));
        if ips.is_empty() {
            return Err(err(format!("media URL host {name} does not resolve")));
        }
        let allow = &self.inner.config.unsafe_allow_networks_for_testing;
        if let Some(bad) = ips.iter().find(|ip| !ip_allowed(**ip, allow)) {
            let kind = non_public_kind(*bad).unwrap_or("a non-public");
            return Err(err(format!(
                "media URL host {name} resolves to {kind} address ({bad})"
            )));
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// System DNS lookup (A and AAAA), bounded by the connect timeout.
    async fn lookup(&self, domain: &str, port: u16) -> Result<Vec<IpAddr>, MediaError> {
        let name = table_key(domain);
        // Special-use names (RFC 6761, 6762, 7686, 8375, 9476 and ICANN's
        // `.internal`) are never in public DNS: refuse them without asking a
        // resolver, which might be a private one that answers them.
        const RESERVED: [&str; 8] = [
            "invalid",
            "test",
            "example",
            "local",
            "onion",
            "internal",
            "alt",
            "home.arpa",
        ];
        if RESERVED
            .iter()
            .any(|tld| name == *tld || name.ends_with(&format!(".{tld}")))
        {
            return Err(err(format!(
                "media URL host {name} does not resolve (a special-use name, never public)"
            )));
        }
        let limit = self.inner.config.connect_timeout;
        match tokio::time::timeout(limit, tokio::net::lookup_host((domain, port))).await {
            Err(_) => Err(err(format!(
                "media URL host {name} could not be resolved within {limit:?}"
            ))),
            Ok(Err(e)) => Err(err(format!("media URL host {name} does not resolve ({e})"))),
            Ok(Ok(addrs)) => Ok(addrs.map(|addr| addr.ip()).collect()),
        }
    }

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
    fn client_builder(&self) -> reqwest::ClientBuilder {
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

/// Whether a URL reference starts with a scheme (`scheme:`), as the WHATWG
/// parser decides it.
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
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

    /// The rows of the URL syntax table; the header of the file says how a
    /// row is written.
    const URL_SYNTAX_TABLE: &str = include_str!("media/testdata/url_syntax.tsv");

    /// (input, expect_ok) rows for `check_url_syntax` with no allow-list.
    fn syntax_cases() -> Vec<(String, bool)> {
        let mut rows: Vec<(String, bool)> = URL_SYNTAX_TABLE
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .map(|(index, line)| syntax_row(index + 1, line))
            .collect();
        // Length bound: right at the limit is fine, one byte over is not.
        let base = "https://example.com/";
        rows.push((
            format!("{base}{}", "a".repeat(MAX_URL_BYTES - base.len())),
            true,
        ));
        rows.push((
            format!("{base}{}", "a".repeat(MAX_URL_BYTES - base.len() + 1)),
            false,
        ));
        rows
    }

    /// One `accept|refuse <TAB> url` line of the table. A malformed line
    /// fails the test rather than being skipped, so no row can silently drop
    /// out of the table.
    fn syntax_row(line_number: usize, line: &str) -> (String, bool) {
        let fail = |why: String| -> ! { panic!("url_syntax.tsv line {line_number}: {why}") };
        let Some((expected, url)) = line.split_once('\t') else {
            fail("expected `accept` or `refuse`, a tab, then the URL".into())
        };
        let expect_ok = match expected {
            "accept" => true,
            "refuse" => false,
            other => fail(format!("{other:?} is neither `accept` nor `refuse`")),
        };
        (unescape(url).unwrap_or_else(|why| fail(why)), expect_ok)
    }

    /// Undoes the table's escapes, the Rust string ones: `\\`, `\t`, `\n`,
    /// `\r` and `\u{HEX}`.
    fn unescape(text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('u') => {
                    let (hex, rest) = chars
                        .as_str()
                        .strip_prefix('{')
                        .and_then(|after| after.split_once('}'))
                        .ok_or("\\u must be followed by {HEX}")?;
                    let code = u32::from_str_radix(hex, 16)
                        .map_err(|e| format!("\\u{{{hex}}} is not hexadecimal ({e})"))?;
                    let c = char::from_u32(code)
                        .ok_or_else(|| format!("\\u{{{hex}}} is not a character"))?;
                    out.push(c);
                    chars = rest.chars();
                }
                Some(other) => return Err(format!("unknown escape \\{other}")),
                None => return Err("a lone \\ at the end of the line".into()),
            }
        }
        Ok(out)
    }

    #[test]
    fn syntax_table() {
        let cases = syntax_cases();
        assert!(cases.len() >= 120, "only {} cases", cases.len());
        let mut wrong = Vec::new();
        for (input, expect_ok) in &cases {
            let got = check_url_syntax(input, &[]);
            if got.is_ok() != *expect_ok {
                wrong.push(format!("{input:?}: expected ok={expect_ok}, got {got:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn syntax_table_with_allow_list() {
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()];
        let rows: &[(&str, bool)] = &[
            ("https://127.0.0.1/", true),
            ("https://127.0.0.1:8443/x.png", true),
            ("https://[::1]:8443/x.png", true),
            ("https://127.0.0.2/", false),
            ("https://10.0.0.1/", false),
            ("https://[::2]/", false),
            ("https://[::ffff:127.0.0.1]/", false),
            // The syntax rules still apply inside the allow-list.
            ("http://127.0.0.1/", false),
            ("https://2130706433/", false),
            ("https://0x7f.1/", false),
            ("https://127.1/", false),
            ("https://localhost/", false),
            ("https://user@127.0.0.1/", false),
            ("https://127.0.0.1:0/", false),
        ];
        for (input, expect_ok) in rows {
            let got = check_url_syntax(input, &allow);
            assert_eq!(got.is_ok(), *expect_ok, "{input:?}: {got:?}");
        }
    }

    #[test]
    fn syntax_messages_say_why() {
        let msg = |raw: &str| check_url_syntax(raw, &[]).unwrap_err().to_string();
        assert_eq!(msg("http://example.com/"), "media URL must use https");
        assert!(msg("https://10.0.0.5/").contains("10.0.0.5 is a private address"));
        assert!(msg("https://169.254.169.254/").contains("link-local"));
        assert!(msg("https://[::ffff:127.0.0.1]/").contains("IPv4-mapped"));
        assert!(msg("https://0x7f.1/").contains("not a plain dotted-quad"));
        assert!(msg("https://localhost/").contains("localhost"));
        assert!(msg("https://intranet/").contains("single-label"));
        assert!(msg("https://u:p@example.com/").contains("credentials"));
        assert!(msg("https:/example.com/").contains("exactly two slashes"));
        assert!(msg("https://exa\u{200B}mple.com/").contains("invisible"));
        assert!(msg("https://example\u{3002}com/").contains("non-ASCII dot"));
        assert!(msg("https://example.com\\x").contains("backslash"));
        assert!(msg("https://example.com/\t").contains("whitespace"));
    }

    #[test]
    fn parsed_url_is_returned() {
        let url = check_url_syntax("https://bücher.example:8443/x.png?a=1", &[]).unwrap();
        assert_eq!(url.host_str(), Some("xn--bcher-kva.example"));
        assert_eq!(url.port(), Some(8443));
        assert_eq!(url.query(), Some("a=1"));
    }

    #[test]
    fn public_ip_classification() {
        let rows: &[(&str, bool)] = &[
            ("93.184.215.14", true),
            ("8.8.8.8", true),
            ("1.0.0.1", true),
            ("192.31.196.1", true),
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("10.1.2.3", false),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("127.255.255.255", false),
            ("169.254.1.1", false),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("192.0.0.9", false),
            ("192.0.2.255", false),
            ("192.88.99.2", false),
            ("192.168.255.255", false),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.51.100.1", false),
            ("203.0.113.255", false),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            ("2606:2800:220:1::1", true),
            ("2001:4860:4860::8888", true),
            ("2a00:1450:4001:82b::200e", true),
            ("3ffe::1", true),
            ("3fff:fff:ffff::1", false),
            ("3fff:1000::1", true),
            ("::", false),
            ("::1", false),
            ("::ffff:8.8.8.8", false),
            ("::8.8.8.8", false),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::808:808", false),
            ("100::1", false),
            ("2001::", false),
            ("2001:0:ffff::1", false),
            ("2001:2::", false),
            ("2001:10::1", false),
            ("2001:1f::1", false),
            ("2001:20::1", false),
            ("2001:2f::1", false),
            ("2001:1ff::1", false),
            ("2001:db8:ffff::1", false),
            ("2002::1", false),
            ("fc00::", false),
            ("fdff::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("4000::", false),
            ("1fff:ffff::1", false),
        ];
        for (ip, public) in rows {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(is_public_ip(addr), *public, "{ip}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard_with(table: &[(&str, &[&str])], allow: &[&str]) -> MediaGuard {
        let resolve = table
            .iter()
            .map(|(host, addrs)| ((*host).to_owned(), addrs.iter().map(|a| ip(a)).collect()))
            .collect();
        MediaGuard::new(MediaConfig {
            resolve,
            unsafe_allow_networks_for_testing: allow.iter().map(|n| n.parse().unwrap()).collect(),
            connect_timeout: Duration::from_secs(2),
            ..MediaConfig::default()
        })
        .unwrap()
    }

    fn table_guard() -> MediaGuard {
        guard_with(
            &[
                ("private.test", &["10.0.0.1"]),
                ("mixed.test", &["93.184.215.14", "10.0.0.1"]),
                ("mixed6.test", &["93.184.215.14", "fd00::1"]),
                ("mapped.test", &["::ffff:93.184.215.14"]),
                (
                    "Public.TEST.",
                    &["93.184.215.14", "2606:2800:220:1::1", "93.184.215.14"],
                ),
                ("bücher.example", &["93.184.215.14"]),
                ("empty.test", &[]),
                ("loop.test", &["127.0.0.1"]),
                ("meta.test", &["169.254.169.254"]),
            ],
            &[],
        )
    }

    #[tokio::test]
    async fn resolve_table_answers_are_checked() {
        let guard = table_guard();
        let refused = |raw: &'static str| {
            let guard = guard.clone();
            async move { guard.validate(raw).await.unwrap_err().to_string() }
        };
        assert_eq!(
            refused("https://private.test/x.png").await,
            "media URL host private.test resolves to a private address (10.0.0.1)"
        );
        assert!(refused("https://mixed.test/x.png")
            .await
            .contains("(10.0.0.1)"));
        assert!(refused("https://mixed6.test/x.png")
            .await
            .contains("unique-local"));
        assert!(refused("https://mapped.test/x.png")
            .await
            .contains("IPv4-mapped"));
        assert!(refused("https://loop.test/x.png")
            .await
            .contains("loopback"));
        assert!(refused("https://meta.test/x.png")
            .await
            .contains("link-local"));
        assert_eq!(
            refused("https://empty.test/x.png").await,
            "media URL host empty.test does not resolve"
        );
        // Syntax errors come first, before any lookup.
        assert_eq!(
            refused("http://public.test/").await,
            "media URL must use https"
        );
    }

    #[tokio::test]
    async fn resolve_table_gives_pinned_addresses() {
        let guard = table_guard();
        let v = guard.validate("https://public.test/x.png").await.unwrap();
        assert_eq!(
            v.addrs,
            vec![
                SocketAddr::new(ip("93.184.215.14"), 443),
                SocketAddr::new(ip("2606:2800:220:1::1"), 443),
            ]
        );
        // Trailing dot, case and port.
        let v = guard
            .validate("https://PUBLIC.test.:8443/x.png")
            .await
            .unwrap();
        assert_eq!(v.addrs[0], SocketAddr::new(ip("93.184.215.14"), 8443));
        // IDN key matches the punycode host.
        let v = guard
            .validate("https://bücher.example/x.png")
            .await
            .unwrap();
        assert_eq!(v.url.host_str(), Some("xn--bcher-kva.example"));
        let v = guard
            .validate("https://xn--bcher-kva.example/x.png")
            .await
            .unwrap();
        assert_eq!(v.addrs, vec![SocketAddr::new(ip("93.184.215.14"), 443)]);
        // IP literals need no lookup.
        let v = guard
            .validate("https://93.184.215.14:8443/a")
            .await
            .unwrap();
        assert_eq!(v.addrs, vec![SocketAddr::new(ip("93.184.215.14"), 8443)]);
        let v = guard
            .validate("https://[2606:2800:220:1::1]/a")
            .await
            .unwrap();
        assert_eq!(
            v.addrs,
            vec![SocketAddr::new(ip("2606:2800:220:1::1"), 443)]
        );
    }

    #[tokio::test]
    async fn allow_list_admits_resolved_test_addresses() {
        let guard = guard_with(&[("loop.test", &["127.0.0.1"])], &["127.0.0.0/8"]);
        let v = guard
            .validate("https://loop.test:9443/x.png")
            .await
            .unwrap();
        assert_eq!(v.addrs, vec![SocketAddr::new(ip("127.0.0.1"), 9443)]);
        assert!(guard.validate("https://127.0.0.1/x.png").await.is_ok());
        // Still not localhost, still https.
        assert!(guard.validate("https://localhost/x.png").await.is_err());
        assert!(guard.validate("http://loop.test/x.png").await.is_err());
    }

    #[tokio::test]
    async fn name_that_never_resolves_is_refused() {
        // `.invalid` is reserved never to resolve (RFC 6761); it is refused
        // without asking any resolver.
        let guard = table_guard();
        let e = guard
            .validate("https://nothing-here.whatan.invalid/x.png")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not resolve") || e.contains("could not be resolved"),
            "{e}"
        );
    }

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

    #[test]
    fn table_keys_must_be_names() {
        let bad = MediaGuard::new(MediaConfig {
            resolve: [("10.0.0.1".to_owned(), vec![ip("93.184.215.14")])].into(),
            ..MediaConfig::default()
        });
        assert!(bad.unwrap_err().to_string().contains("not an IP address"));
    }

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

    #[test]
    fn has_scheme_matches_whatwg() {
        assert!(has_scheme("https://x"));
        assert!(has_scheme("HTTP:x"));
        assert!(has_scheme("a+b-c.d:"));
        assert!(!has_scheme("/a:b"));
        assert!(!has_scheme("1http://x"));
        assert!(!has_scheme("//x:1/"));
        assert!(!has_scheme("a.png"));
    }
}
