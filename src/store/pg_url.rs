//! How a `[database] url` reaches PostgreSQL: libpq's URL form, read the
//! way libpq reads `sslmode` and `sslrootcert`, handed to tokio-postgres
//! (which knows neither `verify-full` nor `sslrootcert`) as a URL it reads
//! plus a TLS connector.
//!
//! - no `sslmode`, or `disable`: no TLS (a loopback or private network);
//! - `require`, `verify-ca`, `verify-full`: TLS, and the server's
//!   certificate is always verified, host name included (rustls has no
//!   unverified mode; libpq's `require` alone would not verify). The roots
//!   are Mozilla's, or the PEM file `sslrootcert` names;
//! - `prefer`: TLS, verified the same way, when the server offers it, and
//!   plain text when it does not (libpq's meaning); `allow` (plain text
//!   first) is refused;
//! - client certificates (`sslcert`, `sslkey`) are not supported yet.

use std::path::PathBuf;
use std::sync::Arc;

/// A URL as whatan connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL tokio-postgres reads (`sslmode` `disable` or `require`,
    /// without `sslrootcert`).
    pub url: String,
    pub tls: Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    Off,
    /// TLS with the certificate verified against these roots (`None`:
    /// Mozilla's).
    Verified {
        root_cert: Option<PathBuf>,
    },
}

/// Read `url` (a `postgres://` or `postgresql://` URL); the error says what
/// is wrong in one line. Only the TLS parameters of the query are read and
/// replaced; everything else (user, password, hosts, other parameters) is
/// handed on byte for byte.
pub fn parse(url: &str) -> Result<Target, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root_cert, mut rest) = (None, None, Vec::new());
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let value = || percent_decode(value);
        match percent_decode(key)?.as_str() {
            "sslmode" => mode = Some(value()?),
            "sslrootcert" => root_cert = Some(value()?),
            key @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl") => {
                return Err(format!(
                    "{key}: client certificates are not supported yet; authenticate with a password"
                ))
            }
            _ => rest.push(piece.to_string()),
        }
    }
    let (tls, handed_on) = match mode.as_deref() {
        None | Some("disable") => (Tls::Off, "disable"),
        Some(m @ ("prefer" | "require" | "verify-ca" | "verify-full")) => (
            Tls::Verified {
                root_cert: root_cert.filter(|r| r != "system").map(PathBuf::from),
            },
            // prefer: TLS (verified) when the server offers it, plain text
            // when it does not, as libpq does.
            if m == "prefer" { "prefer" } else { "require" },
        ),
        Some("allow") => {
            return Err(
                "sslmode=allow tries plain text first; use sslmode=verify-full (or require) for TLS, or disable on a private network"
                    .into(),
            )
        }
        Some(m) => {
            return Err(format!(
                "sslmode={m} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    };
    rest.push(format!("sslmode={handed_on}"));
    Ok(Target {
        url: format!("{base}?{}", rest.join("&")),
        tls,
    })
}

/// `%XX` escapes undone (and nothing else: `+` stays a plus, as
/// tokio-postgres reads it).
fn percent_decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' && tail.len() >= 2 {
            let hex = std::str::from_utf8(&tail[..2]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                bytes.push(v);
                rest = &tail[2..];
                continue;
            }
        }
        bytes.push(b);
        rest = tail;
    }
    String::from_utf8(bytes).map_err(|_| "the URL's query is not UTF-8".to_string())
}

/// Connect to `target` with the blocking client.
pub fn connect(target: &Target) -> Result<postgres::Client, ConnectError> {
    match &target.tls {
        Tls::Off => Ok(postgres::Client::connect(&target.url, postgres::NoTls)?),
        Tls::Verified { root_cert } => {
            let config = client_config(root_cert.as_ref()).map_err(ConnectError::Tls)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
            Ok(postgres::Client::connect(&target.url, tls)?)
        }
    }
}

#[derive(Debug)]
pub enum ConnectError {
    Pg(postgres::Error),
    /// The TLS settings cannot be used (the root certificate file).
    Tls(String),
}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        ConnectError::Pg(e)
    }
}

fn client_config(root_cert: Option<&PathBuf>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_as_libpq_does_and_handed_on_as_tokio_postgres_reads_it() {
        let plain = parse("postgres://u:p@db:5432/whatan").unwrap();
        assert_eq!(plain.tls, Tls::Off);
        assert_eq!(plain.url, "postgres://u:p@db:5432/whatan?sslmode=disable");
        let full = parse(
            "postgresql://u@db/whatan?application_name=w&sslmode=verify-full&sslrootcert=%2Fetc%2Fca+x.pem",
        )
        .unwrap();
        assert_eq!(
            full.tls,
            Tls::Verified {
                root_cert: Some("/etc/ca+x.pem".into())
            }
        );
        assert_eq!(
            full.url,
            "postgresql://u@db/whatan?application_name=w&sslmode=require"
        );
        assert_eq!(
            parse("postgres://db/w?sslmode=require&sslrootcert=system")
                .unwrap()
                .tls,
            Tls::Verified { root_cert: None }
        );
        let prefer = parse("postgres://db/w?sslmode=prefer").unwrap();
        assert_eq!(prefer.tls, Tls::Verified { root_cert: None });
        assert!(prefer.url.ends_with("sslmode=prefer"));
        for (url, says) in [
            ("postgres://db/w?sslmode=allow", "plain text first"),
            ("postgres://db/w?sslmode=sometimes", "not one of"),
            (
                "postgres://db/w?sslmode=require&sslcert=c.pem",
                "client certificates",
            ),
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn everything_but_the_tls_parameters_is_handed_on_byte_for_byte() {
        for url in [
            "postgres://u:p%40ss%2Fw0rd@h1:5432,h2:5433/db?options=-c%20statement_timeout%3D5s&application_name=my%20app",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgresql://u:a+b@db/w?host=%2Ftmp&connect_timeout=3",
        ] {
            let target = parse(url).unwrap();
            let before: postgres::Config = format!(
                "{url}{}sslmode=disable",
                if url.contains('?') { "&" } else { "?" }
            )
            .parse()
            .unwrap();
            let after: postgres::Config = target.url.parse().unwrap();
            assert_eq!(format!("{before:?}"), format!("{after:?}"), "{url}");
        }
    }

    #[test]
    fn an_unreadable_root_certificate_is_named() {
        let err = client_config(Some(&PathBuf::from("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(client_config(None).is_ok());
    }
}
