//! The syntax step: what a media URL may look like before anything is
//! resolved or fetched. Pure, no IO.
//!
//! The rule is that the URL the caller wrote is the URL that gets checked,
//! logged and fetched. So on top of the plain rules (https, no credentials,
//! no localhost or single-label names, IP literals only in public ranges),
//! any input the WHATWG parser would have to repair (strip, map, re-spell)
//! is refused instead of repaired.

use std::net::IpAddr;

use ipnet::IpNet;
use url::{Host, Url};

use super::ranges::{ip_allowed, non_public_kind};
use super::{err, MediaError, MAX_URL_BYTES};

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
pub(super) fn check_raw_characters(raw: &str) -> Result<(), MediaError> {
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

/// Whether a URL reference starts with a scheme (`scheme:`), as the WHATWG
/// parser decides it.
pub(super) fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the URL syntax table; the header of the file says how a
    /// row is written.
    const URL_SYNTAX_TABLE: &str = include_str!("testdata/url_syntax.tsv");

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
