//! The delivery engine: one pacing loop per account that has work, driving
//! queued attempts through a [`WhatsAppDriver`] one at a time.
//!
//! A hand-off has four steps (see [`Engine::hand_off`]):
//! 1. prepare: read the stored message, fetch its media (pinned), let the
//!    driver upload it. Nothing is committed; a stop interrupts it and the
//!    attempt stays as it was.
//! 2. claim: commit `sending`, the message id (chosen once, kept across
//!    retries) and the account's next slot.
//! 3. the driver call: the point of no return. It runs to completion even
//!    during shutdown.
//! 4. settle: the pure [`settle::settle`] turns the driver's answer into a
//!    transition, which is committed (retried while the store cannot write).
//!
//! An attempt found in `sending` after a crash is handed off again with the
//! same message id, which the network de-duplicates, or which a driver that
//! cannot de-duplicate refuses to send twice.
//!
//! Pacers are supervised: a panic in a driver call restarts the account's
//! pacer, and the in-flight count of hand-offs always comes down. A store that
//! cannot write makes a pacer back off instead of spinning.
//!
//! Idle accounts cost a parked task and a `Notify`, nothing else.

pub mod cluster;
mod events;
mod handoff;
pub mod schedule;
pub mod settle;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch, Notify};

pub use self::cluster::Leases;
use self::schedule::{decide, AccountView, Decision};
use crate::clock::Clock;
use crate::config::PacingConfig;
use crate::domain::error_codes::WHATSAPP_NOT_CONNECTED;
use crate::domain::{AccountStatus, AttemptStatus};
use crate::driver::{DriverEvent, Drivers};
use crate::media::MediaGuard;
use crate::store::admin::{self, Account};
use crate::store::attempts;
use crate::store::leases;
use crate::store::{Store, StoreError};

/// How often the engine looks for account changes made by another process
/// (the admin CLI's `account connect/disconnect`).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// First and longest pause of a pacer whose store cannot write (or read).
const STORE_BACKOFF_MIN: Duration = Duration::from_millis(500);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Pause before a pacer that panicked starts again.
const PANIC_RESTART_DELAY: Duration = Duration::from_millis(200);

/// Counters the engine keeps for operators and tests.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Claims tried (each a write), successful or not.
    pub claims: AtomicU64,
    /// Store errors met by pacers and event application.
    pub store_errors: AtomicU64,
    /// Pacers that panicked and were restarted.
    pub pacer_panics: AtomicU64,
    /// Hand-offs between their claim and their settlement right now.
    pub handoffs_in_flight: AtomicUsize,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    drivers: Drivers,
    media: MediaGuard,
    pacing: PacingConfig,
    clock: Clock,
    stats: Arc<EngineStats>,
    pacers: Mutex<HashMap<String, Arc<Pacer>>>,
    shutdown: watch::Receiver<bool>,
    handoff_done: Notify,
    leases: Leases,
    /// Makes the lease loop tick now (an account without a holder).
    tick_now: Notify,
}

/// What the engine is built from.
pub struct EngineParts {
    pub store: Store,
    pub drivers: Drivers,
    pub media: MediaGuard,
    pub pacing: PacingConfig,
    pub clock: Clock,
    pub stats: Arc<EngineStats>,
    /// Every account (the SQLite file), or the leased ones (PostgreSQL).
    pub leases: Leases,
}

/// Counts one hand-off in flight for as long as it lives, including when a
/// driver call panics, so `drain` never waits for a hand-off that is gone.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> InFlight<'a> {
        inner
            .stats
            .handoffs_in_flight
            .fetch_add(1, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .stats
            .handoffs_in_flight
            .fetch_sub(1, Ordering::SeqCst);
        self.0.handoff_done.notify_waiters();
    }
}

impl From<StoreError> for Interrupted {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced(_) => Interrupted::LeaseLost,
            e => Interrupted::Store(e),
        }
    }
}

/// A running pacer: how to wake it, and what it is doing ([`BUSY`],
/// [`IDLE`], [`WAITING`]).
#[derive(Default)]
struct Pacer {
    notify: Notify,
    state: AtomicU8,
}

/// Reading the store or handing off: a wake is kept for its next look.
const BUSY: u8 = 0;
/// Waiting for work (no pending send, or a ban).
const IDLE: u8 = 1;
/// Waiting for a time (its next slot, the offline grace) after a look that
/// found pending sends: a new send changes nothing it decides, so a send
/// does not wake it ([`Engine::wake_for_send`]).
const WAITING: u8 = 2;

/// Exponential back-off for a pacer that meets store errors.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(STORE_BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(STORE_BACKOFF_MAX);
        now
    }

    fn reset(&mut self) {
        self.0 = STORE_BACKOFF_MIN;
    }
}

/// Why a hand-off stopped before it settled.
enum Interrupted {
    /// The store could not take a write (or a read): back off, try again.
    Store(StoreError),
    /// The server is stopping; nothing was committed.
    Shutdown,
    /// The account's lease is no longer this node's: its pacer stops, and
    /// the holder takes the attempt on where it stands.
    LeaseLost,
}

impl Engine {
    /// Start the engine: recover accounts with pending sends, watch for
    /// account changes, apply driver events. Stops when `shutdown` turns true.
    pub fn start(
        parts: EngineParts,
        events: mpsc::UnboundedReceiver<DriverEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> Engine {
        let engine = Engine {
            inner: Arc::new(Inner {
                store: parts.store,
                drivers: parts.drivers,
                media: parts.media,
                pacing: parts.pacing,
                clock: parts.clock,
                stats: parts.stats,
                pacers: Mutex::new(HashMap::new()),
                shutdown,
                handoff_done: Notify::new(),
                leases: parts.leases,
                tick_now: Notify::new(),
            }),
        };
        if let Leases::Cluster(cluster) = &engine.inner.leases {
            tracing::info!(node = %cluster.node_id, lease_ttl = ?cluster.ttl, "sharing accounts with the other nodes of this database");
            tokio::spawn(engine.clone().run_leases());
        }
        tokio::spawn(engine.clone().recover_and_watch());
        tokio::spawn(engine.clone().apply_events(events));
        engine
    }

    /// Make sure the account's pacer looks at its queue soon. An account
    /// whose lease another node holds is that node's to drive: it sees the
    /// new work at its next look (see `recover_and_watch`).
    pub fn wake(&self, account_id: &str) {
        self.wake_with(account_id, |_| true);
    }

    /// [`Engine::wake`] for an account known to have pending sends: a pacer
    /// that waits for a time (its next slot, the offline grace) already
    /// knows, so only a missing or idle one is woken.
    fn wake_for_pending(&self, account_id: &str) {
        self.wake_with(account_id, |state| state == IDLE);
    }

    /// [`Engine::wake`] for a send just queued (committed): a pacer waiting
    /// for its next slot with sends pending already knows there is work, so
    /// it is left to sleep instead of reading the store again for every
    /// send. A busy pacer keeps the wake for its next look, which sees the
    /// send.
    pub fn wake_for_send(&self, account_id: &str) {
        self.wake_with(account_id, |state| state != WAITING);
    }

    /// Start the account's pacer if none runs (and this node holds its
    /// lease); notify a running one if `needs(its state)`.
    fn wake_with(&self, account_id: &str, needs: impl Fn(u8) -> bool) {
        if !self.inner.leases.holds(account_id) {
            return;
        }
        let mut pacers = self.inner.pacers.lock().unwrap_or_else(|e| e.into_inner());
        match pacers.get(account_id) {
            Some(pacer) if needs(pacer.state.load(Ordering::SeqCst)) => pacer.notify.notify_one(),
            Some(_) => {}
            None => self.start_pacer(&mut pacers, account_id),
        }
    }

    fn start_pacer(&self, pacers: &mut HashMap<String, Arc<Pacer>>, account_id: &str) {
        let pacer = Arc::new(Pacer::default());
        pacers.insert(account_id.to_string(), pacer.clone());
        tokio::spawn(self.clone().supervise(account_id.to_string(), pacer));
    }

    /// Hand-offs between their claim and their settlement right now.
    pub fn handoffs_in_flight(&self) -> usize {
        self.inner.stats.handoffs_in_flight.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Whether this node sends the status webhooks (one node at a time).
    pub fn sends_webhooks(&self) -> bool {
        self.inner.leases.sends_webhooks()
    }

    /// This node's leases (PostgreSQL), for `/metrics`.
    pub fn lease_gauges(&self) -> Option<crate::metrics::LeaseGauges> {
        let Leases::Cluster(c) = &self.inner.leases else {
            return None;
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &c.stats;
        Some(crate::metrics::LeaseGauges {
            node_id: c.node_id.to_string(),
            held: c.held_count() as u64,
            live_nodes: get(&s.live_nodes),
            fair_share: get(&s.fair_share),
            acquired: get(&s.acquired),
            lost: get(&s.lost),
            released: get(&s.released),
            renewal_failures: get(&s.tick_failures),
            webhooks: self.sends_webhooks(),
        })
    }

    /// Wake an account's pacer only if it runs (so a pacer whose lease went
    /// away sees it and stops).
    fn nudge(&self, account_id: &str) {
        let pacers = self.inner.pacers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pacer) = pacers.get(account_id) {
            pacer.notify.notify_one();
        }
    }

    /// Wait until no hand-off is in flight (after shutdown was signalled),
    /// or `timeout` passes.
    pub async fn drain(&self, timeout: Duration) {
        let wait = async {
            loop {
                let done = self.inner.handoff_done.notified();
                if self.handoffs_in_flight() == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    /// Whether the engine runs (has not been told to stop), for `/readyz`.
    pub fn is_running(&self) -> bool {
        !self.shutting_down()
    }

    fn shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Resolves when the server starts stopping.
    async fn stopping(&self) {
        let mut shutdown = self.inner.shutdown.clone();
        let _ = shutdown.wait_for(|stop| *stop).await;
    }

    /// Sleep on tokio's timer (back-offs), ending early at shutdown.
    async fn pause(&self, duration: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.stopping() => {}
        }
    }

    fn store_error(&self, what: &str, account_id: &str, error: &StoreError) {
        self.inner
            .stats
            .store_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(account = %account_id, error = %error, "{what}; backing off");
    }

    async fn recover_and_watch(self) {
        match self.inner.store.read(attempts::accounts_with_pending).await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(accounts = ids.len(), "resuming accounts with pending sends");
                }
                for id in ids {
                    self.wake(&id);
                }
            }
            Err(e) => tracing::error!(error = %e, "could not scan pending sends at start-up"),
        }
        let mut since = self.inner.clock.now_ms();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = self.stopping() => return,
            }
            // Overlap the window: a change is stamped before it commits.
            let now = self.inner.clock.now_ms();
            let window_start = since.min(now) - 5_000;
            since = now;
            let clustered = matches!(self.inner.leases, Leases::Cluster(_));
            match self
                .inner
                .store
                .read(move |c| {
                    let changed: Vec<String> = admin::accounts_changed_since(c, window_start)?
                        .into_iter()
                        .map(|a| a.id)
                        .collect();
                    let (mut pending, mut unleased) = (Vec::new(), false);
                    if clustered {
                        // Sends another node answered 202 for accounts held
                        // here; accounts nobody holds (new, or a dead node's).
                        pending = attempts::accounts_with_pending(c)?;
                        unleased = leases::any_free(c, now)?;
                    }
                    Ok((changed, pending, unleased))
                })
                .await
            {
                Ok((changed, pending, unleased)) => {
                    for id in changed {
                        self.wake(&id);
                    }
                    for id in pending {
                        self.wake_for_pending(&id);
                    }
                    if unleased {
                        self.inner.tick_now.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "account watcher read failed"),
            }
        }
    }

    /// Run the account's pacer, starting it again if it panics; unlist it
    /// when it ends for good, so that the next wake starts a new one.
    async fn supervise(self, account_id: String, pacer: Arc<Pacer>) {
        loop {
            let run = AssertUnwindSafe(self.run_pacer(&account_id, &pacer));
            match run.catch_unwind().await {
                Ok(()) => break,
                Err(_) => {
                    self.inner
                        .stats
                        .pacer_panics
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(account = %account_id, "the account's pacer panicked; restarting it");
                    if self.shutting_down() {
                        break;
                    }
                    self.pause(PANIC_RESTART_DELAY).await;
                }
            }
        }
        let mut pacers = self.inner.pacers.lock().unwrap_or_else(|e| e.into_inner());
        if pacers
            .get(&account_id)
            .is_some_and(|p| Arc::ptr_eq(p, &pacer))
        {
            pacers.remove(&account_id);
        }
    }

    async fn run_pacer(&self, account_id: &str, pacer: &Pacer) {
        let notify = &pacer.notify;
        let mut backoff = Backoff::new();
        loop {
            if self.shutting_down() || !self.inner.leases.holds(account_id) {
                return;
            }
            let id = account_id.to_string();
            let looked = self
                .inner
                .store
                .read(move |c| Ok((admin::get_account(c, &id)?, attempts::next_pending(c, &id)?)))
                .await;
            let (account, next) = match looked {
                Ok((Some(account), next)) => (account, next),
                Ok((None, _)) => return,
                Err(e) => {
                    self.store_error("pacer read failed", account_id, &e);
                    self.pause(backoff.next()).await;
                    continue;
                }
            };
            let view = AccountView {
                status: account.status(),
                offline_since: account.offline_since.or(
                    // Stamped by every status change since migration 4.
                    (account.status() != AccountStatus::Connected)
                        .then_some(account.status_changed_at),
                ),
                next_send_at: account.next_send_at,
            };
            let now = self.inner.clock.now_ms();
            let outcome = match decide(now, view, next.is_some(), self.inner.pacing.offline_grace) {
                Decision::Idle => {
                    pacer.state.store(IDLE, Ordering::SeqCst);
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = self.stopping() => {}
                    }
                    pacer.state.store(BUSY, Ordering::SeqCst);
                    Ok(())
                }
                Decision::WaitUntil(at) => {
                    // Only with pending sends (else `Idle`).
                    pacer.state.store(WAITING, Ordering::SeqCst);
                    tokio::select! {
                        _ = self.inner.clock.sleep_until(at) => {}
                        _ = notify.notified() => {}
                        _ = self.stopping() => {}
                    }
                    pacer.state.store(BUSY, Ordering::SeqCst);
                    Ok(())
                }
                Decision::FailOffline => self.fail_offline(&account).await,
                Decision::SendNow => match next {
                    Some(attempt) => self.hand_off(account, attempt).await,
                    None => Ok(()),
                },
            };
            match outcome {
                Ok(()) => backoff.reset(),
                Err(Interrupted::Shutdown | Interrupted::LeaseLost) => return,
                Err(Interrupted::Store(e)) => {
                    // Not cut short by wakes: the account watcher wakes
                    // pacers every half second, which would be a spin.
                    self.store_error("a pacer write failed", account_id, &e);
                    self.pause(backoff.next()).await;
                }
            }
        }
    }

    /// Hold the account's lease for one hand-off or offline failure.
    fn hold(&self, account_id: &str) -> Result<cluster::Hold<'_>, Interrupted> {
        self.inner
            .leases
            .begin(account_id)
            .ok_or(Interrupted::LeaseLost)
    }

    async fn fail_offline(&self, account: &Account) -> Result<(), Interrupted> {
        let hold = self.hold(&account.id)?;
        let fence = hold.fence();
        let message = format!(
            "the WhatsApp account {} stayed offline for more than {}",
            account.phone,
            crate::config::format_duration(self.inner.pacing.offline_grace)
        );
        let (id, now) = (account.id.clone(), self.inner.clock.now_ms());
        let failed = self
            .inner
            .store
            .write(move |c| {
                leases::guard(c, &id, fence)?;
                attempts::fail_pending_of_account(c, &id, WHATSAPP_NOT_CONNECTED, &message, now)
            })
            .await
            .map_err(Interrupted::from)?;
        crate::metrics::attempts_finished(
            &account.id,
            AttemptStatus::Failed,
            Some(WHATSAPP_NOT_CONNECTED),
            failed as u64,
        );
        tracing::info!(account = %account.id, failed, "offline grace ran out");
        Ok(())
    }

    /// The lease loop (PostgreSQL): every third of a TTL, renew, take up to
    /// the fair share, give up what is above it; pacers start and stop with
    /// the leases. Ends at shutdown (see [`Engine::leave`]).
    async fn run_leases(self) {
        let Leases::Cluster(cluster) = &self.inner.leases else {
            return;
        };
        let ttl_ms = cluster.ttl.as_millis() as i64;
        let mut first = true;
        loop {
            let left = cluster.ticking.lock().await;
            if *left {
                return;
            }
            let started = std::time::Instant::now();
            let (node, now) = (cluster.node_id.clone(), self.inner.clock.now_ms());
            let tick = self
                .inner
                .store
                .write(move |c| leases::tick(c, &node, now, ttl_ms, first))
                .await;
            match tick {
                Ok(tick) => {
                    first = false;
                    let changes = cluster.apply(&tick, started);
                    for id in &changes.lost {
                        tracing::warn!(account = %id, "lease lost to another node");
                        self.nudge(id);
                    }
                    self.inner.drivers.leases_lost(&changes.lost);
                    if !tick.taken.is_empty() {
                        tracing::info!(
                            accounts = tick.taken.len(),
                            held = tick.held.len(),
                            nodes = tick.live_nodes,
                            "took over account leases"
                        );
                    }
                    for id in &changes.gained {
                        self.wake(id);
                    }
                    self.inner
                        .drivers
                        .leases_gained(&cluster.fences_of(&changes.gained));
                    let shed = cluster.shed(tick.fair_share);
                    if !shed.is_empty() {
                        for lease in &shed {
                            self.nudge(&lease.account_id);
                        }
                        tracing::info!(
                            accounts = shed.len(),
                            fair_share = tick.fair_share,
                            "giving leases to other nodes"
                        );
                        self.release(shed).await;
                    }
                }
                Err(e) => {
                    cluster.stats.tick_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "could not renew leases; they lapse here before they expire");
                }
            }
            drop(left);
            tokio::select! {
                _ = tokio::time::sleep(cluster.period()) => {}
                _ = self.inner.tick_now.notified() => {}
                _ = self.stopping() => break,
            }
        }
    }

    /// After the hand-offs drained at shutdown: give every lease up and
    /// remove this node's heartbeat, so the other nodes take over at their
    /// next tick instead of after the TTL.
    pub async fn leave(&self) {
        let Leases::Cluster(cluster) = &self.inner.leases else {
            return;
        };
        // After any tick in progress, and before the next could start.
        let mut left = cluster.ticking.lock().await;
        *left = true;
        self.release(cluster.release_all()).await;
        let node = cluster.node_id.clone();
        let _ = self
            .inner
            .store
            .write(move |c| leases::leave(c, &node))
            .await;
    }

    /// Give leases up: the drivers close what they hold open for those
    /// accounts first (waiting at most a sixth of a TTL, while the leases
    /// still cover their last writes), then the leases are released.
    async fn release(&self, shed: Vec<leases::Held>) {
        let Leases::Cluster(cluster) = &self.inner.leases else {
            return;
        };
        let ids: Vec<String> = shed
            .iter()
            .filter(|l| l.account_id != leases::WEBHOOKS)
            .map(|l| l.account_id.clone())
            .collect();
        self.inner
            .drivers
            .leases_releasing(&ids, cluster.ttl / 6)
            .await;
        let node = cluster.node_id.clone();
        if let Err(e) = self
            .inner
            .store
            .write(move |c| leases::release(c, &node, &shed))
            .await
        {
            tracing::warn!(error = %e, "could not give leases up; they expire instead");
        }
    }
}
