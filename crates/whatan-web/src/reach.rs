//! Whether WhatsApp can be reached at all, and if not, why, in one line.
//!
//! The library retries a failed connection for ever (backoff up to 15
//! minutes) and only says why in its own logs, a line per try. Pairing with
//! no route to WhatsApp would wait out its whole 5-minute window, and a
//! linked device under `serve` would just stay "connecting". So the two
//! network pieces the library connects with, the WebSocket to WhatsApp and
//! the HTTP fetch of the current client version, are wrapped ([`Observed`]):
//! each failure is classified (DNS, TLS, refused, timed out) into a
//! [`Reach`] that pairing and the device supervisor watch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use whatsapp_rust::anyhow;
use whatsapp_rust::async_channel::Receiver;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};
use whatsapp_rust::wacore::net::{StreamingHttpResponse, UploadBody};

/// How long one connection step (the WebSocket, the version fetch) may take
/// before it counts as timed out. Shorter than the library's own 20 s, whose
/// timeout would drop the step without telling us why.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The host the library fetches its client version from.
const VERSION_HOST: &str = "https://web.whatsapp.com/";

/// Why WhatsApp could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Dns,
    Tls,
    Refused,
    Timeout,
    Other,
}

/// The last connection failure, as one line (`None` once a connection step
/// succeeds). Watchers are woken only when the line changes, so a retry loop
/// that keeps failing the same way is reported once.
pub(crate) struct Reach {
    failure: watch::Sender<Option<String>>,
}

impl Reach {
    pub(crate) fn new() -> Arc<Reach> {
        Arc::new(Reach {
            failure: watch::channel(None).0,
        })
    }

    pub(crate) fn failures(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    fn failed(&self, what: &str, error: &anyhow::Error) {
        let line = describe(what, &format!("{error:#}"));
        self.failure.send_if_modified(|last| {
            let changed = last.as_deref() != Some(line.as_str());
            *last = Some(line);
            changed
        });
    }

    fn succeeded(&self) {
        // Quietly: nobody waits for good news, but the next failure is new.
        self.failure.send_if_modified(|last| {
            *last = None;
            false
        });
    }
}

/// The cause named by an error's text (the library and its HTTP and
/// WebSocket crates report these as text, not as types).
pub fn classify(error: &str) -> Cause {
    let text = error.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if any(&["refused"]) {
        Cause::Refused
    } else if any(&[
        "dns",
        "lookup",
        "resolve",
        "name resolution",
        "host not found",
        "name or service not known",
        "nodename nor servname",
        "no address",
    ]) {
        Cause::Dns
    } else if any(&["tls", "certificate", "rustls", "ssl"]) {
        Cause::Tls
    } else if any(&["timed out", "timeout", "deadline"]) {
        Cause::Timeout
    } else {
        Cause::Other
    }
}

/// One line naming the cause, then the underlying error, then what to check.
pub fn describe(what: &str, error: &str) -> String {
    let detail = error.split_whitespace().collect::<Vec<_>>().join(" ");
    let (cause, hint) = match classify(error) {
        Cause::Dns => (
            "DNS lookup failed",
            "check this machine's DNS and internet access",
        ),
        Cause::Tls => ("TLS failed", "is a proxy or firewall intercepting HTTPS?"),
        Cause::Refused => (
            "connection refused",
            "is a firewall blocking outgoing connections?",
        ),
        Cause::Timeout => ("timed out", "check this machine's internet access"),
        Cause::Other => ("connection failed", "check this machine's internet access"),
    };
    format!("cannot reach WhatsApp: {cause} ({what}: {detail}); {hint}")
}

/// A network piece of the library whose failures are reported to a [`Reach`].
pub(crate) struct Observed<T: ?Sized> {
    pub inner: Arc<T>,
    pub reach: Arc<Reach>,
}

async fn within_step_timeout<T>(
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "timed out after {}s",
            STEP_TIMEOUT.as_secs()
        )),
    }
}

#[whatsapp_rust::async_trait]
impl TransportFactory for Observed<dyn TransportFactory> {
    async fn create_transport(
        &self,
    ) -> anyhow::Result<(Arc<dyn Transport>, Receiver<TransportEvent>)> {
        let result = within_step_timeout(self.inner.create_transport()).await;
        match &result {
            Ok(_) => self.reach.succeeded(),
            Err(e) => self.reach.failed("WebSocket to WhatsApp", e),
        }
        result
    }
}

#[whatsapp_rust::async_trait]
impl HttpClient for Observed<dyn HttpClient> {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        // Only the client version fetch says anything about reaching
        // WhatsApp; media hosts have their own retries.
        if !request.url.starts_with(VERSION_HOST) {
            return self.inner.execute(request).await;
        }
        let result = within_step_timeout(self.inner.execute(request)).await;
        if let Err(e) = &result {
            self.reach.failed("version check at web.whatsapp.com", e);
        }
        result
    }

    fn supports_streaming(&self) -> bool {
        self.inner.supports_streaming()
    }

    fn execute_streaming(&self, request: HttpRequest) -> anyhow::Result<StreamingHttpResponse> {
        self.inner.execute_streaming(request)
    }

    fn supports_upload_streaming(&self) -> bool {
        self.inner.supports_upload_streaming()
    }

    fn execute_upload(
        &self,
        request: HttpRequest,
        body: UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        self.inner.execute_upload(request, body, content_length)
    }

    fn resource_report(&self) -> Option<whatsapp_rust::wacore::stats::HttpResourceReport> {
        self.inner.resource_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_to_check() {
        for (error, cause) in [
            (
                "HTTP request to https://web.whatsapp.com/sw.js failed: host not found",
                Cause::Dns,
            ),
            (
                "WebSocket connect failed: failed to lookup address information: \
                 Temporary failure in name resolution",
                Cause::Dns,
            ),
            (
                "WebSocket connect failed: Connection refused (os error 111)",
                Cause::Refused,
            ),
            ("io: Connection refused (os error 111)", Cause::Refused),
            (
                "WebSocket connect failed: invalid peer certificate: UnknownIssuer",
                Cause::Tls,
            ),
            ("timed out after 15s", Cause::Timeout),
            ("timeout: global", Cause::Timeout),
            ("offline: tests never reach WhatsApp", Cause::Other),
        ] {
            assert_eq!(classify(error), cause, "{error}");
        }
    }

    #[test]
    fn a_description_is_one_line_naming_the_cause() {
        let line = describe(
            "WebSocket to WhatsApp",
            "connect failed:\n  Connection refused",
        );
        assert_eq!(
            line,
            "cannot reach WhatsApp: connection refused (WebSocket to WhatsApp: connect \
             failed: Connection refused); is a firewall blocking outgoing connections?"
        );
    }

    #[test]
    fn the_same_failure_again_wakes_nobody_until_a_success_came_between() {
        let reach = Reach::new();
        let mut failures = reach.failures();
        let refused = anyhow::anyhow!("Connection refused");
        reach.failed("WebSocket", &refused);
        assert!(failures.has_changed().unwrap());
        assert!(failures
            .borrow_and_update()
            .as_deref()
            .is_some_and(|l| l.contains("refused")));
        reach.failed("WebSocket", &refused);
        assert!(!failures.has_changed().unwrap(), "a retry is not news");
        reach.succeeded();
        assert!(!failures.has_changed().unwrap());
        reach.failed("WebSocket", &refused);
        assert!(failures.has_changed().unwrap(), "a new episode is");
    }
}
