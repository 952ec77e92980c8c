//! End-to-end tests of the pinned media fetch against a loopback HTTPS
//! server.
//!
//! The server listens on 127.0.0.1 with a certificate for `media.test`,
//! `other.test` and `rebind.test` from a throwaway CA. The guard reaches it
//! only because the tests say so: `resolve` maps those names to 127.0.0.1 (no
//! DNS involved) and `unsafe_allow_networks_for_testing` admits 127.0.0.1/32.
//! Addresses that must be refused (10.x) are refused before any connection,
//! so nothing but loopback is ever contacted.

#[path = "support/tls_server.rs"]
mod tls_server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tls_server::{Reply, SeenRequest, TestPki, TestServer};
use whatan::media::{MediaConfig, MediaGuard, MediaKind};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not really a picture";
const CAP: u64 = 1000;

/// The test server's routes. `port` is the server's own port, for absolute
/// redirect targets.
fn routes(req: &SeenRequest, port: u16) -> Reply {
    let path = req.path.as_str();
    if let Some(n) = path.strip_prefix("/chain/") {
        // /chain/N redirects N times before landing on the picture,
        // alternating hosts so every hop is validated and pinned anew.
        let n: u32 = n.parse().expect("chain length");
        return match n {
            0 => Reply::ok("image/png", PNG),
            _ if n % 2 == 1 => {
                Reply::redirect(format!("https://other.test:{port}/chain/{}", n - 1))
            }
            _ => Reply::redirect(format!("/chain/{}", n - 1)),
        };
    }
    match path {
        "/cat.png" => Reply::ok("image/png", PNG),
        "/cat-params.png" => Reply::ok("IMAGE/PNG; charset=binary", PNG),
        "/page.html" => Reply::ok("text/html; charset=utf-8", b"<html>hi</html>"),
        "/report.pdf" => Reply::ok("application/pdf", b"%PDF-1.4 tiny"),
        "/untyped" => Reply::Full {
            status: 200,
            headers: Vec::new(),
            body: b"some bytes".to_vec(),
        },
        "/missing" => Reply::status(404),
        "/redirect/relative" => Reply::redirect("../cat.png"),
        "/redirect/private-ip" => Reply::redirect("https://10.0.0.1/x.png"),
        "/redirect/private-name" => Reply::redirect(format!("https://internal.test:{port}/x.png")),
        "/redirect/http" => Reply::redirect(format!("http://media.test:{port}/cat.png")),
        "/redirect/no-location" => Reply::Full {
            status: 302,
            headers: Vec::new(),
            body: Vec::new(),
        },
        "/exact-cap.png" => Reply::ok("image/png", &[7u8; CAP as usize]),
        "/big-length.png" => Reply::ok("image/png", &[7u8; 2 * CAP as usize]),
        // Announces a huge body, then sends nothing: only an early refusal
        // based on Content-Length can finish before the deadline.
        "/big-length-then-stall.png" => Reply::HeadersThenStall {
            headers: vec![
                ("Content-Type", "image/png".to_owned()),
                ("Content-Length", "100000000".to_owned()),
            ],
        },
        "/big-chunked.png" => Reply::Chunked {
            content_type: "image/png",
            chunk: vec![7u8; 100],
            chunks: 10_000,
        },
        "/big-until-close.png" => Reply::UntilClose {
            content_type: "image/png",
            chunk: vec![7u8; 100],
            chunks: 10_000,
        },
        "/stall.png" => Reply::Stall,
        "/stall-body.png" => Reply::HeadersThenStall {
            headers: vec![
                ("Content-Type", "image/png".to_owned()),
                ("Content-Length", "500".to_owned()),
            ],
        },
        _ => Reply::status(404),
    }
}

struct Fixture {
    pki: TestPki,
    server: TestServer,
}

impl Fixture {
    async fn start() -> Fixture {
        let pki = TestPki::new(&["media.test", "other.test", "rebind.test", "127.0.0.1"]);
        let server = TestServer::start(&pki, routes).await;
        Fixture { pki, server }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.server.port)
    }

    /// Test settings: the names above pinned to 127.0.0.1 (and one name to a
    /// private address), loopback admitted, the test CA trusted, small caps.
    fn config(&self) -> MediaConfig {
        let mut config = MediaConfig {
            unsafe_allow_networks_for_testing: vec!["127.0.0.1/32".parse().unwrap()],
            extra_ca_file: Some(self.pki.ca_path().to_path_buf()),
            connect_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(20),
            max_image_bytes: CAP,
            max_document_bytes: CAP,
            ..MediaConfig::default()
        };
        for name in ["media.test", "other.test", "rebind.test", "wrongname.test"] {
            config.resolve.insert(name.to_owned(), vec![LOOPBACK]);
        }
        config.resolve.insert(
            "internal.test".to_owned(),
            vec!["10.0.0.5".parse().unwrap()],
        );
        config
    }

    fn guard(&self) -> MediaGuard {
        MediaGuard::new(self.config()).expect("guard")
    }

    fn paths(&self) -> Vec<String> {
        self.server.seen().into_iter().map(|r| r.path).collect()
    }
}

async fn fetch_err(guard: &MediaGuard, url: &str, kind: MediaKind) -> String {
    match guard.fetch(url, kind, None).await {
        Ok(media) => panic!("fetch of {url} should fail, got {media:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn image_fetch_returns_bytes_and_type() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/cat.png");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.bytes, PNG);
    assert_eq!(media.mimetype, "image/png");
    assert_eq!(media.final_url.as_str(), url);
    let seen = fx.server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, "media.test");
    assert_eq!(seen[0].sni.as_deref(), Some("media.test"));
}

#[tokio::test]
async fn content_type_parameters_are_dropped() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/cat-params.png");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.mimetype, "image/png");
}

#[tokio::test]
async fn document_mimetype_declared_then_served_then_default() {
    let fx = Fixture::start().await;
    let guard = fx.guard();
    let pdf = fx.url("media.test", "/report.pdf");
    let declared = guard
        .fetch(&pdf, MediaKind::Document, Some("application/x-custom"))
        .await
        .unwrap();
    assert_eq!(declared.mimetype, "application/x-custom");
    let served = guard.fetch(&pdf, MediaKind::Document, None).await.unwrap();
    assert_eq!(served.mimetype, "application/pdf");
    assert_eq!(served.bytes, b"%PDF-1.4 tiny");
    let untyped = guard
        .fetch(&fx.url("media.test", "/untyped"), MediaKind::Document, None)
        .await
        .unwrap();
    assert_eq!(untyped.mimetype, "application/octet-stream");
    // A document may be any type, even HTML.
    let html = guard
        .fetch(
            &fx.url("media.test", "/page.html"),
            MediaKind::Document,
            None,
        )
        .await
        .unwrap();
    assert_eq!(html.mimetype, "text/html");
}

#[tokio::test]
async fn wrong_content_type_for_image_is_refused() {
    let fx = Fixture::start().await;
    let guard = fx.guard();
    let e = fetch_err(
        &guard,
        &fx.url("media.test", "/page.html"),
        MediaKind::Image,
    )
    .await;
    assert_eq!(
        e,
        "media content type text/html is not an image (expected image/jpeg, image/png or image/webp)"
    );
    let e = fetch_err(&guard, &fx.url("media.test", "/untyped"), MediaKind::Image).await;
    assert!(e.contains("no content type"), "{e}");
}

#[tokio::test]
async fn relative_redirect_is_followed() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/redirect/relative");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.bytes, PNG);
    assert_eq!(media.final_url.as_str(), fx.url("media.test", "/cat.png"));
}

#[tokio::test]
async fn redirect_to_private_address_is_refused() {
    let fx = Fixture::start().await;
    let guard = fx.guard();
    let e = fetch_err(
        &guard,
        &fx.url("media.test", "/redirect/private-ip"),
        MediaKind::Image,
    )
    .await;
    assert_eq!(
        e,
        "redirect to https://10.0.0.1/x.png refused: media URL host 10.0.0.1 is a private address"
    );
    let e = fetch_err(
        &guard,
        &fx.url("media.test", "/redirect/private-name"),
        MediaKind::Image,
    )
    .await;
    assert_eq!(
        e,
        format!(
            "redirect to {} refused: media URL host internal.test resolves to a private address (10.0.0.5)",
            fx.url("internal.test", "/x.png")
        )
    );
    // Only the two redirecting requests reached any server.
    assert_eq!(
        fx.paths(),
        ["/redirect/private-ip", "/redirect/private-name"]
    );
}

#[tokio::test]
async fn redirect_to_http_is_refused() {
    let fx = Fixture::start().await;
    let e = fetch_err(
        &fx.guard(),
        &fx.url("media.test", "/redirect/http"),
        MediaKind::Image,
    )
    .await;
    assert_eq!(
        e,
        format!(
            "redirect to http://media.test:{}/cat.png refused: media URL must use https",
            fx.server.port
        )
    );
    assert_eq!(fx.paths(), ["/redirect/http"]);
}

#[tokio::test]
async fn redirect_without_location_is_an_error() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/redirect/no-location");
    let e = fetch_err(&fx.guard(), &url, MediaKind::Image).await;
    assert!(e.contains("without a Location header"), "{e}");
}

#[tokio::test]
async fn three_redirects_across_hosts_are_followed() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/chain/3");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.bytes, PNG);
    assert_eq!(media.final_url.as_str(), fx.url("other.test", "/chain/0"));
    let hops: Vec<(String, String)> = fx
        .server
        .seen()
        .into_iter()
        .map(|r| (r.host, r.path))
        .collect();
    let expected = [
        ("media.test", "/chain/3"),
        ("other.test", "/chain/2"),
        ("other.test", "/chain/1"),
        ("other.test", "/chain/0"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(h, p)| ((*h).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(hops, expected);
}

#[tokio::test]
async fn four_redirects_are_too_many() {
    let fx = Fixture::start().await;
    let e = fetch_err(
        &fx.guard(),
        &fx.url("media.test", "/chain/4"),
        MediaKind::Image,
    )
    .await;
    assert_eq!(e, "too many redirects (more than 3)");
    // The fourth Location was never requested.
    assert_eq!(fx.paths(), ["/chain/4", "/chain/3", "/chain/2", "/chain/1"]);
}

#[tokio::test]
async fn body_at_the_cap_is_accepted() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/exact-cap.png");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.bytes.len() as u64, CAP);
}

#[tokio::test]
async fn oversize_body_with_content_length_is_refused() {
    let fx = Fixture::start().await;
    let e = fetch_err(
        &fx.guard(),
        &fx.url("media.test", "/big-length.png"),
        MediaKind::Image,
    )
    .await;
    assert!(e.starts_with("media larger than 1000 bytes"), "{e}");
}

#[tokio::test]
async fn oversize_content_length_is_refused_before_the_body() {
    // The server announces 100 MB and then sends nothing. Refusing on the
    // header alone gives the size error; waiting for the body would end in
    // the deadline instead.
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/big-length-then-stall.png");
    let e = fetch_err(&fx.guard(), &url, MediaKind::Image).await;
    assert!(e.starts_with("media larger than 1000 bytes"), "{e}");
}

#[tokio::test]
async fn oversize_chunked_body_is_refused() {
    let fx = Fixture::start().await;
    let e = fetch_err(
        &fx.guard(),
        &fx.url("media.test", "/big-chunked.png"),
        MediaKind::Image,
    )
    .await;
    assert!(e.starts_with("media larger than 1000 bytes"), "{e}");
}

#[tokio::test]
async fn oversize_body_delimited_by_close_is_refused() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/big-until-close.png");
    let e = fetch_err(&fx.guard(), &url, MediaKind::Document).await;
    assert!(e.starts_with("media larger than 1000 bytes"), "{e}");
}

fn short_deadline(fx: &Fixture) -> MediaGuard {
    MediaGuard::new(MediaConfig {
        fetch_timeout: Duration::from_millis(500),
        ..fx.config()
    })
    .unwrap()
}

#[tokio::test]
async fn stalled_server_hits_the_deadline() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/stall.png");
    let e = fetch_err(&short_deadline(&fx), &url, MediaKind::Image).await;
    assert_eq!(e, "media server did not answer within 500ms");
    assert_eq!(fx.paths(), ["/stall.png"]);
}

#[tokio::test]
async fn stalled_body_hits_the_deadline() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/stall-body.png");
    let e = fetch_err(&short_deadline(&fx), &url, MediaKind::Image).await;
    assert!(
        e.starts_with("media download did not finish within 500ms"),
        "{e}"
    );
}

#[tokio::test]
async fn error_status_is_an_error() {
    let fx = Fixture::start().await;
    let url = fx.url("media.test", "/missing");
    let e = fetch_err(&fx.guard(), &url, MediaKind::Document).await;
    assert_eq!(e, format!("media server answered 404 Not Found for {url}"));
}

#[tokio::test]
async fn fetch_connects_to_the_pinned_address_only() {
    // `rebind.test` exists only in the guard's resolve table: system DNS has
    // never heard of it (and the HTTP client is not even allowed to ask). So
    // the request can reach the server only through the address validated
    // and pinned by the guard, while TLS still checks the name.
    let fx = Fixture::start().await;
    let guard = fx.guard();
    let url = fx.url("rebind.test", "/cat.png");
    let validated = guard.validate(&url).await.unwrap();
    assert_eq!(validated.addrs, [SocketAddr::new(LOOPBACK, fx.server.port)]);
    let media = guard.fetch(&url, MediaKind::Image, None).await.unwrap();
    assert_eq!(media.bytes, PNG);
    let seen = fx.server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, "rebind.test");
    assert_eq!(seen[0].sni.as_deref(), Some("rebind.test"));
}

#[tokio::test]
async fn ip_literal_is_fetched_when_admitted() {
    let fx = Fixture::start().await;
    let url = fx.url("127.0.0.1", "/cat.png");
    let media = fx
        .guard()
        .fetch(&url, MediaKind::Image, None)
        .await
        .unwrap();
    assert_eq!(media.bytes, PNG);
}

#[tokio::test]
async fn loopback_is_refused_without_the_allow_list() {
    let fx = Fixture::start().await;
    let guard = MediaGuard::new(MediaConfig {
        unsafe_allow_networks_for_testing: Vec::new(),
        ..fx.config()
    })
    .unwrap();
    let e = fetch_err(&guard, &fx.url("media.test", "/cat.png"), MediaKind::Image).await;
    assert_eq!(
        e,
        "media URL host media.test resolves to a loopback address (127.0.0.1)"
    );
    let e = fetch_err(&guard, &fx.url("127.0.0.1", "/cat.png"), MediaKind::Image).await;
    assert_eq!(e, "media URL host 127.0.0.1 is a loopback address");
    assert!(fx.server.seen().is_empty());
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_is_refused() {
    let fx = Fixture::start().await;
    let guard = MediaGuard::new(MediaConfig {
        extra_ca_file: None,
        ..fx.config()
    })
    .unwrap();
    let e = fetch_err(&guard, &fx.url("media.test", "/cat.png"), MediaKind::Image).await;
    assert!(
        e.starts_with("could not connect to media server media.test"),
        "{e}"
    );
    assert!(e.contains("certificate"), "{e}");
    assert!(fx.server.seen().is_empty());
}

#[tokio::test]
async fn pinning_keeps_host_name_verification() {
    // wrongname.test is pinned to the same server, whose certificate does not
    // name it: the pin changes where to connect, never whom to trust.
    let fx = Fixture::start().await;
    let e = fetch_err(
        &fx.guard(),
        &fx.url("wrongname.test", "/cat.png"),
        MediaKind::Image,
    )
    .await;
    assert!(
        e.starts_with("could not connect to media server wrongname.test"),
        "{e}"
    );
    assert!(e.contains("certificate"), "{e}");
    assert!(fx.server.seen().is_empty());
}
