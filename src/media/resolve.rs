//! The resolution step: which addresses a checked URL's host stands for.
//!
//! A static table comes first (like curl's `--resolve`), then the system
//! resolver. Every answer must be public (or in the test allow-list): one
//! private address among public ones refuses the URL, because the client
//! could connect to any of them. The answers are what the fetch is pinned
//! to.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use url::{Host, Url};

use super::ranges::{ip_allowed, non_public_kind};
use super::{err, MediaError, MediaGuard};

/// The host name as used for the resolve table: lowercase punycode, no
/// trailing dot.
fn table_key(parsed_domain: &str) -> &str {
    parsed_domain.strip_suffix('.').unwrap_or(parsed_domain)
}

/// Normalises a configured resolve-table key the way URL hosts are normalised.
pub(super) fn normalize_table_key(key: &str) -> Result<String, MediaError> {
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

impl MediaGuard {
    /// Resolves a syntactically checked URL and checks every answer.
    pub(super) async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, MediaError> {
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
        let mut seen = HashSet::new();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::{guard_with, ip, table_guard};
    use crate::media::MediaConfig;

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

    #[test]
    fn table_keys_must_be_names() {
        let bad = MediaGuard::new(MediaConfig {
            resolve: [("10.0.0.1".to_owned(), vec![ip("93.184.215.14")])].into(),
            ..MediaConfig::default()
        });
        assert!(bad.unwrap_err().to_string().contains("not an IP address"));
    }
}
