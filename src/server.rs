//! The HTTP server and the process around it: accept loop with a connection
//! limit, hyper HTTP/1.1 per connection with header limits and timeouts,
//! graceful shutdown (stop accepting, finish in-flight requests, let the
//! engine finish the hand-off it is in), and the wiring of store, drivers,
//! media guard and delivery engine.
//!
//! The listener and the shutdown future are passed in, so tests bind port 0.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::{Engine, EngineParts, EngineStats, Leases};
use crate::driver::cloud::CloudDriver;
use crate::driver::sandbox::SandboxDriver;
use crate::driver::{Drivers, EventSink};
use crate::media::MediaGuard;
use crate::store::Store;

/// Request heads larger than this are refused by hyper (431).
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The drivers this build has, wired to the engine's event channel.
pub fn build_drivers(config: &Config, store: &Store, events: EventSink) -> Drivers {
    let drivers = Drivers::default().with(Arc::new(SandboxDriver::new(
        store.clone(),
        &config.sandbox,
        events.clone(),
    )));
    // Linked devices (WhatsApp Web): reconnects every linked account, so it
    // must be built inside the runtime. Without the feature, web accounts
    // stay disconnected.
    #[cfg(feature = "web")]
    let drivers = drivers.with(crate::driver::web::WebDriver::start(config, store, events));
    #[cfg(not(feature = "web"))]
    leave_web_accounts_disconnected(store, events);
    // Without its HTTP client the cloud driver is left out; the engine then
    // fails cloud sends with "driver not available" instead of hiding it.
    match CloudDriver::new(&config.cloud) {
        Ok(cloud) => drivers.with(Arc::new(cloud)),
        Err(e) => {
            tracing::error!(error = %e, "the Cloud API driver is unavailable");
            drivers
        }
    }
}

/// A build without the `web` feature cannot reach linked devices: a web
/// account that claims to be connected (from an earlier build) is marked
/// disconnected, so the API refuses its sends with `whatsapp_not_connected`.
#[cfg(not(feature = "web"))]
fn leave_web_accounts_disconnected(store: &Store, events: EventSink) {
    use crate::domain::{AccountStatus, DriverKind};
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = store.clone();
    runtime.spawn(async move {
        let Ok(accounts) = store.read(crate::store::admin::list_accounts).await else {
            return;
        };
        for account in accounts {
            if account.driver_kind() == DriverKind::Web
                && matches!(
                    account.status(),
                    AccountStatus::Connected | AccountStatus::Connecting
                )
            {
                let _ = events.send(crate::driver::DriverEvent::Connection {
                    account_id: account.id,
                    status: AccountStatus::Disconnected,
                    detail: Some("this build of whatan has no linked-device (web) support".into()),
                });
            }
        }
    });
}

/// What tests replace in a running server: the clock, the drivers (to wrap
/// one in a fault), and where the engine's counters go. `Hooks::default()`
/// is production.
#[derive(Default)]
pub struct Hooks {
    pub clock: Clock,
    pub wrap_drivers: Option<Box<dyn FnOnce(Drivers) -> Drivers + Send>>,
    pub engine_stats: Arc<EngineStats>,
}

/// Run the whole server on `listener` until `shutdown` resolves, then drain
/// and return.
pub async fn serve(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    serve_with(config, store, listener, shutdown, Hooks::default()).await
}

/// [`serve`] with [`Hooks`].
pub async fn serve_with(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    hooks: Hooks,
) -> Result<(), String> {
    let mut config = config;
    // The address actually bound (port 0 becomes a port), which is what
    // `Config::public_url` names unless the operator set `public_url`.
    if let Ok(addr) = listener.local_addr() {
        config.server.listen = addr;
    }
    let config = Arc::new(config);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut drivers = build_drivers(&config, &store, events_tx);
    if let Some(wrap) = hooks.wrap_drivers {
        drivers = wrap(drivers);
    }
    let media = MediaGuard::new(config.media.clone()).map_err(|e| format!("media: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_webhooks = stop_rx.clone();
    if let Some(retention) = config.retention.attempts {
        tokio::spawn(crate::store::retention::run(
            store.clone(),
            retention,
            hooks.clock.clone(),
            stop_rx.clone(),
        ));
    }
    let webhook_urls = crate::webhooks::url_guard(&config.media, &config.webhooks)?;
    let engine = Engine::start(
        EngineParts {
            store: store.clone(),
            drivers: drivers.clone(),
            media: media.clone(),
            pacing: config.pacing.clone(),
            clock: hooks.clock.clone(),
            stats: hooks.engine_stats,
            leases: Leases::of(&config),
        },
        events_rx,
        stop_rx,
    );
    // Webhook deliveries: their own tasks, stopped with the engine, sent
    // by one node at a time.
    let mut stop_webhooks = stop_rx_webhooks;
    let dispatching = engine.clone();
    tokio::spawn(
        crate::webhooks::Dispatcher::new(
            store.clone(),
            webhook_urls.clone(),
            config.webhooks.clone(),
            hooks.clock.clone(),
        )
        .run(
            async move {
                let _ = stop_webhooks.wait_for(|stop| *stop).await;
            },
            move || dispatching.sends_webhooks(),
        ),
    );
    let state = AppState {
        store,
        config: config.clone(),
        media,
        engine: engine.clone(),
        clock: hooks.clock,
        mcp: crate::api::mcp::service(&config),
        webhook_urls,
        links: crate::dashboard::link::Links::default(),
        flashes: crate::dashboard::flash::Flashes::default(),
    };
    run_http(
        listener,
        state,
        config.server.max_connections,
        config.server.shutdown_timeout,
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    engine.drain(config.server.shutdown_timeout).await;
    engine.leave().await;
    // Linked devices disconnect gracefully (their state is flushed).
    let _ = tokio::time::timeout(config.server.shutdown_timeout, drivers.shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Accept connections until `shutdown`, then stop accepting and wait (up to
/// `drain_timeout`) for in-flight requests.
pub async fn run_http(
    listener: TcpListener,
    state: AppState,
    max_connections: usize,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(api::handle(state, req, peer).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the shutdown timeout");
    }
}
