//! Prometheus metrics (`operations.md`, "Metrics"): the counters and
//! histograms this process keeps in memory, and the rendering of a scrape,
//! whose gauges are read from the database at that moment (so they are
//! right after a restart).
//!
//! Encoded with the `prometheus` crate (tikv/rust-prometheus): its
//! `TextEncoder` writes the text format 0.0.4 the spec names, where a
//! counter's `# TYPE` line carries its full name (`whatan_http_requests_total`).
//! `prometheus-client` only writes OpenMetrics, whose counter families drop
//! the `_total` suffix from `# TYPE`; read as 0.0.4 those samples would be
//! untyped.
//!
//! The in-memory metrics are process-wide (like Prometheus' default
//! registry): the writer thread, the engine and the HTTP layer record into
//! them without being handed a handle. One `serve` runs per process; tests
//! that run several servers in one process only ever compare deltas.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{AccountStatus, AttemptStatus, DriverKind};

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every state `whatan_account_state` reports, 1 for the current one.
const ACCOUNT_STATES: [AccountStatus; 5] = [
    AccountStatus::Connected,
    AccountStatus::Connecting,
    AccountStatus::Disconnected,
    AccountStatus::LoggedOut,
    AccountStatus::Banned,
];

struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    attempts_accepted: IntCounterVec,
    attempts_finished: IntCounterVec,
    commit_duration: Histogram,
    batch_size: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // Names and help are constants: registration cannot fail.
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let histogram = |opts: HistogramOpts| {
            let h = Histogram::with_opts(opts).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "whatan_http_request_duration_seconds",
                "Time to answer an HTTP request.",
            ),
            &["route"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique");
        Metrics {
            http_requests: counter(
                "whatan_http_requests_total",
                "HTTP requests answered.",
                &["method", "route", "status"],
            ),
            http_duration,
            attempts_accepted: counter(
                "whatan_attempts_accepted_total",
                "Send attempts answered 202 (not replays).",
                &["account"],
            ),
            attempts_finished: counter(
                "whatan_attempts_finished_total",
                "Send attempts reaching accepted, delivered, read or failed.",
                &["account", "status", "error_code"],
            ),
            // 0.5 ms to about 16 s: an fsync is milliseconds on an SSD.
            commit_duration: histogram(
                HistogramOpts::new(
                    "whatan_store_commit_duration_seconds",
                    "One group commit of the database writer, fsync included.",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            ),
            // 1 to 2048, the writer's largest batch.
            batch_size: histogram(
                HistogramOpts::new(
                    "whatan_store_batch_size",
                    "Writes per group commit of the database writer.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
            ),
            registry,
        }
    }
}

/// The HTTP methods counted by name; any other is counted as `other`, so a
/// client cannot grow the label set.
fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
        _ => "other",
    }
}

/// One answered request; `route` is a template (`/api/v1/messages/{id}`).
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let m = &*METRICS;
    m.http_requests
        .with_label_values(&[method_label(method), route, &status.to_string()])
        .inc();
    m.http_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
}

/// A send answered 202 (a new attempt, not a replay).
pub fn attempt_accepted(account: &str) {
    METRICS
        .attempts_accepted
        .with_label_values(&[account])
        .inc();
}

/// `count` attempts of `account` reached `status` (with `error_code` when
/// failed). Called after the commit that moved them.
pub fn attempts_finished(
    account: &str,
    status: AttemptStatus,
    error_code: Option<&str>,
    count: u64,
) {
    if count == 0 || matches!(status, AttemptStatus::Queued | AttemptStatus::Sending) {
        return;
    }
    let code = if status == AttemptStatus::Failed {
        error_code.unwrap_or("")
    } else {
        ""
    };
    METRICS
        .attempts_finished
        .with_label_values(&[account, status.as_str(), code])
        .inc_by(count);
}

/// One group commit of `writes` jobs that took `elapsed`.
pub fn store_commit(elapsed: Duration, writes: usize) {
    let m = &*METRICS;
    m.commit_duration.observe(elapsed.as_secs_f64());
    m.batch_size.observe(writes as f64);
}

/// What the database says about one account at scrape time.
#[derive(Debug, Clone)]
pub struct AccountGauges {
    pub account_id: String,
    pub driver: DriverKind,
    pub status: AccountStatus,
    /// Attempts queued or sending.
    pub waiting: i64,
    /// `created_at` of the oldest waiting attempt.
    pub oldest_waiting_at: Option<i64>,
    /// Sends counted today (UTC) against the daily limit.
    pub daily_sends: i64,
}

/// What a node sharing a PostgreSQL database says about its leases.
#[derive(Debug, Clone, Default)]
pub struct LeaseGauges {
    pub node_id: String,
    pub held: u64,
    pub live_nodes: u64,
    pub fair_share: u64,
    pub acquired: u64,
    pub lost: u64,
    pub released: u64,
    pub renewal_failures: u64,
    /// This node sends the status webhooks.
    pub webhooks: bool,
}

/// The whole scrape: the in-memory families, the gauges of `accounts`, and
/// this node's leases when it shares a PostgreSQL database.
pub fn render(
    accounts: &[AccountGauges],
    leases: Option<&LeaseGauges>,
    now_ms: i64,
) -> Result<String, String> {
    let m = &*METRICS;
    let gauges = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, String> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(|e| e.to_string())?;
        gauges
            .register(Box::new(g.clone()))
            .map_err(|e| e.to_string())?;
        Ok(g)
    };
    let waiting = gauge(
        "whatan_attempts_queued",
        "Attempts waiting (queued or sending) now.",
        &["account"],
    )?;
    let oldest = prometheus::GaugeVec::new(
        Opts::new(
            "whatan_attempt_oldest_queued_age_seconds",
            "Age of the oldest waiting attempt (0 if none).",
        ),
        &["account"],
    )
    .map_err(|e| e.to_string())?;
    gauges
        .register(Box::new(oldest.clone()))
        .map_err(|e| e.to_string())?;
    let state = gauge(
        "whatan_account_state",
        "1 for the account's current state, 0 for the others.",
        &["account", "driver", "state"],
    )?;
    let daily = gauge(
        "whatan_daily_sends",
        "Sends counted today (UTC) against the daily limit.",
        &["account"],
    )?;
    for a in accounts {
        let id = a.account_id.as_str();
        waiting.with_label_values(&[id]).set(a.waiting);
        let age_ms = a.oldest_waiting_at.map_or(0, |at| (now_ms - at).max(0));
        oldest.with_label_values(&[id]).set(age_ms as f64 / 1000.0);
        for s in ACCOUNT_STATES {
            state
                .with_label_values(&[id, a.driver.as_str(), s.as_str()])
                .set(i64::from(s == a.status));
        }
        daily.with_label_values(&[id]).set(a.daily_sends);
        // Every account's counters show from the first scrape, at 0.
        m.attempts_accepted.with_label_values(&[id]);
        for s in [
            AttemptStatus::Accepted,
            AttemptStatus::Delivered,
            AttemptStatus::Read,
        ] {
            m.attempts_finished.with_label_values(&[id, s.as_str(), ""]);
        }
    }
    if let Some(l) = leases {
        let node = [l.node_id.as_str()];
        for (name, help, value) in [
            (
                "whatan_leases_held",
                "Account leases this node holds now.",
                l.held,
            ),
            (
                "whatan_cluster_nodes",
                "Nodes that renewed within a lease TTL, this one included.",
                l.live_nodes,
            ),
            (
                "whatan_lease_fair_share",
                "The most leases a node should hold: accounts over live nodes, rounded up.",
                l.fair_share,
            ),
            (
                "whatan_webhook_dispatcher",
                "1 on the node that sends the status webhooks (one at a time), 0 on the others.",
                u64::from(l.webhooks),
            ),
        ] {
            gauge(name, help, &["node"])?
                .with_label_values(&node)
                .set(value as i64);
        }
        for (name, help, value) in [
            (
                "whatan_leases_acquired_total",
                "Leases this node took (new accounts, a dead or stopping node's).",
                l.acquired,
            ),
            (
                "whatan_leases_lost_total",
                "Leases this node held that moved to another node before it gave them up.",
                l.lost,
            ),
            (
                "whatan_leases_released_total",
                "Leases this node gave up to balance.",
                l.released,
            ),
            (
                "whatan_lease_renewal_failures_total",
                "Lease renewals that failed (the database could not take the write).",
                l.renewal_failures,
            ),
        ] {
            let c =
                IntCounterVec::new(Opts::new(name, help), &["node"]).map_err(|e| e.to_string())?;
            gauges
                .register(Box::new(c.clone()))
                .map_err(|e| e.to_string())?;
            c.with_label_values(&node).inc_by(value);
        }
    }
    let mut families = m.registry.gather();
    families.extend(gauges.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}
