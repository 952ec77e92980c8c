//! `GET /metrics`: who may scrape, that the text is Prometheus' format with
//! the spec's families, and that the gauges come from the database.

use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use whatan::domain::token::{self, TokenKind};
use whatan::store::admin;

use crate::helpers::*;

/// A metrics token for the app's owner.
async fn metrics_token(app: &TestApp) -> String {
    let owner = app.owner.user.clone();
    app.store
        .write(move |c| {
            let t = token::generate(TokenKind::Metrics);
            admin::create_token(c, &owner, TokenKind::Metrics, Some("prometheus"), None, &t)?;
            Ok(t.secret)
        })
        .await
        .unwrap()
}

async fn get_metrics(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

/// Scrape and parse with a Prometheus text-format parser.
async fn scrape(app: &TestApp, token: &str) -> Scrape {
    Scrape::parse(
        scrape_text(app, token)
            .await
            .lines()
            .map(|l| Ok(l.to_string())),
    )
    .expect("the scrape parses")
}

/// The scrape as text. `prometheus-parse` splits labels with a regex that
/// stops at the first `}`, so samples whose label values hold braces (the
/// route templates) are checked on the text.
async fn scrape_text(app: &TestApp, token: &str) -> String {
    let response = get_metrics(app, Some(token)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn value_of(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("not a single value: {other:?}"),
    }
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn get(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample =
        find(scrape, metric, labels).unwrap_or_else(|| panic!("no {metric} with {labels:?}"));
    value_of(&sample.value)
}

/// Scrape until `done` holds (the counters move just after the commit the
/// status endpoint already shows).
async fn scrape_until(app: &TestApp, token: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(app, token).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_answer_only_a_metrics_token_and_only_owners_may_hold_one() {
    let app = spawn_app().await;
    let metrics = metrics_token(&app).await;

    assert_eq!(get_metrics(&app, None).await.status(), 401);
    assert_eq!(
        get_metrics(&app, Some(&app.owner.token)).await.status(),
        401
    );
    assert_eq!(
        get_metrics(&app, Some("whatan_metrics_nope"))
            .await
            .status(),
        401
    );
    assert_eq!(get_metrics(&app, Some(&metrics)).await.status(), 200);
    let send_with_metrics = app.send(&metrics, None, &text_to("+917999709798")).await;
    assert_eq!(send_with_metrics.status, 401);

    let member = app.member.user.clone();
    let refused = app
        .store
        .write(move |c| {
            let t = token::generate(TokenKind::Metrics);
            admin::create_token(c, &member, TokenKind::Metrics, None, None, &t)
        })
        .await;
    assert!(refused.unwrap_err().to_string().contains("only owners"));
}

#[tokio::test]
async fn a_scrape_after_sends_has_every_family_of_the_spec_with_its_type() {
    let app = spawn_app().await;
    let metrics = metrics_token(&app).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app
            .send(&app.owner.token, None, &text_to("+917999709798"))
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["sendAttemptId"].as_str().unwrap().to_string());
    }
    let failed = app
        .send(&app.owner.token, None, &text_to("+917999000000"))
        .await;
    let failed_id = failed.json()["sendAttemptId"].as_str().unwrap().to_string();
    for id in &ids {
        app.wait_for_status(&app.owner.token, id, |b| b["status"] == "read")
            .await;
    }
    app.wait_for_status(&app.owner.token, &failed_id, |b| b["status"] == "failed")
        .await;
    let account = app.owner.account.clone().unwrap();
    let acc = account.as_str();

    let s = scrape_until(&app, &metrics, |s| {
        find(
            s,
            "whatan_attempts_finished_total",
            &[("account", acc), ("status", "read")],
        )
        .is_some_and(|x| value_of(&x.value) == 3.0)
    })
    .await;

    // Types as the parser reads them from the `# TYPE` lines.
    let typed = |metric: &str, want: fn(&Value) -> bool| {
        let sample = find(&s, metric, &[]).unwrap_or_else(|| panic!("no family {metric}"));
        assert!(want(&sample.value), "{metric}: {:?}", sample.value);
    };
    let counter = |v: &Value| matches!(v, Value::Counter(_));
    let gauge = |v: &Value| matches!(v, Value::Gauge(_));
    let histogram = |v: &Value| matches!(v, Value::Histogram(_));
    typed("whatan_http_requests_total", counter);
    typed("whatan_attempts_accepted_total", counter);
    typed("whatan_attempts_finished_total", counter);
    typed("whatan_attempts_queued", gauge);
    typed("whatan_attempt_oldest_queued_age_seconds", gauge);
    typed("whatan_account_state", gauge);
    typed("whatan_daily_sends", gauge);
    typed("whatan_http_request_duration_seconds", histogram);
    typed("whatan_store_commit_duration_seconds", histogram);
    typed("whatan_store_batch_size", histogram);

    assert_eq!(
        get(&s, "whatan_attempts_accepted_total", &[("account", acc)]),
        4.0
    );
    for status in ["accepted", "delivered", "read"] {
        let labels = [("account", acc), ("status", status), ("error_code", "")];
        assert_eq!(get(&s, "whatan_attempts_finished_total", &labels), 3.0);
    }
    let failed_labels = [
        ("account", acc),
        ("status", "failed"),
        ("error_code", "recipient_not_found"),
    ];
    assert_eq!(
        get(&s, "whatan_attempts_finished_total", &failed_labels),
        1.0
    );
    assert_eq!(get(&s, "whatan_attempts_queued", &[("account", acc)]), 0.0);
    let oldest = [("account", acc)];
    assert_eq!(
        get(&s, "whatan_attempt_oldest_queued_age_seconds", &oldest),
        0.0
    );
    assert_eq!(get(&s, "whatan_daily_sends", &[("account", acc)]), 4.0);
    let state = |st: &str| {
        let labels = [("account", acc), ("driver", "sandbox"), ("state", st)];
        get(&s, "whatan_account_state", &labels)
    };
    assert_eq!(state("connected"), 1.0);
    assert_eq!(state("disconnected"), 0.0);

    // Routes are templates, never raw paths.
    let text = scrape_text(&app, &metrics).await;
    let count = |sample: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample}"))
    };
    let by_id =
        r#"whatan_http_requests_total{method="GET",route="/api/v1/messages/{id}",status="200"}"#;
    assert!(count(by_id) >= 4.0);
    let sends =
        r#"whatan_http_requests_total{method="POST",route="/api/v1/messages/send",status="202"}"#;
    assert!(count(sends) >= 4.0);
    assert!(text.contains(
        r#"whatan_http_request_duration_seconds_bucket{route="/api/v1/messages/send",le="+Inf"}"#
    ));
    assert!(!ids.iter().any(|id| text.contains(id.as_str())));

    // Leases: only a node that shares a PostgreSQL database has them; this
    // one is alone there, so it holds every account: its fair share.
    if crate::database::postgres_server().is_some() {
        typed("whatan_leases_held", gauge);
        typed("whatan_cluster_nodes", gauge);
        typed("whatan_lease_fair_share", gauge);
        typed("whatan_leases_acquired_total", counter);
        typed("whatan_leases_lost_total", counter);
        typed("whatan_leases_released_total", counter);
        typed("whatan_lease_renewal_failures_total", counter);
        let held = get(&s, "whatan_leases_held", &[]);
        assert!(held >= 1.0);
        assert_eq!(get(&s, "whatan_lease_fair_share", &[]), held);
        assert_eq!(get(&s, "whatan_cluster_nodes", &[]), 1.0);
        typed("whatan_webhook_dispatcher", gauge);
        assert_eq!(
            get(&s, "whatan_webhook_dispatcher", &[]),
            1.0,
            "alone, it sends them"
        );
        assert_eq!(get(&s, "whatan_leases_lost_total", &[]), 0.0);
    } else {
        assert!(
            !text.contains("whatan_leases_held"),
            "no leases on the file"
        );
    }
}

#[tokio::test]
async fn the_gauges_are_read_from_the_database_after_a_restart() {
    // One send goes out at once; the account's next slot is an hour away.
    let app = spawn_app_with(|c| {
        c.pacing.min_delay = Duration::from_secs(3600);
        c.pacing.max_delay = Duration::from_secs(3600);
    })
    .await;
    let metrics = metrics_token(&app).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = app
            .send(&app.owner.token, None, &text_to("+917999709798"))
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["sendAttemptId"].as_str().unwrap().to_string());
    }
    app.wait_for_status(&app.owner.token, &ids[0], |b| b["status"] != "queued")
        .await;

    let app = app.restart().await;
    let waiting = app
        .count("SELECT count(*) FROM send_attempts WHERE status IN ('queued', 'sending')")
        .await;
    assert_eq!(waiting, 3);
    let s = scrape(&app, &metrics).await;
    let account = app.owner.account.clone().unwrap();
    let acc = [("account", account.as_str())];
    assert_eq!(get(&s, "whatan_attempts_queued", &acc), waiting as f64);
    assert_eq!(get(&s, "whatan_daily_sends", &acc), 4.0);
    assert!(get(&s, "whatan_attempt_oldest_queued_age_seconds", &acc) >= 0.0);
    let idle = [("account", app.member.account.as_deref().unwrap())];
    assert_eq!(get(&s, "whatan_attempts_queued", &idle), 0.0);
}

/// The reference parser: Python's `prometheus_client`, reading the scrape
/// from stdin; prints `{"types": {family: type}, "routes": [...]}`.
const PYTHON_PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print(json.dumps({
    "types": {f.name: f.type for f in families},
    "routes": sorted({s.labels["route"] for f in families for s in f.samples if "route" in s.labels}),
}))
"#;

/// Parse with Python's `prometheus_client`, or `None` (with a message on
/// stderr, outside the test's capture) when it is not installed. `.ci/run`
/// installs it and sets `WHATAN_TEST_REQUIRE_ALL=1`, which makes its absence
/// a failure.
fn python_parse(text: &str) -> Option<serde_json::Value> {
    if !crate::external_tool::python_module_or_skip(
        "prometheus_client",
        "prometheus-client",
        "parsing /metrics with Python's prometheus_client",
    ) {
        return None;
    }
    let out = crate::external_tool::python_with_stdin(&["-c", PYTHON_PARSE], text.as_bytes());
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn the_scrape_parses_with_the_python_prometheus_client() {
    let app = spawn_app().await;
    let metrics = metrics_token(&app).await;
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["sendAttemptId"].as_str().unwrap().to_string();
    // Past the hand-off: the sandbox moves on to delivered and read within
    // milliseconds, so "accepted" alone can be missed by a poll.
    app.wait_for_status(&app.owner.token, &id, |b| {
        ["accepted", "delivered", "read"].contains(&b["status"].as_str().unwrap_or(""))
    })
    .await;
    let text = scrape_text(&app, &metrics).await;
    let Some(parsed) = python_parse(&text) else {
        return;
    };
    // prometheus_client names a counter family without its `_total`.
    let expected = [
        ("whatan_http_requests", "counter"),
        ("whatan_http_request_duration_seconds", "histogram"),
        ("whatan_attempts_queued", "gauge"),
        ("whatan_attempt_oldest_queued_age_seconds", "gauge"),
        ("whatan_attempts_accepted", "counter"),
        ("whatan_attempts_finished", "counter"),
        ("whatan_account_state", "gauge"),
        ("whatan_daily_sends", "gauge"),
        ("whatan_store_commit_duration_seconds", "histogram"),
        ("whatan_store_batch_size", "histogram"),
    ];
    for (family, kind) in expected {
        assert_eq!(parsed["types"][family], kind, "{family} in {parsed}");
    }
    let routes = parsed["routes"].as_array().unwrap();
    assert!(routes.contains(&serde_json::json!("/api/v1/messages/{id}")));
    assert!(routes.contains(&serde_json::json!("/api/v1/messages/send")));
}
