//! Round trips for segments, flag definitions and states, environments, tokens and metrics.

use control_plane::model::audit::AuditQuery;
use flag_core::{Context, Engine, Reason};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, READ, RELEASE, SNAPSHOT, Server, start};

const STATE: &str = "/api/v1/environments/production/flags/checkout-v2";

async fn engine(server: &Server) -> Engine {
    let snapshot = server.get(SNAPSHOT, Some(READ)).send().await.unwrap().bytes().await.unwrap();
    Engine::from_json(&snapshot).unwrap()
}

fn staff() -> Value {
    json!({"key": "staff", "included": ["ana", "ben"], "conditions": [
        {"attribute": "email", "op": "ends_with", "values": ["@rollgate.dev"]}
    ]})
}

#[tokio::test]
async fn a_segment_targets_a_flag_and_cannot_be_archived_while_used() {
    let server = start().await;
    let (status, created) =
        server.call(Method::POST, "/api/v1/segments", Some(RELEASE), Some(staff())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["included"], json!(["ana", "ben"]));

    let state = json!({
        "enabled": true,
        "rules": [{"segments": ["staff"], "serve": {"variant": "on"}}],
        "fallthrough": {"variant": "off"},
        "reason": "dogfood with staff"
    });
    let (status, answer) = server.call(Method::PUT, STATE, Some(RELEASE), Some(state)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let engine = engine(&server).await;
    let staff_member = engine.evaluate("checkout-v2", &Context::with_targeting_key("ben"));
    assert_eq!((staff_member.variant, staff_member.reason), (Some("on"), Reason::TargetingMatch));
    let by_email = Context::with_targeting_key("zoe").with("email", "zoe@rollgate.dev");
    assert_eq!(engine.evaluate("checkout-v2", &by_email).variant, Some("on"));
    assert_eq!(
        engine.evaluate("checkout-v2", &Context::with_targeting_key("eve")).variant,
        Some("off")
    );

    let before = server.observable_state().await;
    let (status, problem) =
        server.call(Method::DELETE, "/api/v1/segments/staff", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["path"].as_str().unwrap().starts_with("flags.checkout-v2.rules[0]"),
        "{problem}"
    );
    assert_eq!(server.observable_state().await, before);

    // Stale If-Match on a segment: 412, nothing changes.
    let response = server
        .send(Method::PUT, "/api/v1/segments/staff", Some(RELEASE))
        .header("if-match", "\"7\"")
        .json(&json!({"key": "staff", "included": ["ana"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(server.observable_state().await, before);

    // Current If-Match: the segment shrinks, and ben is no longer staff.
    let response = server
        .send(Method::PUT, "/api/v1/segments/staff", Some(RELEASE))
        .header("if-match", "\"1\"")
        .json(&json!({"key": "staff", "included": ["ana"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let ben = engine_for(&server, "ben").await;
    assert_eq!(ben, Some("off".to_owned()));

    // Once no rule uses it, it can go.
    let state = json!({"enabled": true, "fallthrough": {"variant": "off"}});
    assert_eq!(server.call(Method::PUT, STATE, Some(RELEASE), Some(state)).await.0, StatusCode::OK);
    let (status, _) = server
        .call(Method::DELETE, "/api/v1/segments/staff?reason=done", Some(RELEASE), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.call(Method::GET, "/api/v1/segments/staff", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audit =
        server.audit(AuditQuery { segment: Some("staff".into()), ..AuditQuery::default() }).await;
    let actions: Vec<_> = audit.iter().map(|record| record.action.as_str()).collect();
    assert_eq!(actions, ["segment.create", "segment.update", "segment.archive"]);
}

async fn engine_for(server: &Server, user: &str) -> Option<String> {
    let engine = engine(server).await;
    engine.evaluate("checkout-v2", &Context::with_targeting_key(user)).variant.map(String::from)
}

#[tokio::test]
async fn bad_segments_and_states_get_paths_into_the_request() {
    let server = start().await;
    let before = server.observable_state().await;
    let cases = [
        (
            Method::PUT,
            STATE,
            json!({"enabled": true, "fallthrough": {"variant": "maybe"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "fallthrough.variant",
        ),
        (
            Method::PUT,
            STATE,
            json!({"enabled": true, "rules": [{"segments": ["ghosts"], "serve": {"variant": "on"}}], "fallthrough": {"variant": "off"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules[0].segments[0]",
        ),
        (
            Method::POST,
            "/api/v1/segments",
            json!({"key": "odd", "conditions": [{"attribute": "age", "op": "gt", "values": ["old"]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "conditions[0]",
        ),
        (
            Method::POST,
            "/api/v1/segments",
            json!({"key": "x", "members": []}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::PUT,
            "/api/v1/flags/checkout-v2",
            json!({"key": "other", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::PUT,
            "/api/v1/environments/qa/flags/checkout-v2",
            json!({"enabled": true, "fallthrough": {"variant": "off"}}),
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (i, (method, path, body, status, path_prefix)) in cases.into_iter().enumerate() {
        let (actual, problem) = server.call(method, path, Some(RELEASE), Some(body)).await;
        assert_eq!(actual, status, "case {i}: {problem}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let at = problem["path"].as_str().unwrap();
            assert!(at.starts_with(path_prefix), "case {i}: path {at}, wanted {path_prefix}");
        }
    }
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn a_flag_definition_is_updated_with_if_match_and_archived() {
    let server = start().await;
    let (_, record) =
        server.call(Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    let mut definition = json!({
        "key": "checkout-v2", "type": "boolean",
        "variants": record["variants"], "off_variant": "off", "salt": "checkout-2027"
    });
    let put = |definition: &Value, etag: &str| {
        server
            .send(Method::PUT, "/api/v1/flags/checkout-v2", Some(RELEASE))
            .header("if-match", etag)
            .json(definition)
    };
    let response = put(&definition, "\"1\"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["salt"], "checkout-2027");
    assert_eq!(
        put(&definition, "\"1\"").send().await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );

    // Dropping the variant the state serves is refused, with the culprit named.
    definition["variants"] = json!({"on": true});
    definition["off_variant"] = json!("on");
    let state = json!({"enabled": true, "fallthrough": {"variant": "off"}});
    let (status, _) = server.call(Method::PUT, STATE, Some(RELEASE), Some(state)).await;
    assert_eq!(status, StatusCode::OK);
    let before = server.observable_state().await;
    let response = put(&definition, "*").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("off"), "{problem}");
    assert_eq!(server.observable_state().await, before);

    let response = server
        .send(Method::DELETE, "/api/v1/flags/checkout-v2?reason=shipped", Some(RELEASE))
        .header("if-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED, "the state PUT moved it on");
    let (status, _) = server
        .call(Method::DELETE, "/api/v1/flags/checkout-v2?reason=shipped", Some(RELEASE), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(engine(&server).await.flag_keys().count(), 0);
    let (status, _) =
        server.call(Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, flags) = server.call(Method::GET, "/api/v1/flags", Some(RELEASE), None).await;
    assert_eq!(flags, json!([]));
    let new = json!({"key": "checkout-v2", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"});
    let (status, _) = server.call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(new)).await;
    assert_eq!(status, StatusCode::CONFLICT, "an archived key stays taken");
}

#[tokio::test]
async fn admins_manage_environments_and_tokens() {
    let server = start().await;
    let (status, environment) = server
        .call(Method::POST, "/api/v1/environments", Some(ADMIN), Some(json!({"name": "qa"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{environment}");
    assert_eq!(environment, json!({"name": "qa", "version": 1, "allowed_origins": []}));
    let (status, _) = server
        .call(Method::POST, "/api/v1/environments", Some(ADMIN), Some(json!({"name": "qa"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, environments) =
        server.call(Method::GET, "/api/v1/environments", Some(RELEASE), None).await;
    let names: Vec<_> =
        environments.as_array().unwrap().iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, [json!("production"), json!("qa"), json!("staging")]);

    let secret = server.token("qa-edge", "read", Some("qa")).await;
    assert!(secret.starts_with("rg_") && secret.len() == 35);
    let qa = server.get("/api/v1/environments/qa/snapshot", Some(&secret)).send().await.unwrap();
    assert_eq!(qa.status(), StatusCode::OK, "usable at once, and qa has every flag");
    let engine = Engine::from_json(&qa.bytes().await.unwrap()).unwrap();
    assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2"]);

    let (_, tokens) = server.call(Method::GET, "/api/v1/tokens", Some(ADMIN), None).await;
    let listed = tokens.as_array().unwrap().iter().find(|t| t["name"] == "qa-edge").unwrap();
    assert_eq!((&listed["scope"], &listed["environment"]), (&json!("read"), &json!("qa")));
    assert!(!tokens.to_string().contains(&secret[3..]), "secrets are never listed");
    assert!(listed.get("hash").is_none());

    let cases = [
        (
            json!({"name": "x", "scope": "release", "environment": "qa"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": "x", "scope": "read", "environment": "nowhere"}), StatusCode::NOT_FOUND),
        (json!({"name": "x", "scope": "root"}), StatusCode::BAD_REQUEST),
        (json!({"name": "qa-edge", "scope": "read"}), StatusCode::CONFLICT),
        (json!({"name": "bad name", "scope": "read"}), StatusCode::BAD_REQUEST),
    ];
    for (i, (body, status)) in cases.into_iter().enumerate() {
        let (actual, problem) =
            server.call(Method::POST, "/api/v1/tokens", Some(ADMIN), Some(body)).await;
        assert_eq!(actual, status, "case {i}: {problem}");
    }

    let (status, _) =
        server.call(Method::DELETE, "/api/v1/tokens/qa-edge", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let qa = server.get("/api/v1/environments/qa/snapshot", Some(&secret)).send().await.unwrap();
    assert_eq!(qa.status(), StatusCode::UNAUTHORIZED, "a deleted token stops working at once");
    let (status, _) =
        server.call(Method::DELETE, "/api/v1/tokens/qa-edge", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let actions: Vec<_> = server
        .audit(AuditQuery::default())
        .await
        .into_iter()
        .filter(|record| record.actor == "ops")
        .map(|record| record.action)
        .collect();
    assert_eq!(actions, ["environment.create", "token.create", "token.delete"]);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = start().await;
    server.get(SNAPSHOT, Some(READ)).send().await.unwrap();
    server.get(SNAPSHOT, None).send().await.unwrap();
    let response = server.get("/metrics", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let route = "route=\"/api/v1/environments/{environment}/snapshot\"";
    for status in ["200", "401"] {
        let line = text
            .lines()
            .find(|line| {
                line.starts_with("rollgate_http_requests_total{")
                    && line.contains(route)
                    && line.contains(&format!("status=\"{status}\""))
            })
            .unwrap_or_else(|| panic!("no {status} line in\n{text}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(text.contains("rollgate_snapshot_version{environment=\"production\"} 2"), "{text}");
    assert!(text.contains("rollgate_stream_subscribers 0"), "{text}");
    // The two snapshot requests, in the histogram: every bucket up to +Inf counts both at most.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|line| {
            line.starts_with("rollgate_http_request_duration_seconds_bucket{")
                && line.contains(route)
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 12, "{text}");
    assert!(buckets.windows(2).all(|pair| pair[0] <= pair[1]), "cumulative: {buckets:?}");
    assert_eq!(buckets.last(), Some(&2), "+Inf counts every request: {buckets:?}");
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn flags_carry_metadata_and_are_found_by_it() {
    let clock = crate::hardening::stopped_clock();
    let server = crate::support::start_with(clock.clone()).await;
    let banner = json!({"key": "banner", "type": "string", "variants": {"old": "Welcome", "new": "Hello!"},
        "off_variant": "old", "description": "The home page's banner", "owner": "web", "tags": ["ui", "copy"]});
    let (status, created) =
        server.call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(banner.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["owner"].clone(), created["tags"].clone()),
        (json!("web"), json!(["ui", "copy"]))
    );
    let created_at = created["created_at"].as_str().unwrap().to_owned();
    assert_eq!(created["updated_at"], created_at);

    let keys = async |query: &str| {
        let (status, flags) =
            server.call(Method::GET, &format!("/api/v1/flags{query}"), Some(RELEASE), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {flags}");
        flags
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["key"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("").await, ["banner", "checkout-v2"]);
    assert_eq!(keys("?q=HOME%20page").await, ["banner"]);
    assert_eq!(keys("?q=checkout").await, ["checkout-v2"]);
    assert_eq!(keys("?tag=ui").await, ["banner"]);
    assert_eq!(keys("?tag=u").await, Vec::<String>::new(), "whole tags only");
    assert_eq!(keys("?owner=web&tag=copy").await, ["banner"]);
    clock.advance(chrono::Duration::minutes(1));
    let rollout = json!({"percent": 10, "stage": "beta", "reason": "beta"});
    let (status, _) =
        server.call(Method::PUT, &format!("{STATE}/rollout"), Some(RELEASE), Some(rollout)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys("?stage=beta").await, ["checkout-v2"]);
    assert_eq!(keys("?stage=beta&env=production").await, ["checkout-v2"]);
    assert_eq!(keys("?stage=beta&env=staging").await, Vec::<String>::new());
    let (status, problem) =
        server.call(Method::GET, "/api/v1/flags?colour=red", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    // A change in one environment is the flag's last change.
    let (_, checkout) =
        server.call(Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(
        (checkout["created_at"].as_str(), checkout["updated_at"].as_str()),
        (Some("2026-11-22T10:00:15.000Z"), Some("2026-11-22T10:01:15.000Z"))
    );

    // Metadata that would not display or search well changes nothing.
    let before = server.observable_state().await;
    for (field, value, detail) in [
        ("tags", json!(["has space"]), "`tags[0]`"),
        ("tags", json!((0..21).map(|n| format!("t{n}")).collect::<Vec<_>>()), "`tags`: at most 20"),
        ("owner", json!("line\nbreak"), "control characters"),
        ("description", json!("x".repeat(2001)), "at most 2000 characters"),
        ("description", json!("bell\u{7}"), "no control characters"),
    ] {
        let mut changed = banner.clone();
        changed[field] = value;
        let (status, problem) =
            server.call(Method::PUT, "/api/v1/flags/banner", Some(RELEASE), Some(changed)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(detail), "{field}: {problem}");
    }
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn metric_counts_come_per_minute_for_a_chart() {
    let clock = crate::hardening::stopped_clock();
    let server = crate::support::start_with(clock.clone()).await;
    let report = async |requests: u64, errors: u64| {
        let batch = json!({"counters": [{"flag": "checkout-v2", "variant": "on", "counts": {"requests": requests, "errors": errors}}]});
        let (status, answer) = server
            .call(Method::POST, "/api/v1/environments/production/metrics", Some(READ), Some(batch))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    };
    report(100, 1).await;
    report(50, 0).await;
    clock.advance(chrono::Duration::minutes(2));
    report(200, 7).await;
    let path = "/api/v1/environments/production/metrics?flag=checkout-v2&window_seconds=3600";
    let (status, sums) =
        server.call(Method::GET, &format!("{path}&by_minute=true"), Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK, "{sums}");
    assert_eq!(sums["variants"]["on"], json!({"errors": 8, "requests": 350}));
    assert_eq!(
        sums["minutes"],
        json!([
            {"at": "2026-11-22T10:00:00.000Z", "variants": {"on": {"errors": 1, "requests": 150}}},
            {"at": "2026-11-22T10:02:00.000Z", "variants": {"on": {"errors": 7, "requests": 200}}}
        ])
    );
    let (_, plain) = server.call(Method::GET, path, Some(RELEASE), None).await;
    assert!(plain.get("minutes").is_none(), "only when asked: {plain}");
    let long = "/api/v1/environments/production/metrics?flag=checkout-v2&window_seconds=604800&by_minute=true";
    let (status, problem) = server.call(Method::GET, long, Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}
