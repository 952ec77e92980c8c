//! The daily limit: per account per UTC day, atomic with the insert.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn the_send_after_the_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| c.pacing.daily_limit = 3).await;
    for i in 0..3 {
        let r = app
            .send(
                &app.owner.token,
                Some(&format!("k{i}")),
                &text_to("+917999709798"),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let r = app
        .send(&app.owner.token, None, &text_to("+917999709798"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    // Replays of accepted sends still answer and do not count.
    let replay = app
        .send(&app.owner.token, Some("k0"), &text_to("+917999709798"))
        .await;
    assert_eq!(replay.status, 202);
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    // The limit is per account: the member's account still has room.
    assert_eq!(
        app.send(&app.member.token, None, &text_to("+917999709798"))
            .await
            .status,
        202
    );
    // Workspace mode counts against the chosen sender's account.
    let r = app
        .send(
            &app.admin.token,
            None,
            &json!({"from": app.owner.phone, "to": "+917999709798", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 4);
}

#[tokio::test]
async fn concurrent_requests_cannot_overshoot_the_limit() {
    let app = spawn_app_with(|c| c.pacing.daily_limit = 5).await;
    let body = text_to("+917999709798");
    let replies =
        futures_util::future::join_all((0..30).map(|_| app.send(&app.owner.token, None, &body)))
            .await;
    let accepted = replies.iter().filter(|r| r.status == 202).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((accepted, limited), (5, 25));
    assert_eq!(app.count("SELECT count(*) FROM send_attempts").await, 5);
}
