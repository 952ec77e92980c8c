//! A loopback HTTPS server for the media fetch tests.
//!
//! The media fetcher refuses plain http and every non-public address, so its
//! tests need a real TLS server on 127.0.0.1 with a certificate for made-up
//! names (`media.test`, ...), signed by a throwaway CA whose PEM file is handed
//! to the fetcher as `extra_ca_file`. The HTTP side is a deliberately tiny,
//! hand-written HTTP/1.1 responder: the tests need to misbehave in ways a real
//! server framework makes hard (announce a huge length and stall, stream
//! forever without a length, never answer).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A fresh test CA and one server certificate it signed.
pub struct TestPki {
    ca_file: tempfile::NamedTempFile,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// A CA plus a leaf certificate valid for `names` (DNS names or IP
    /// addresses).
    pub fn new(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "whatan media test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf_key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut leaf_params = CertificateParams::new(names.clone()).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("leaf certificate");

        let mut ca_file = tempfile::NamedTempFile::new().expect("CA temp file");
        ca_file
            .write_all(ca_cert.pem().as_bytes())
            .expect("write CA file");
        ca_file.flush().expect("flush CA file");

        TestPki {
            ca_file,
            chain: vec![leaf.der().clone(), ca_cert.der().clone()],
            key_der: leaf_key.serialize_der(),
        }
    }

    /// The PEM file holding the CA certificate.
    pub fn ca_path(&self) -> &Path {
        self.ca_file.path()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// TLS SNI the client sent.
    pub sni: Option<String>,
    /// The Host header without its port.
    pub host: String,
    pub path: String,
}

/// What the server does with a request.
pub enum Reply {
    /// A complete response with a correct Content-Length.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// `chunks` copies of `chunk`, chunked encoding, no Content-Length.
    Chunked {
        content_type: &'static str,
        chunk: Vec<u8>,
        chunks: usize,
    },
    /// `chunks` copies of `chunk`, neither length nor chunking: the body
    /// ends when the connection closes.
    UntilClose {
        content_type: &'static str,
        chunk: Vec<u8>,
        chunks: usize,
    },
    /// Read the request and never answer.
    Stall,
    /// Send the status line and these headers, then never send the body.
    HeadersThenStall {
        headers: Vec<(&'static str, String)>,
    },
}

impl Reply {
    pub fn ok(content_type: &str, body: &[u8]) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.to_vec(),
        }
    }

    pub fn redirect(location: impl Into<String>) -> Reply {
        Reply::Full {
            status: 302,
            headers: vec![("Location", location.into())],
            body: Vec::new(),
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type", "text/plain".to_owned())],
            body: b"nope".to_vec(),
        }
    }
}

type Handler = dyn Fn(&SeenRequest, u16) -> Reply + Send + Sync;

/// A running server on 127.0.0.1; stops accepting when dropped.
pub struct TestServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    accept_loop: JoinHandle<()>,
}

impl TestServer {
    /// Binds 127.0.0.1 on a free port and serves every connection with
    /// `handler(request, own_port)`.
    pub async fn start<F>(pki: &TestPki, handler: F) -> TestServer
    where
        F: Fn(&SeenRequest, u16) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind test server");
        let port = listener.local_addr().expect("local addr").port();
        let acceptor = pki.acceptor();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept_loop = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, seen, handler) =
                        (acceptor.clone(), Arc::clone(&seen), Arc::clone(&handler));
                    tokio::spawn(async move {
                        // A client that rejects the certificate just hangs up.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, port, &seen, &*handler).await;
                        }
                    });
                }
            })
        };
        TestServer {
            port,
            seen,
            accept_loop,
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    port: u16,
    seen: &Mutex<Vec<SeenRequest>>,
    handler: &Handler,
) {
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let Some(head) = read_head(&mut tls).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let host = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim())
        .map(|value| match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => value,
        })
        .unwrap_or("")
        .to_owned();
    let request = SeenRequest { sni, host, path };
    seen.lock().expect("seen lock").push(request.clone());

    // Write errors mean the client went away (often on purpose: it stopped
    // reading at its byte cap), which ends the bounded loops below.
    match handler(&request, port) {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = status_and_headers(status, &headers);
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&body);
            let _ = tls.write_all(&bytes).await;
        }
        Reply::Chunked {
            content_type,
            chunk,
            chunks,
        } => {
            let mut out = status_and_headers(200, &[("Content-Type", content_type.to_owned())]);
            out.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            if tls.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            for _ in 0..chunks {
                if tls.write_all(&framed).await.is_err() {
                    return;
                }
            }
            let _ = tls.write_all(b"0\r\n\r\n").await;
        }
        Reply::UntilClose {
            content_type,
            chunk,
            chunks,
        } => {
            let mut out = status_and_headers(200, &[("Content-Type", content_type.to_owned())]);
            out.push_str("Connection: close\r\n\r\n");
            if tls.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..chunks {
                if tls.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
        Reply::Stall => {
            wait_for_hangup(&mut tls).await;
            return;
        }
        Reply::HeadersThenStall { headers } => {
            let mut out = status_and_headers(200, &headers);
            out.push_str("\r\n");
            if tls.write_all(out.as_bytes()).await.is_ok() && tls.flush().await.is_ok() {
                wait_for_hangup(&mut tls).await;
            }
            return;
        }
    }
    let _ = tls.flush().await;
    let _ = tls.shutdown().await;
}

fn status_and_headers(status: u16, headers: &[(&'static str, String)]) -> String {
    let reason = match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        _ => "Whatever",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out
}

/// Reads up to the blank line ending the request head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

/// Holds the connection open, answering nothing, until the client hangs up.
async fn wait_for_hangup<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
