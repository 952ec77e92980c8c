//! Status webhooks out (`../shared/spec/webhooks.md`): the dispatcher that
//! sends the deliveries `store::webhooks` wrote, signed the Standard
//! Webhooks way ([`sign`]).
//!
//! Architecture invariant: the dispatcher never writes an event; events are
//! written only with the change that causes them. It runs beside the Send
//! API on its own tasks, at most `max_in_flight_per_endpoint` requests per
//! endpoint, so a slow endpoint's backlog never holds up sends or other
//! endpoints. Delivery is at least once: a try that was in flight when the
//! process died is made again after restart, with the same `webhook-id`.

pub mod manage;
pub mod sign;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use rand::Rng;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::media::{MediaConfig, MediaGuard, PinnedPost};
use crate::store::webhooks::{self as events, Due, Target, TryOutcome};
use crate::store::Store;

/// `[webhooks]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// Networks endpoints may be in besides public addresses; plain `http`
    /// is accepted only inside them.
    pub allow_networks: Vec<IpNet>,
    /// A 2xx within this is success.
    pub timeout: Duration,
    /// Waits between tries, jittered by ±10%; then the delivery fails.
    pub retry_schedule: Vec<Duration>,
    /// A failing streak this long disables the endpoint.
    pub disable_after: Duration,
    pub max_in_flight_per_endpoint: usize,
    /// How often due deliveries are looked for.
    pub poll_interval: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        WebhooksConfig {
            allow_networks: Vec::new(),
            timeout: Duration::from_secs(10),
            retry_schedule: vec![
                Duration::from_secs(5),
                m(5),
                m(30),
                m(120),
                m(300),
                m(600),
                m(600),
            ],
            disable_after: Duration::from_secs(5 * 86_400),
            max_in_flight_per_endpoint: 4,
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// The URL guard for endpoints: the media rules with the operator's
/// `allow_networks` admitted, and the media resolve table and CA file.
pub fn url_guard(media: &MediaConfig, config: &WebhooksConfig) -> Result<MediaGuard, String> {
    let mut allow = config.allow_networks.clone();
    allow.extend(media.unsafe_allow_networks_for_testing.iter().copied());
    MediaGuard::new(MediaConfig {
        unsafe_allow_networks_for_testing: allow,
        fetch_timeout: config.timeout,
        ..media.clone()
    })
    .map_err(|e| format!("webhooks: {e}"))
}

/// When try number `tries` (1-based) failed, the next one is due after the
/// schedule's `tries`-th wait, jittered by ±10%; `None` once it is spent.
pub fn next_wait(schedule: &[Duration], tries: usize, jitter: f64) -> Option<Duration> {
    let wait = schedule.get(tries.checked_sub(1)?)?;
    Some(wait.mul_f64(1.0 + jitter.clamp(-0.1, 0.1)))
}

/// How long a delivery whose try could not be recorded keeps its slot
/// before it may be tried again.
const RECORD_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Sends due deliveries until `shutdown` resolves. Cheap to clone: every
/// task of it shares one state.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    guard: MediaGuard,
    config: WebhooksConfig,
    clock: Clock,
    /// Deliveries in flight, by endpoint.
    in_flight: Mutex<HashMap<String, HashSet<String>>>,
    /// Woken when a try ends, so a freed slot is used at once.
    freed: Notify,
}

impl Dispatcher {
    pub fn new(store: Store, guard: MediaGuard, config: WebhooksConfig, clock: Clock) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                guard,
                config,
                clock,
                in_flight: Mutex::default(),
                freed: Notify::new(),
            }),
        }
    }

    /// Send what is due until `shutdown`, while `active()` says this node
    /// is the one that sends (several nodes on PostgreSQL take turns through
    /// a lease; a delivery in flight when the turn moves is made again by
    /// the next node, with the same `webhook-id`).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        active: impl Fn() -> bool,
    ) {
        tokio::pin!(shutdown);
        loop {
            if active() {
                if let Err(e) = self.dispatch_due().await {
                    tracing::warn!(error = %e, "webhook dispatcher cannot read due deliveries");
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.freed.notified() => {}
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
            }
        }
    }

    /// Start what is due, within each endpoint's free slots: one batch task
    /// per endpoint.
    async fn dispatch_due(&self) -> Result<(), crate::store::StoreError> {
        let me = &self.inner;
        let now = me.clock.now_ms();
        let targets = me.store.read(move |c| events::targets_due(c, now)).await?;
        for target in targets {
            let busy: HashSet<String> = me
                .in_flight
                .lock()
                .unwrap()
                .get(&target.id)
                .cloned()
                .unwrap_or_default();
            let free = me
                .config
                .max_in_flight_per_endpoint
                .saturating_sub(busy.len());
            if free == 0 {
                continue;
            }
            let endpoint = target.id.clone();
            let want = free + busy.len();
            let due = me
                .store
                .read(move |c| events::due(c, &endpoint, now, want))
                .await?;
            let batch: Vec<Due> = due
                .into_iter()
                .filter(|d| !busy.contains(&d.id))
                .take(free)
                .collect();
            if batch.is_empty() {
                continue;
            }
            me.in_flight
                .lock()
                .unwrap()
                .entry(target.id.clone())
                .or_default()
                .extend(batch.iter().map(|d| d.id.clone()));
            tokio::spawn(self.clone().try_batch(target, batch));
        }
        Ok(())
    }

    /// The tries of one endpoint's batch, concurrently, after one
    /// resolution and pinning of its URL (on a task of its own: a slow DNS
    /// answer holds up no other endpoint).
    async fn try_batch(self, target: Target, batch: Vec<Due>) {
        let pinned = self
            .inner
            .guard
            .pin_webhook(&target.url, self.inner.config.timeout)
            .await
            .map_err(|e| e.to_string());
        let shared = Arc::new((target, pinned));
        for delivery in batch {
            tokio::spawn(self.clone().try_once(shared.clone(), delivery));
        }
    }

    /// One try of one delivery, recorded; the slot is freed whatever happens.
    async fn try_once(self, shared: Arc<(Target, Result<PinnedPost, String>)>, delivery: Due) {
        let me = &self.inner;
        let (target, pinned) = &*shared;
        let outcome = send(pinned, &me.config, &me.clock, target, &delivery).await;
        let now = me.clock.now_ms();
        let (id, endpoint) = (delivery.id.clone(), target.id.clone());
        let disable_after = me.config.disable_after.as_millis() as i64;
        let recorded = me
            .store
            .write(move |c| events::record_try(c, &id, &endpoint, &outcome, disable_after, now))
            .await;
        match recorded {
            Ok(true) => tracing::warn!(
                endpoint = %target.id,
                "webhook endpoint disabled: every delivery failed for {}; \
                 `whatan webhook add` of the same URL enables it again",
                crate::config::format_duration(me.config.disable_after)
            ),
            Ok(false) => {}
            Err(e) => {
                // The row is still due: hold its slot a while, or the next
                // pass would post it again at once, and again.
                tracing::warn!(error = %e, "cannot record a webhook delivery try");
                tokio::time::sleep(RECORD_RETRY_WAIT).await;
            }
        }
        if let Some(set) = me.in_flight.lock().unwrap().get_mut(&target.id) {
            set.remove(&delivery.id);
        }
        me.freed.notify_one();
    }
}

/// Sign and POST one delivery; what happened, with the next try's time.
async fn send(
    pinned: &Result<PinnedPost, String>,
    config: &WebhooksConfig,
    clock: &Clock,
    target: &Target,
    delivery: &Due,
) -> TryOutcome {
    let timestamp = clock.now_ms().div_euclid(1000);
    let signature = target
        .keys
        .iter()
        .map(|k| k.sign(&delivery.event_id, timestamp, delivery.body.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ");
    let headers = [
        ("webhook-id", delivery.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let result = match pinned {
        Ok(pinned) => pinned
            .post(&headers, delivery.body.clone().into_bytes())
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let (status_code, error) = match result {
        Ok(code) if (200..300).contains(&code) => {
            return TryOutcome::Delivered { status_code: code }
        }
        Ok(code) => (Some(code), format!("the endpoint answered HTTP {code}")),
        Err(e) => (None, e),
    };
    let tries = delivery.attempts as usize + 1;
    let jitter = rand::thread_rng().gen_range(-0.1..=0.1);
    let next_at = next_wait(&config.retry_schedule, tries, jitter)
        .map(|wait| clock.now_ms() + wait.as_millis() as i64);
    TryOutcome::Failed {
        status_code,
        error,
        next_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_followed_with_jitter_then_spent() {
        let s = |n: u64| Duration::from_secs(n);
        let schedule = [s(5), s(300)];
        assert_eq!(next_wait(&schedule, 1, 0.0), Some(s(5)));
        assert_eq!(
            next_wait(&schedule, 1, 0.1),
            Some(Duration::from_millis(5500))
        );
        assert_eq!(next_wait(&schedule, 2, -0.1), Some(s(270)));
        // Jitter never exceeds ±10%, whatever the caller passes.
        assert_eq!(next_wait(&schedule, 2, 5.0), Some(s(330)));
        assert_eq!(next_wait(&schedule, 3, 0.0), None);
        assert_eq!(next_wait(&schedule, 0, 0.0), None);
    }

    #[test]
    fn the_default_schedule_is_the_specs() {
        let d = WebhooksConfig::default();
        let secs: Vec<u64> = d.retry_schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(d.disable_after, Duration::from_secs(432_000));
    }
}
