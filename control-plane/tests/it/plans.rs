//! Rollout plans on simulated time: the canary template's three days in milliseconds, a
//! guardrail breach, a restart mid-plan, and the actions and refusals around them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use control_plane::clock::ManualClock;
use control_plane::model::audit::AuditQuery;
use control_plane::model::plan::MAX_SECONDS;
use control_plane::service::metrics::sums;
use control_plane::service::plans::tick;
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{ADMIN, READ, RELEASE, Server, reopen, start_with};

pub(crate) fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

pub(crate) fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

async fn simulated() -> (Server, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    (start_with(clock.clone()).await, clock)
}

/// A local webhook receiver: every payload it gets comes out of the channel.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(payload): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(payload);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, receiver)
}

/// The next webhook message's text, waiting up to ten seconds for it.
async fn next_message(messages: &mut mpsc::UnboundedReceiver<Value>) -> String {
    let payload = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("a webhook message within 10 s")
        .expect("the receiver is up");
    payload["text"].as_str().unwrap().to_owned()
}

async fn add_webhook(server: &Server, name: &str, url: &str) {
    let body = json!({"name": name, "url": url, "environment": "production"});
    let (status, answer) =
        server.call(Method::POST, "/api/v1/webhooks", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Reports `requests` and `errors` for `on`, and for a healthy `off` (19 times the requests,
/// 0.5% of them errors), in the current minute.
pub(crate) async fn report(server: &Server, requests: u64, errors: u64) {
    let control = 19 * requests;
    let body = json!({"counters": [
        {"flag": "checkout-v2", "variant": "on", "counts": {"requests": requests, "errors": errors}},
        {"flag": "checkout-v2", "variant": "off", "counts": {"requests": control, "errors": control / 200}},
    ]});
    let path = "/api/v1/environments/production/metrics";
    let (status, answer) = server.call(Method::POST, path, Some(READ), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

pub(crate) async fn start_canary(server: &Server) -> Value {
    let body = json!({
        "flag": "checkout-v2", "environment": "production", "template": "canary",
        "rationale": "checkout v2 passed QA"
    });
    let (status, answer) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

pub(crate) async fn plan(server: &Server, id: i64) -> Value {
    let (status, plan) =
        server.call(Method::GET, &format!("/api/v1/plans/{id}"), Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    plan
}

pub(crate) fn stage_name(plan: &Value) -> &str {
    plan["stages"][plan["stage"].as_u64().unwrap() as usize]["name"].as_str().unwrap()
}

pub(crate) async fn decisions(server: &Server) -> Vec<Value> {
    let path = "/api/v1/decisions?flag=checkout-v2&env=production";
    let (status, decisions) = server.call(Method::GET, path, Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK);
    decisions.as_array().unwrap().clone()
}

/// How many of 2,000 users get `on` in production now.
async fn exposed(server: &Server) -> usize {
    let mut on = 0;
    let body = server
        .get(crate::support::SNAPSHOT, Some(READ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let engine = flag_core::Engine::from_json(&body).unwrap();
    for user in 0..2000 {
        let context = flag_core::Context::with_targeting_key(format!("user-{user}"));
        if engine.evaluate("checkout-v2", &context).variant == Some("on") {
            on += 1;
        }
    }
    on
}

#[tokio::test]
async fn the_canary_reaches_everyone_on_schedule() {
    let (server, clock) = simulated().await;
    let (url, mut messages) = receiver().await;
    add_webhook(&server, "releases", &url).await;
    let started = start_canary(&server).await;
    let id = started["plan"]["id"].as_i64().unwrap();
    assert!((60..=140).contains(&exposed(&server).await), "about 5% of 2,000");
    let start_message = next_message(&mut messages).await;
    assert!(start_message.starts_with("🚀 `checkout-v2` Canary Rollout Starting in production"));
    assert!(start_message.contains("- +1d: 25% of traffic (expanded) if metrics healthy"));

    // Each step is taken at its time and not a minute before.
    let steps = [
        (59, "canary"),
        (60, "assessed"),
        (24 * 60 - 1, "assessed"),
        (24 * 60, "expanded"),
        (3 * 24 * 60 - 1, "expanded"),
        (3 * 24 * 60, "ga"),
    ];
    for (at, expected) in steps {
        clock.set(t0() + minutes(at));
        report(&server, 2000, 10).await;
        tick(server.service()).await.unwrap();
        assert_eq!(stage_name(&plan(&server, id).await), expected, "at +{at} min");
    }
    assert_eq!(exposed(&server).await, 2000);
    // GA holds for no time: the next tick completes the plan.
    tick(server.service()).await.unwrap();
    assert_eq!(plan(&server, id).await["status"], "completed");
    assert_eq!(tick(server.service()).await.unwrap(), 0, "a completed plan does nothing more");

    let log = decisions(&server).await;
    let summary: Vec<(&str, &str, &str, &str)> = log
        .iter()
        .map(|d| {
            let stage = d["to_stage"].as_str().unwrap_or("-");
            (
                d["at"].as_str().unwrap(),
                d["action"].as_str().unwrap(),
                stage,
                d["decided_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("2026-11-22T10:00:00.000Z", "start", "canary", "ana"),
            ("2026-11-22T11:00:00.000Z", "advance", "assessed", "schedule"),
            ("2026-11-23T10:00:00.000Z", "advance", "expanded", "schedule"),
            ("2026-11-25T10:00:00.000Z", "advance", "ga", "schedule"),
            ("2026-11-25T10:00:00.000Z", "complete", "-", "schedule"),
        ]
    );
    // Each automatic step records the guardrail as it read it.
    let reading = &log[1]["metrics"][0];
    assert_eq!(reading["criterion"], "errors/requests <= control + 0.5 points (95% sequential)");
    assert_eq!(reading["verdict"], "pass");
    let difference = &reading["difference"];
    assert!(difference["estimate"].as_f64().unwrap().abs() < 1e-9, "{difference}");
    assert!(difference["high"].as_f64().unwrap() <= 0.005, "{difference}");
    assert_eq!(
        (reading["variant"]["metric"].as_u64(), reading["variant"]["per"].as_u64()),
        (Some(20), Some(4000))
    );

    let expected = ["📈", "📈", "📈", "✅ `checkout-v2` Successfully Deployed in production"];
    for prefix in expected {
        let message = next_message(&mut messages).await;
        assert!(message.starts_with(prefix), "{message}");
    }

    let csv = server
        .get("/api/v1/decisions?flag=checkout-v2&format=csv", Some(RELEASE))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let body = csv.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 5);
    let row: Vec<&str> = rows[2].iter().take(5).collect();
    assert_eq!(
        [row[0], row[1], row[2], row[4]],
        ["2026-11-23T10:00:00.000Z", "assessed→expanded", "proceed", "schedule"]
    );
    assert!(rows[2][3].starts_with("held 23h at `assessed` and healthy"), "{}", &rows[2][3]);
    // The readings in words: the rate, the rise over control with its interval, the verdict.
    let readings = &rows[2][12];
    assert!(
        readings.starts_with("errors/requests <= control + 0.5 points (95% sequential): 0.5% (")
            && readings.contains("0 points over control (-0.")
            && readings.ends_with("points), pass"),
        "{readings}"
    );
}

#[tokio::test]
async fn an_error_spike_at_25_percent_kills_the_flag_in_one_tick() {
    let (server, clock) = simulated().await;
    let (url, mut messages) = receiver().await;
    add_webhook(&server, "releases", &url).await;
    // A webhook that never answers delays nothing.
    add_webhook(&server, "broken", "http://127.0.0.1:9/hook").await;
    let id = start_canary(&server).await["plan"]["id"].as_i64().unwrap();
    for at in [60, 24 * 60] {
        clock.set(t0() + minutes(at));
        report(&server, 4000, 20).await;
        tick(server.service()).await.unwrap();
    }
    assert_eq!(stage_name(&plan(&server, id).await), "expanded");

    clock.set(t0() + minutes(24 * 60 + 5));
    report(&server, 1500, 300).await;
    assert_eq!(tick(server.service()).await.unwrap(), 1);

    let after = plan(&server, id).await;
    assert_eq!(after["status"], "rolled_back");
    assert_eq!(server.evaluate("user-1").await.1, flag_core::Reason::Disabled);
    let log = decisions(&server).await;
    let last = log.last().unwrap();
    assert_eq!(
        (&last["decided_by"], &last["decision"], &last["action"]),
        (&json!("guardrail"), &json!("rollback"), &json!("rollback"))
    );
    assert_eq!(last["from_stage"], "expanded");
    assert!(
        last["rationale"].as_str().unwrap().contains(
            "errors/requests <= control + 0.5 points (95% sequential) (rose 5.32 points over control ("
        ),
        "{last}"
    );
    // The stage's reading holds its healthy first minute and this minute's spike.
    let reading = &last["metrics"][0];
    assert_eq!(
        (reading["variant"]["metric"].as_u64(), reading["variant"]["per"].as_u64()),
        (Some(320), Some(5500))
    );
    assert_eq!(reading["verdict"], "fail");
    let kill = server.audit(AuditQuery::default()).await.into_iter().last().unwrap();
    assert_eq!((kill.actor.as_str(), kill.action.as_str()), ("guardrail", "flag.kill"));

    // A new plan minutes later is judged on its own exposure, not on the spike before it.
    clock.set(t0() + minutes(24 * 60 + 10));
    let again = start_canary(&server).await["plan"]["id"].as_i64().unwrap();
    report(&server, 2000, 10).await;
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let restarted = plan(&server, again).await;
    assert_eq!(restarted["status"], "running");
    assert_eq!(restarted["readings"][0]["variant"]["per"], 2000);

    let mut texts = Vec::new();
    while !texts.iter().any(|text: &String| text.starts_with("🔄")) {
        texts.push(next_message(&mut messages).await);
    }
    let issue = texts
        .iter()
        .find(|t| t.starts_with("⚠️ Release Issue Detected"))
        .expect("the issue message");
    assert!(issue.contains("guardrail breached at stage `expanded`"), "{issue}");
    let rollback = texts.last().unwrap();
    assert!(rollback.contains("we're rolling back `checkout-v2` in production"), "{rollback}");
    assert!(rollback.contains("everyone gets `off`; the flag is killed"), "{rollback}");
}

#[tokio::test]
async fn a_failing_webhook_is_retried_until_it_takes_the_message() {
    let (server, _) = simulated().await;
    let (sender, mut received) = mpsc::unbounded_channel();
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = axum::Router::new().route(
        "/flaky",
        axum::routing::post(move |axum::Json(payload): axum::Json<Value>| {
            let (sender, failures) = (sender.clone(), failures.clone());
            async move {
                // The first two attempts fail.
                if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let _ = sender.send(payload);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/flaky", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    add_webhook(&server, "flaky", &url).await;

    start_canary(&server).await;
    let text = next_message(&mut received).await;
    assert!(text.starts_with("🚀"), "{text}");
    // The delivery is recorded just after the receiver took it.
    let recorded = async {
        loop {
            let (_, webhooks) =
                server.call(Method::GET, "/api/v1/webhooks", Some(RELEASE), None).await;
            if webhooks[0]["pending"] == 0 {
                return webhooks;
            }
            tokio::task::yield_now().await;
        }
    };
    let webhooks = tokio::time::timeout(Duration::from_secs(10), recorded)
        .await
        .expect("recorded within 10 s");
    assert_eq!(webhooks[0]["failed"], 0);
    assert_eq!(webhooks[0]["last_error"], "the webhook answered 503 Service Unavailable");
}

#[tokio::test]
async fn a_plan_continues_on_time_after_a_restart() {
    let (server, clock) = simulated().await;
    let id = start_canary(&server).await["plan"]["id"].as_i64().unwrap();
    clock.set(t0() + minutes(30));
    report(&server, 4000, 20).await;
    let dir = Arc::clone(&server.dir);
    drop(server);

    // A new process on the same database, 40 minutes later: the metrics it was sent before
    // count, and the stage's hold still ends an hour after the start.
    clock.set(t0() + minutes(40));
    let server = reopen(dir, clock.clone()).await;
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let waiting = plan(&server, id).await;
    assert_eq!(
        (stage_name(&waiting), waiting["hold_until"].as_str()),
        ("canary", Some("2026-11-22T11:00:00.000Z"))
    );
    assert_eq!(waiting["readings"][0]["verdict"], "pass");
    clock.set(t0() + minutes(60));
    assert_eq!(tick(server.service()).await.unwrap(), 1);
    assert_eq!(stage_name(&plan(&server, id).await), "assessed");
    assert_eq!(decisions(&server).await.last().unwrap()["at"], "2026-11-22T11:00:00.000Z");
}

#[tokio::test]
async fn actions_approvals_holds_and_rollbacks() {
    let (server, clock) = simulated().await;
    let lead = server.token("lead", "release", None).await;
    let stages = json!([
        {"name": "five", "percent": 5, "hold_seconds": 60},
        {"name": "half", "percent": 50, "advance": {"tokens": ["ana", "lead"], "approvals": 2}},
        {"name": "all", "percent": 100}
    ]);
    let body = json!({"flag": "checkout-v2", "environment": "production", "stages": stages, "rationale": "go"});
    let (status, started) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["plan"]["id"].as_i64().unwrap();
    let act = |action: &'static str, token: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    &format!("/api/v1/plans/{id}/{action}"),
                    Some(token),
                    Some(body),
                )
                .await
        }
    };
    let why = json!({"rationale": "looks good"});

    // A second active plan for the flag is refused.
    let (status, _) = server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Nor can the flag be archived under it.
    let (status, answer) =
        server.call(Method::DELETE, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    // The admin is not among the named tokens that may enter `half`.
    let (status, answer) = act("advance", ADMIN, why.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // Without approvals, the schedule waits even once the hold has passed.
    clock.set(t0() + minutes(2));
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let (status, answer) = act("advance", RELEASE, why.clone()).await;
    assert_eq!((status, answer["decision"]["action"].as_str()), (StatusCode::OK, Some("approve")));
    assert_eq!(stage_name(&answer["plan"]), "five");
    let (status, _) = act("advance", RELEASE, why.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "one approval per token");
    let lead: &'static str = Box::leak(lead.into_boxed_str());
    let (status, answer) = act("advance", lead, why.clone()).await;
    assert_eq!((status, stage_name(&answer["plan"])), (StatusCode::OK, "half"));
    assert!(exposed(&server).await.abs_diff(1000) < 100, "about half of 2,000");

    // Hold: the scheduler leaves the plan alone; only one of two concurrent holds wins.
    let (first, second) =
        tokio::join!(act("hold", RELEASE, why.clone()), act("hold", RELEASE, why.clone()));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY]);
    clock.set(t0() + minutes(10));
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let (status, _) = act("resume", RELEASE, why.clone()).await;
    assert_eq!(status, StatusCode::OK);

    // Rolling back to the previous stage holds the plan there; `to: kill` ends it.
    let (status, answer) = act("rollback", RELEASE, json!({"rationale": "latency"})).await;
    assert_eq!(
        (status, stage_name(&answer["plan"]), answer["plan"]["status"].as_str()),
        (StatusCode::OK, "five", Some("held"))
    );
    assert!((60..=140).contains(&exposed(&server).await));
    let (status, answer) =
        act("rollback", RELEASE, json!({"rationale": "still slow", "to": "kill"})).await;
    assert_eq!((status, answer["plan"]["status"].as_str()), (StatusCode::OK, Some("rolled_back")));
    assert_eq!(server.evaluate("user-1").await.1, flag_core::Reason::Disabled);
    let (status, _) = act("resume", RELEASE, why.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an ended plan takes no actions");
    for path in ["/api/v1/plans/999", "/api/v1/plans/first"] {
        let (status, answer) = server.call(Method::GET, path, Some(RELEASE), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }
    let actions: Vec<String> =
        decisions(&server).await.iter().map(|d| d["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, ["start", "approve", "advance", "hold", "resume", "rollback", "rollback"]);
}

#[tokio::test]
async fn a_manual_kill_holds_the_running_plan() {
    let (server, clock) = simulated().await;
    let id = start_canary(&server).await["plan"]["id"].as_i64().unwrap();
    let kill = "/api/v1/environments/production/flags/checkout-v2/kill";
    let (status, _) =
        server.call(Method::POST, kill, Some(RELEASE), Some(json!({"reason": "pager"}))).await;
    assert_eq!(status, StatusCode::OK);
    let held = plan(&server, id).await;
    assert_eq!(held["status"], "held");
    let last = decisions(&server).await.pop().unwrap();
    assert_eq!(
        (last["decided_by"].as_str(), last["rationale"].as_str()),
        (Some("ana"), Some("the flag was killed: pager"))
    );
    // Healthy and past its hold, a held plan does not advance, and the flag stays killed.
    clock.set(t0() + minutes(61));
    report(&server, 2000, 0).await;
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    assert_eq!(server.evaluate("user-1").await.1, flag_core::Reason::Disabled);
}

#[tokio::test]
async fn a_plan_never_lowers_exposure_and_owns_the_audience_while_it_runs() {
    let (server, _) = simulated().await;
    let rollout = "/api/v1/environments/production/flags/checkout-v2/rollout";
    let half = json!({"percent": 50, "stage": "beta", "reason": "half"});
    let (status, answer) = server.call(Method::PUT, rollout, Some(RELEASE), Some(half)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // The canary's 5% would take the feature from 45% of users: refused, naming the stage that
    // matches, and nothing changes.
    let before = server.observable_state().await;
    let canary = json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": "x"});
    let (status, problem) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(canary.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("already serves `on` to 50% in `production`"), "{detail}");
    assert!(detail.contains("start at stage `ga` (100%) with `start_at`"), "{detail}");
    assert_eq!(server.observable_state().await, before);
    let mut unknown = canary.clone();
    unknown["start_at"] = json!("nope");
    let (status, problem) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(unknown)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(server.observable_state().await, before);

    // Explicit stages that reach 50% start there.
    let stages = json!({"flag": "checkout-v2", "environment": "production", "rationale": "x",
        "stages": [{"name": "few", "percent": 5}, {"name": "half", "percent": 50}, {"name": "all", "percent": 100}],
        "start_at": "half"});
    let (status, started) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(stages)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["plan"]["id"].as_i64().unwrap();
    assert_eq!(stage_name(&started["plan"]), "half");
    assert_eq!(started["decision"]["to_stage"], "half");

    // A second plan names the first.
    let (status, problem) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(canary)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("plan {id} (running, at stage `half`)")),
        "{problem}"
    );

    // While it runs, exposure by hand is refused; held, it is taken, without the plan's label.
    let before = server.observable_state().await;
    let manual = json!({"percent": 60, "reason": "by hand"});
    let (status, problem) =
        server.call(Method::PUT, rollout, Some(RELEASE), Some(manual.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&format!("plan {id} is rolling out")),
        "{problem}"
    );
    let state = json!({"enabled": true, "fallthrough": {"variant": "on"}, "reason": "all at once"});
    let path = "/api/v1/environments/production/flags/checkout-v2";
    let (status, problem) = server.call(Method::PUT, path, Some(RELEASE), Some(state)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(server.observable_state().await, before);
    let hold = format!("/api/v1/plans/{id}/hold");
    let (status, answer) =
        server.call(Method::POST, &hold, Some(RELEASE), Some(json!({"rationale": "look"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, changed) = server.call(Method::PUT, rollout, Some(RELEASE), Some(manual)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let rollout = &changed["state"]["fallthrough"]["rollout"];
    assert_eq!((rollout["percent"].as_u64(), rollout.get("stage")), (Some(60_000), None));
}

#[tokio::test]
async fn bad_plans_and_metric_batches_change_nothing() {
    let (server, _) = simulated().await;
    let staging_reader = server.token("staging-app", "read", Some("staging")).await;
    let before = server.observable_state().await;
    let plan_errors = [
        (
            json!({"flag": "checkout-v2", "environment": "production", "template": "blue-green", "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no template `blue-green`",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "give either `template` or `stages`",
        ),
        (
            json!({"flag": "nope", "environment": "production", "template": "canary", "rationale": "x"}),
            StatusCode::NOT_FOUND,
            "flag `nope` not found",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": " "}),
            StatusCode::BAD_REQUEST,
            "`rationale` must not be empty",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "template": "four-stage", "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs `internal_segment`",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "template": "four-stage", "parameters": {"internal_segment": "staff", "alpha_segment": "friends"}, "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`stages[0].segments`: no segment `staff`",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "stages": [{"name": "a", "percent": 5}, {"name": "b", "percent": 1}], "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`stages[1].percent`: 1% is below the previous stage's 5%",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "stages": [{"name": "a", "guardrails": [{"metric": "errors"}]}], "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`stages[0].guardrails[0]` needs `max_increase` or `max_relative_increase` (sequential), or `max`, `min` or `max_vs_control` (fixed)",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "stages": [{"name": "a"}], "variant": "maybe", "rationale": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no variant `maybe`",
        ),
        (
            json!({"flag": "checkout-v2", "environment": "production", "stages": [{"name": "a", "colour": "red"}], "rationale": "x"}),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
    ];
    for (body, status, detail) in plan_errors {
        let (got, answer) =
            server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body.clone())).await;
        assert_eq!(got, status, "{body} gave {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(detail), "{answer} lacks {detail}");
    }
    let path = "/api/v1/environments/production/metrics";
    let counter = |flag: &str, variant: &str, metric: &str, count: u64| json!({"flag": flag, "variant": variant, "counts": {metric: count}});
    let too_many: Vec<Value> =
        (0..1001).map(|_| counter("checkout-v2", "on", "requests", 1)).collect();
    let batch_errors = [
        (
            json!({"counters": [counter("nope", "on", "requests", 1)]}),
            READ,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"counters": [counter("checkout-v2", "on", "requests", 1), counter("checkout-v2", "maybe", "requests", 1)]}),
            READ,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"counters": [counter("checkout-v2", "on", "Errors!", 1)]}),
            READ,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"counters": [counter("checkout-v2", "on", "errors", 2_000_000_000)]}),
            READ,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"counters": [counter("checkout-v2", "on", "errors", 1)], "extra": 1}),
            READ,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"counters": [{"flag": "checkout-v2", "variant": "on", "counts": {"errors": -1}}]}),
            READ,
            StatusCode::BAD_REQUEST,
        ),
        (json!({"counters": too_many}), READ, StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"counters": []}), READ, StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"counters": [counter("checkout-v2", "on", "errors", 1)]}),
            "rg_unknown",
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (body, token, status) in batch_errors {
        let (got, answer) = server.call(Method::POST, path, Some(token), Some(body.clone())).await;
        assert_eq!(got, status, "{answer}");
    }
    let (got, _) = server
        .call(
            Method::POST,
            path,
            Some(&staging_reader),
            Some(json!({"counters": [counter("checkout-v2", "on", "errors", 1)]})),
        )
        .await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    let counts = sums(server.service(), "production", "checkout-v2", MAX_SECONDS).await.unwrap();
    assert!(counts.is_empty(), "nothing was counted: {counts:?}");

    // A retried batch counts once.
    let batch =
        json!({"batch": "app-1:42", "counters": [counter("checkout-v2", "on", "requests", 7)]});
    for counted in [true, false] {
        let (got, answer) = server.call(Method::POST, path, Some(READ), Some(batch.clone())).await;
        assert_eq!((got, answer["counted"].as_bool()), (StatusCode::ACCEPTED, Some(counted)));
    }
    let path = "/api/v1/environments/production/metrics?flag=checkout-v2&window_seconds=600";
    let (status, sums) = server.call(Method::GET, path, Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sums["variants"], json!({"on": {"requests": 7}}));
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn a_sequential_guardrail_rolls_back_a_significant_rise_and_its_reading_says_how_sure() {
    let (server, clock) = simulated().await;
    let guardrail = json!({"metric": "errors", "max_increase": 0.005});
    // Without the sample-ratio check, a skewed split below is not read.
    let body = json!({
        "flag": "checkout-v2", "environment": "production", "template": "canary",
        "parameters": {"guardrails": [guardrail]}, "sample_ratio_check": false,
        "rationale": "checkout v2 passed QA"
    });
    let (status, answer) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["plan"]["id"].as_i64().unwrap();

    // `on` at 0.5% against the control's 0.5%: within the tolerance with 95% confidence, so the
    // guardrail passes and the plan advances.
    clock.set(t0() + minutes(60));
    report(&server, 20_000, 100).await;
    report_split(&server, 100, 9_900).await;
    tick(server.service()).await.unwrap();
    let advanced = plan(&server, id).await;
    assert_eq!(stage_name(&advanced), "assessed");
    assert_eq!(advanced["sample_ratio_check"], false);

    // `on` errs at 3%: over the stage so far (it began at minute 60, whose report counts) 1.75%
    // against the control's 0.5%, a rise beyond half a point, and significant.
    clock.set(t0() + minutes(70));
    report(&server, 20_000, 600).await;
    tick(server.service()).await.unwrap();
    let after = plan(&server, id).await;
    assert_eq!(after["status"], "rolled_back");
    let last = decisions(&server).await.last().unwrap().clone();
    let reading = &last["metrics"][0];
    assert_eq!(reading["verdict"], "fail");
    assert_eq!(reading["criterion"], "errors/requests <= control + 0.5 points (95% sequential)");
    let difference = &reading["difference"];
    assert!((difference["estimate"].as_f64().unwrap() - 0.0125).abs() < 1e-9, "{reading}");
    assert!(difference["low"].as_f64().unwrap() > 0.005, "{reading}");
    assert_eq!(difference["tolerated"], 0.005);
    assert_eq!(difference["confidence"], 0.95);
    assert!(
        last["rationale"].as_str().unwrap().contains("rose 1.25 points over control"),
        "{last}"
    );

    // Over time, for the chart: the stage's readings minute by minute until the rollback.
    let path = format!("/api/v1/plans/{id}/readings");
    let (status, history) = server.call(Method::GET, &path, Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let points = history.as_array().unwrap();
    assert_eq!(points.len(), 11, "minutes 60 to 70: {history}");
    assert_eq!(
        (points[0]["at"].as_str(), points[10]["at"].as_str()),
        (Some("2026-11-22T11:00:00.000Z"), Some("2026-11-22T11:10:00.000Z"))
    );
    let verdicts: Vec<&str> =
        points.iter().map(|p| p["readings"][0]["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts[..10], ["pass"; 10]);
    assert_eq!(points[10]["readings"][0], *reading, "the last point is the rollback's reading");
    let (status, _) =
        server.call(Method::GET, "/api/v1/plans/99/readings", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Reports how many of the rollout's evaluations served `on` and `off` in the current minute.
async fn report_split(server: &Server, on: u64, off: u64) {
    let body = json!({"counters": [
        {"flag": "checkout-v2", "variant": "on", "counts": {"rollout_evaluations": on}},
        {"flag": "checkout-v2", "variant": "off", "counts": {"rollout_evaluations": off}},
    ]});
    let path = "/api/v1/environments/production/metrics";
    let (status, answer) = server.call(Method::POST, path, Some(READ), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

#[tokio::test]
async fn a_sample_ratio_mismatch_holds_the_plan_once_and_a_resume_checks_afresh() {
    let (server, clock) = simulated().await;
    let (url, mut messages) = receiver().await;
    add_webhook(&server, "releases", &url).await;
    let id = start_canary(&server).await["plan"]["id"].as_i64().unwrap();
    assert!(next_message(&mut messages).await.starts_with("🚀"));

    // The stage's first two minutes still carry the previous split's counts: not read.
    clock.set(t0() + minutes(1));
    report_split(&server, 10_000, 0).await;
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let readings = plan(&server, id).await["readings"].clone();
    assert_eq!(readings.as_array().map(Vec::len), Some(1), "the guardrail only: {readings}");

    // 3.5% of 10,000 where the stage gives `on` 5%: a mismatch at 99.9%.
    clock.set(t0() + minutes(3));
    report_split(&server, 350, 9_650).await;
    assert_eq!(tick(server.service()).await.unwrap(), 1);
    let held = plan(&server, id).await;
    assert_eq!((held["status"].as_str(), stage_name(&held)), (Some("held"), "canary"));
    let reading = &held["readings"][1];
    assert_eq!(reading["criterion"], "sample ratio: on gets 5% of rollout_evaluations");
    assert_eq!(reading["verdict"], "fail");
    assert_eq!(
        (reading["variant"]["metric"].as_u64(), reading["variant"]["per"].as_u64()),
        (Some(350), Some(10_000))
    );
    let share = &reading["share"];
    assert_eq!((share["expected"].as_f64(), share["estimate"].as_f64()), (Some(0.05), Some(0.035)));
    assert!(
        share["high"].as_f64().unwrap() < 0.05 && share["low"].as_f64().unwrap() > 0.0,
        "{share}"
    );
    assert_eq!(share["confidence"], 0.999);
    // The flag is untouched: users keep what they are served.
    assert_eq!(server.evaluate("user-1").await.1, flag_core::Reason::Split);

    let last = decisions(&server).await.pop().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["decision"].as_str(), last["decided_by"].as_str()),
        (Some("hold"), Some("hold"), Some("guardrail"))
    );
    let rationale = last["rationale"].as_str().unwrap();
    assert!(
        rationale.starts_with(
            "sample-ratio mismatch at stage `canary`: `on` got 3.5% of the rollout's evaluations ("
        ),
        "{rationale}"
    );
    assert_eq!(last["metrics"][1]["share"]["estimate"], 0.035);
    let csv = server.get("/api/v1/decisions?format=csv", Some(RELEASE)).send().await.unwrap();
    let csv = csv.text().await.unwrap();
    assert!(
        csv.contains("sample ratio: on gets 5% of rollout_evaluations: 3.5% (350 of 10000), 2.")
            && csv.contains("at 99.9%, FAIL (`on` got 3.5%"),
        "{csv}"
    );
    let issue = next_message(&mut messages).await;
    assert!(issue.starts_with("⚠️ Release Issue Detected"), "{issue}");
    assert!(issue.contains("Status: Investigating: the plan is held"), "{issue}");
    assert!(issue.contains("cannot be trusted"), "{issue}");

    // Held, it is not held again each minute: no transition, so no second message.
    clock.set(t0() + minutes(4));
    assert_eq!(tick(server.service()).await.unwrap(), 0);

    // Resumed, the check counts afresh, after its settling minutes.
    let resume = format!("/api/v1/plans/{id}/resume");
    let body = json!({"rationale": "a misreporting app was fixed"});
    let (status, answer) = server.call(Method::POST, &resume, Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    clock.set(t0() + minutes(7));
    report_split(&server, 500, 9_500).await;
    assert_eq!(tick(server.service()).await.unwrap(), 0);
    let running = plan(&server, id).await;
    assert_eq!(running["status"], "running");
    let reading = &running["readings"][1];
    assert_eq!(
        (reading["verdict"].as_str(), reading["variant"]["per"].as_u64()),
        (Some("pass"), Some(10_000))
    );
}

#[tokio::test]
async fn a_plan_on_a_flag_with_imported_bucketing_keeps_it_and_its_cohorts_nest() {
    let (server, _) = simulated().await;
    let unleash =
        json!({"name": "unleash", "group_id": "checkout-v2", "stickiness": ["targetingKey"]});
    let state = json!({"enabled": true, "reason": "as it was in Unleash",
        "fallthrough": {"rollout": {"algorithm": unleash, "percent": 0, "inside": "on", "outside": "off"}}});
    let path = "/api/v1/environments/production/flags/checkout-v2";
    let (status, answer) = server.call(Method::PUT, path, Some(RELEASE), Some(state)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let body = json!({"flag": "checkout-v2", "environment": "production", "auto_advance": false,
        "stages": [{"name": "ten", "percent": 10}, {"name": "fifty", "percent": 50}],
        "rationale": "the imported rollout goes on"});
    let (status, answer) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["plan"]["id"].as_i64().unwrap();

    let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let mut at_ten = Vec::new();
    for user in &users {
        let on = server.evaluate(user).await.0.as_deref() == Some("on");
        // Unleash's flexible rollout: murmur3("checkout-v2:{user}", 0) % 100 + 1 <= 10.
        let unleash_says =
            flag_core::bucketing::unleash_normalized("checkout-v2", user, 100, 0) <= 10;
        assert_eq!(on, unleash_says, "{user} at 10%");
        if on {
            at_ten.push(user.clone());
        }
    }
    assert!((140..260).contains(&at_ten.len()), "{} of 2,000 at 10%", at_ten.len());

    let advance = format!("/api/v1/plans/{id}/advance");
    let (status, answer) = server
        .call(Method::POST, &advance, Some(RELEASE), Some(json!({"rationale": "fine"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let fallthrough = &answer["plan"];
    assert_eq!(stage_name(fallthrough), "fifty");
    let (_, flag) =
        server.call(Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    let rollout = &flag["environments"]["production"]["fallthrough"]["rollout"];
    assert_eq!(
        (rollout["percent"].as_u64(), &rollout["algorithm"]["name"]),
        (Some(50_000), &json!("unleash"))
    );
    let mut at_fifty = 0;
    for user in &users {
        let on = server.evaluate(user).await.0.as_deref() == Some("on");
        assert!(on || !at_ten.contains(user), "{user} was inside at 10% but not at 50%");
        at_fifty += usize::from(on);
    }
    assert!((900..1100).contains(&at_fifty), "{at_fifty} of 2,000 at 50%");
}
