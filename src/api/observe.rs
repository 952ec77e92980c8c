//! What every request leaves behind for operators: its `X-Request-Id`, a
//! tracing span carrying that id (and the token id once authentication
//! knows it), and one access-log line at `info` with the route template,
//! status, duration, token id and client address.
//!
//! Nothing here sees a secret: the token id is the public `tok_...` id,
//! never the bearer secret, and no header but `X-Request-Id` and
//! `X-Forwarded-For` is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hyper::HeaderMap;

/// The header, lower-case as hyper stores it.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client-chosen request id that is kept.
const MAX_REQUEST_ID_CHARS: usize = 128;

tokio::task_local! {
    /// The id of the token that authenticated the current request, set by
    /// `auth` and read back by the access log after the handler returns,
    /// whatever the handler answered (a 409 after authentication still
    /// names its token).
    static TOKEN_ID: OnceLock<String>;
}

/// Run `request` with a slot for its token id; returns what it returned
/// and the token id, if authentication succeeded.
pub async fn with_token_slot<T>(
    request: impl std::future::Future<Output = T>,
) -> (T, Option<String>) {
    TOKEN_ID
        .scope(OnceLock::new(), async {
            let out = request.await;
            let token = TOKEN_ID.try_with(|t| t.get().cloned()).ok().flatten();
            (out, token)
        })
        .await
}

/// Called by authentication once the token is valid: the access log and
/// the rest of the request's log lines name it.
pub fn note_token(token_id: &str) {
    let _ = TOKEN_ID.try_with(|t| t.set(token_id.to_string()));
    tracing::Span::current().record("token_id", token_id);
}

/// The client's own `X-Request-Id` if it is one value of 1-128 characters
/// of `[A-Za-z0-9._:-]`; otherwise a new time-ordered UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    let mut values = headers.get_all(REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if is_acceptable_request_id(value.as_bytes()) => {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        }
        _ => generated_request_id(),
    }
}

fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// UUID version 7: sorts by time, so ids in logs read in order.
fn generated_request_id() -> String {
    crate::store::time_ordered_uuid(crate::clock::now_ms()).to_string()
}

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the first address of `X-Forwarded-For` read from the right that
/// is not a trusted proxy. A hop that is not an IP address ends the walk at
/// the last address known good (a proxy would not write it; a client
/// might, to hide behind it).
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    let mut client = canonical(peer.ip());
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return client;
        };
        client = canonical(ip);
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// `::ffff:10.0.0.1` is `10.0.0.1` (a dual-stack listener's IPv4 peers).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_clients_request_id_is_kept_only_when_it_is_well_formed() {
        let kept = ["abc", "a.b_c:d-e", &"x".repeat(128)];
        for id in kept {
            assert_eq!(request_id(&headers(REQUEST_ID, &[id])), id);
        }
        let replaced = ["", "a b", "é", "a/b", &"x".repeat(129)];
        for id in replaced {
            let got = request_id(&headers(REQUEST_ID, &[id]));
            assert_ne!(got, id);
            assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
        }
        let two = request_id(&headers(REQUEST_ID, &["a", "b"]));
        assert!(uuid::Uuid::parse_str(&two).is_ok());
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn the_client_is_the_first_untrusted_forwarded_hop_behind_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let xff = headers("x-forwarded-for", &["1.1.1.1, 198.51.100.7", "10.0.0.9"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_address(proxy, &xff, &trusted), ip("198.51.100.7"));
        // An untrusted peer's header is not believed.
        assert_eq!(client_address(stranger, &xff, &trusted), ip("203.0.113.9"));
        assert_eq!(client_address(proxy, &xff, &[]), ip("10.0.0.5"));
        // No header, or only trusted hops: the last one known.
        assert_eq!(
            client_address(proxy, &HeaderMap::new(), &trusted),
            ip("10.0.0.5")
        );
        let inner = headers("x-forwarded-for", &["10.1.1.1"]);
        assert_eq!(client_address(proxy, &inner, &trusted), ip("10.1.1.1"));
        // Garbage stops the walk at the last good address.
        let junk = headers("x-forwarded-for", &["1.1.1.1, nonsense"]);
        assert_eq!(client_address(proxy, &junk, &trusted), ip("10.0.0.5"));
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1".parse().unwrap();
        assert_eq!(client_address(mapped, &xff, &trusted), ip("198.51.100.7"));
    }
}
