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
//! - `prefer` and `allow` are refused: they fall back to plain text
//!   silently, which is never what a production store wants;
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
/// is wrong in one line.
pub fn parse(url: &str) -> Result<Target, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let (mut mode, mut root_cert, mut rest) = (None, None, Vec::new());
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" => root_cert = Some(value.into_owned()),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(format!(
                    "{key}: client certificates are not supported yet; authenticate with a password"
                ))
            }
            _ => rest.push((key.into_owned(), value.into_owned())),
        }
    }
    let tls = match mode.as_deref() {
        None | Some("disable") => Tls::Off,
        Some("require" | "verify-ca" | "verify-full") => Tls::Verified {
            root_cert: root_cert
                .filter(|r| r != "system")
                .map(PathBuf::from),
        },
        Some(m @ ("prefer" | "allow")) => {
            return Err(format!(
                "sslmode={m} may fall back to an unencrypted connection without saying so; use sslmode=verify-full (or require) for TLS, or disable on a private network"
            ))
        }
        Some(m) => return Err(format!("sslmode={m} is not one of disable, require, verify-ca, verify-full")),
    };
    rest.push((
        "sslmode".into(),
        if tls == Tls::Off {
            "disable"
        } else {
            "require"
        }
        .into(),
    ));
    parsed.query_pairs_mut().clear().extend_pairs(rest);
    Ok(Target {
        url: parsed.to_string(),
        tls,
    })
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
            "postgresql://u@db/whatan?application_name=w&sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(
            full.tls,
            Tls::Verified {
                root_cert: Some("/etc/ca.pem".into())
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
        for (url, says) in [
            ("postgres://db/w?sslmode=prefer", "fall back"),
            ("postgres://db/w?sslmode=allow", "fall back"),
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
    fn an_unreadable_root_certificate_is_named() {
        let err = client_config(Some(&PathBuf::from("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(client_config(None).is_ok());
    }
}
