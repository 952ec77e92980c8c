//! The network pieces the library is built with: its own defaults (Tokio
//! WebSocket to WhatsApp, ureq for media and version checks), wrapped so
//! that connection failures are reported ([`crate::reach`]); another
//! WebSocket server for whatan's tests; an offline transport in this crate's
//! tests, so that no test ever reaches the network.

use std::sync::Arc;

use whatsapp_rust::bot::{Bot, BotBuilder, Provided};
use whatsapp_rust::http::{HttpClient, UreqHttpClient};
use whatsapp_rust::transport::{TokioWebSocketTransportFactory, TransportFactory};

use crate::reach::{Observed, Reach};
use crate::session::Session;
use crate::WebError;
#[cfg(test)]
use whatsapp_rust::transport::{Transport, TransportEvent};

/// The client version announced when it is not asked of WhatsApp's web site
/// (a server other than WhatsApp's, tests).
const FIXED_VERSION: (u32, u32, u32) = (2, 3000, 1);

/// How to reach WhatsApp: its own servers ([`Net::default`]), or another
/// WebSocket server ([`Net::server`]).
#[derive(Clone, Default)]
pub struct Net {
    /// Replaces the WebSocket transport to WhatsApp.
    transport: Option<Arc<dyn TransportFactory>>,
    /// Fixed client version instead of asking WhatsApp's web site.
    version: Option<(u32, u32, u32)>,
}

pub(crate) type Builder = BotBuilder<Provided, Provided, Provided, Provided>;

impl Net {
    /// The WebSocket server at `url` instead of WhatsApp's, e.g. a loopback
    /// port in a test. The client version is then fixed rather than fetched
    /// from WhatsApp's web site, so nothing else is contacted.
    pub fn server(url: &str) -> Net {
        Net {
            transport: Some(Arc::new(
                TokioWebSocketTransportFactory::new().with_url(url),
            )),
            version: Some(FIXED_VERSION),
        }
    }

    /// A bot builder on `session` (an empty file is created if missing).
    pub(crate) async fn builder(&self, session: &Session) -> Result<Builder, WebError> {
        self.observed_builder(session, &Reach::new()).await
    }

    /// [`Net::builder`], reporting connection failures to `reach`.
    pub(crate) async fn observed_builder(
        &self,
        session: &Session,
        reach: &Arc<Reach>,
    ) -> Result<Builder, WebError> {
        let store = session.backend().await?;
        let transport: Arc<dyn TransportFactory> = match &self.transport {
            Some(transport) => transport.clone(),
            None => Arc::new(TokioWebSocketTransportFactory::new()),
        };
        let http: Arc<dyn HttpClient> = Arc::new(UreqHttpClient::new());
        // History is of no use to a sending API; skipping it keeps the first
        // connection light.
        let mut builder = Bot::builder()
            .with_backend_arc(store)
            .skip_history_sync()
            .with_transport_factory(Observed {
                inner: transport,
                reach: reach.clone(),
            })
            .with_http_client(Observed {
                inner: http,
                reach: reach.clone(),
            });
        if let Some(version) = self.version {
            builder = builder.with_version(version);
        }
        Ok(builder)
    }

    /// A network that is never reached: every connection attempt fails at
    /// once, as on a machine without a route to WhatsApp.
    #[cfg(test)]
    pub(crate) fn offline() -> Net {
        Net {
            transport: Some(Arc::new(OfflineTransport)),
            version: Some(FIXED_VERSION),
        }
    }
}

#[cfg(test)]
pub(crate) struct OfflineTransport;

#[cfg(test)]
#[whatsapp_rust::async_trait]
impl TransportFactory for OfflineTransport {
    async fn create_transport(
        &self,
    ) -> Result<
        (
            Arc<dyn Transport>,
            whatsapp_rust::async_channel::Receiver<TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        Err(whatsapp_rust::anyhow::anyhow!(
            "offline: tests never reach WhatsApp"
        ))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_new_session_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-sessions").join("acc_1.db");

        let _builder = Net::offline()
            .builder(&Session::File(path.clone()))
            .await
            .unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the session holds the device's keys");
    }
}
