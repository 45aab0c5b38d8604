//! The API over HTTP: round trips, scopes, ETags and bad input.

use control_plane::model::audit::AuditQuery;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN, READ, RELEASE, SNAPSHOT, start};

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let server = start().await;
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = server.get(path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn the_snapshot_is_flag_cores_format_with_its_version_as_etag() {
    let server = start().await;
    for token in [READ, RELEASE, ADMIN] {
        let response = server.get(SNAPSHOT, Some(token)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["etag"], "\"2\"");
        assert_eq!(response.headers()["content-type"], "application/json");
        let engine = flag_core::Engine::from_json(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((engine.environment(), engine.version()), ("production", 2));
        assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2"]);
    }
    let lowercase = server
        .get(SNAPSHOT, None)
        .header("authorization", format!("bearer {READ}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), StatusCode::OK, "the scheme name is case-insensitive");
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_and_a_stale_one_the_body() {
    let server = start().await;
    let fresh =
        server.get(SNAPSHOT, Some(READ)).header("if-none-match", "\"2\"").send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    assert!(fresh.bytes().await.unwrap().is_empty());
    let stale =
        server.get(SNAPSHOT, Some(READ)).header("if-none-match", "\"1\"").send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert!(!stale.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_unknown_and_malformed_tokens_get_401_problems() {
    let server = start().await;
    let requests = [
        server.get(SNAPSHOT, None),
        server.get(SNAPSHOT, Some("rg_not_a_token_we_issued")),
        server.get(SNAPSHOT, None).header("authorization", format!("Basic {READ}")),
        server.get(SNAPSHOT, None).header("authorization", "Bearer "),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 401);
        assert!(problem["detail"].as_str().unwrap().contains("bearer token"));
    }
}

#[tokio::test]
async fn an_unknown_environment_is_a_404_problem_even_for_a_valid_token() {
    let server = start().await;
    let response =
        server.get("/api/v1/environments/qa/snapshot", Some(RELEASE)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "environment `qa` not found");
    let response = server.get("/api/v1/environments/qa/snapshot", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "authentication comes before lookups");
    let response = server.get("/api/v1/environments/qa/snapshot", Some(READ)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a bound token learns nothing of others");
}

const ROLLOUT: &str = "/api/v1/environments/production/flags/checkout-v2/rollout";
const KILL: &str = "/api/v1/environments/production/flags/checkout-v2/kill";
const UNKILL: &str = "/api/v1/environments/production/flags/checkout-v2/unkill";

#[tokio::test]
async fn a_release_manager_bumps_kills_and_unkills() {
    use flag_core::Reason;
    let server = start().await;
    let response = server
        .send(reqwest::Method::PUT, ROLLOUT, Some(RELEASE))
        .json(&json!({"percent": 25, "stage": "beta", "reason": "error rate flat at 5%"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 3);
    assert_eq!(
        body["state"]["fallthrough"]["rollout"],
        json!({"percent": 25_000, "inside": "on", "outside": "off", "stage": "beta"})
    );
    // rg1: checkout-v2:user-2 is bucket 14146 (inside 25%), user-1 is 70650 (outside).
    assert_eq!(server.evaluate("user-2").await, (Some("on".into()), Reason::Split));
    assert_eq!(server.evaluate("user-1").await, (Some("off".into()), Reason::Split));

    let kill = server
        .send(reqwest::Method::POST, KILL, Some(RELEASE))
        .json(&json!({"reason": "checkout errors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kill.status(), StatusCode::OK);
    assert_eq!(server.evaluate("user-2").await, (Some("off".into()), Reason::Disabled));

    // A bump while killed keeps the kill: it only moves the percent.
    let bump = server
        .send(reqwest::Method::PUT, ROLLOUT, Some(RELEASE))
        .json(&json!({"percent": 50, "reason": "more"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bump.status(), StatusCode::OK);
    assert_eq!(server.evaluate("user-2").await, (Some("off".into()), Reason::Disabled));

    let unkill = server
        .send(reqwest::Method::POST, UNKILL, Some(ADMIN))
        .json(&json!({"reason": "fixed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unkill.status(), StatusCode::OK);
    assert_eq!(server.evaluate("user-2").await, (Some("on".into()), Reason::Split));

    let audit = server.audit(AuditQuery::default()).await;
    let actions: Vec<_> = audit
        .iter()
        .rev()
        .take(4)
        .map(|r| (r.action.as_str(), r.actor.as_str(), r.reason.as_deref().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("flag.unkill", "ops", "fixed"),
            ("flag.rollout", "ana", "more"),
            ("flag.kill", "ana", "checkout errors"),
            ("flag.rollout", "ana", "error rate flat at 5%")
        ]
    );
}

#[tokio::test]
async fn writes_need_the_release_scope() {
    let server = start().await;
    let before = server.observable_state().await;
    for (token, status) in [(None, StatusCode::UNAUTHORIZED), (Some(READ), StatusCode::FORBIDDEN)] {
        for (method, path) in [
            (reqwest::Method::PUT, ROLLOUT),
            (reqwest::Method::POST, KILL),
            (reqwest::Method::POST, UNKILL),
        ] {
            let response = server
                .send(method, path, token)
                .json(&json!({"percent": 0.001, "reason": "r"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{path} with {token:?}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
    }
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn bad_requests_get_clear_problems_and_change_nothing() {
    let server = start().await;
    let before = server.observable_state().await;
    let put = |body: reqwest::Body, path: &str| {
        server
            .send(reqwest::Method::PUT, path, Some(RELEASE))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (put("{\"percent\": 5,".into(), ROLLOUT), StatusCode::BAD_REQUEST, "EOF"),
        (
            put(r#"{"percent": 5, "reason": "x", "colour": "red"}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            put(r#"{"percent": 5}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "missing field `reason`",
        ),
        (
            put(r#"{"percent": -5, "reason": "x"}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "percent",
        ),
        (
            put(r#"{"percent": 5, "reason": "  "}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "`reason` must not be empty",
        ),
        (
            put(r#"{"percent": 100.5, "reason": "x"}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "100.5 is not a percentage from 0 to 100",
        ),
        (
            // Thousandths of a percent, as snapshots hold them: not 0.05%, but a clear error.
            put(r#"{"percent": 50000, "reason": "x"}"#.into(), ROLLOUT),
            StatusCode::BAD_REQUEST,
            "if 50000 was meant in thousandths of a percent, write 50",
        ),
        (
            put(r#"{"percent": 5, "variant": "maybe", "reason": "x"}"#.into(), ROLLOUT),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant `maybe`",
        ),
        (
            put(
                r#"{"percent": 5, "reason": "x"}"#.into(),
                "/api/v1/environments/production/flags/nope/rollout",
            ),
            StatusCode::NOT_FOUND,
            "flag `nope` not found",
        ),
        (
            put(
                r#"{"percent": 5, "reason": "x"}"#.into(),
                "/api/v1/environments/qa/flags/checkout-v2/rollout",
            ),
            StatusCode::NOT_FOUND,
            "environment `qa` not found",
        ),
        (
            put(vec![b' '; (1 << 20) + 1].into(), ROLLOUT),
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit",
        ),
        (
            server
                .send(reqwest::Method::PUT, ROLLOUT, Some(RELEASE))
                .body(r#"{"percent": 5, "reason": "x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            // `curl -X POST …/kill` with no body: the missing reason, not the missing type.
            server.send(
                reqwest::Method::POST,
                "/api/v1/environments/production/flags/checkout-v2/kill",
                Some(RELEASE),
            ),
            StatusCode::BAD_REQUEST,
            "missing field `reason`",
        ),
    ];
    for (i, (request, status, detail)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "case {i}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(detail), "case {i}: {problem}");
    }
    assert_eq!(server.observable_state().await, before, "version and audit log unchanged");
}

#[tokio::test]
async fn flags_are_created_listed_and_read_over_http() {
    let server = start().await;
    let banner = json!({"key": "new-banner", "type": "string",
                        "variants": {"old": "Welcome", "new": "Hello"}, "off_variant": "old"});
    let created = server
        .send(reqwest::Method::POST, "/api/v1/flags", Some(RELEASE))
        .json(&banner)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let record: Value = created.json().await.unwrap();
    assert_eq!(record["key"], "new-banner");
    assert_eq!(
        record["environments"]["production"],
        json!({"enabled": true, "fallthrough": {"variant": "old"}})
    );
    assert_eq!(record["environments"]["staging"], record["environments"]["production"]);

    // Both environments moved to a new version that serves the flag.
    let snapshot = server.get(SNAPSHOT, Some(READ)).send().await.unwrap();
    assert_eq!(snapshot.headers()["etag"], "\"3\"");
    let engine = flag_core::Engine::from_json(&snapshot.bytes().await.unwrap()).unwrap();
    assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2", "new-banner"]);

    let list: Value =
        server.get("/api/v1/flags", Some(RELEASE)).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        list.as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect::<Vec<_>>(),
        ["checkout-v2", "new-banner"]
    );
    let one: Value = server
        .get("/api/v1/flags/new-banner", Some(RELEASE))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one, record);
    assert_eq!(server.audit(AuditQuery::default()).await.last().unwrap().actor, "ana");
}

#[tokio::test]
async fn bad_flags_are_refused_and_change_nothing() {
    let server = start().await;
    let before = server.observable_state().await;
    let post = |body: Value, token| {
        server.send(reqwest::Method::POST, "/api/v1/flags", Some(token)).json(&body)
    };
    let flag = |key: &str, on: Value| json!({"key": key, "type": "boolean", "variants": {"on": on, "off": false}, "off_variant": "off"});
    let cases = [
        (
            post(flag("checkout-v2", json!(true)), RELEASE),
            StatusCode::CONFLICT,
            "flag `checkout-v2` already exists",
        ),
        (
            post(flag("typed", json!("yes")), RELEASE),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants.on: expected a boolean",
        ),
        (
            post(flag("has space", json!(true)), RELEASE),
            StatusCode::BAD_REQUEST,
            "flag keys are 1 to 128",
        ),
        (
            post(json!({"key": "x", "type": "boolean"}), RELEASE),
            StatusCode::BAD_REQUEST,
            "missing field `variants`",
        ),
        (post(flag("fine", json!(true)), READ), StatusCode::FORBIDDEN, "needs `release`"),
        (
            server.get("/api/v1/flags/nope", Some(RELEASE)),
            StatusCode::NOT_FOUND,
            "flag `nope` not found",
        ),
        (server.get("/api/v1/flags", Some(READ)), StatusCode::FORBIDDEN, "needs `release`"),
    ];
    for (i, (request, status, detail)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(detail), "case {i}: {problem}");
    }
    assert_eq!(server.observable_state().await, before, "version and audit log unchanged");
}

#[tokio::test]
async fn the_audit_log_answers_who_what_when_and_why() {
    let server = start().await;
    let kill = server
        .send(reqwest::Method::POST, KILL, Some(RELEASE))
        .json(&json!({"reason": "errors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kill.status(), StatusCode::OK);
    let audit = |query: &str| server.get(&format!("/api/v1/audit{query}"), Some(RELEASE)).send();

    let records: Value =
        audit("?flag=checkout-v2&env=production").await.unwrap().json().await.unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1, "the create has no environment; the kill does");
    let kill = &records[0];
    assert_eq!(
        (kill["actor"].as_str(), kill["action"].as_str(), kill["reason"].as_str()),
        (Some("ana"), Some("flag.kill"), Some("errors"))
    );
    assert_eq!(
        (kill["before"]["enabled"].as_bool(), kill["after"]["enabled"].as_bool()),
        (Some(true), Some(false))
    );

    let all: Value = audit("").await.unwrap().json().await.unwrap();
    let all = all.as_array().unwrap();
    assert!(all.len() >= 4, "environments, tokens, the flag and the kill");
    let since = all.last().unwrap()["at"].as_str().unwrap();
    let recent: Value = audit(&format!("?since={}", since.replace('+', "%2B")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(recent.as_array().unwrap().iter().all(|r| r["at"].as_str().unwrap() >= since));
    assert!(recent.as_array().unwrap().iter().any(|r| r["action"] == "flag.kill"));
    let first_two: Value = audit("?limit=2").await.unwrap().json().await.unwrap();
    assert_eq!(first_two.as_array().unwrap(), &all[..2]);

    for (query, detail) in [
        ("?since=yesterday", "RFC 3339"),
        ("?limit=10001", "at most 10000"),
        ("?colour=red", "colour"),
        ("?limit=-1", "limit"),
    ] {
        let response = audit(query).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(detail), "{query}: {problem}");
    }
    let response = server.get("/api/v1/audit", Some(READ)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn two_writers_with_the_same_etag_get_one_200_and_one_412() {
    let server = start().await;
    let flag = server.get("/api/v1/flags/checkout-v2", Some(RELEASE)).send().await.unwrap();
    let etag = flag.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");

    let bump = |percent: u32| {
        server
            .send(reqwest::Method::PUT, ROLLOUT, Some(RELEASE))
            .header("if-match", &etag)
            .json(&json!({"percent": f64::from(percent) / 1000.0, "reason": "bump"}))
            .send()
    };
    let (first, second) = tokio::join!(bump(5_000), bump(25_000));
    let mut statuses = [first.unwrap().status(), second.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);

    let after = server.get("/api/v1/flags/checkout-v2", Some(RELEASE)).send().await.unwrap();
    assert_eq!(after.headers()["etag"], "\"2\"", "exactly one change went in");
    let audit = server
        .audit(AuditQuery { flag: Some("checkout-v2".into()), ..AuditQuery::default() })
        .await;
    assert_eq!(audit.iter().filter(|r| r.action == "flag.rollout").count(), 1);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_but_never_stops_a_kill() {
    let server = start().await;
    let put = |if_match: &str| {
        server
            .send(reqwest::Method::PUT, ROLLOUT, Some(RELEASE))
            .header("if-match", if_match)
            .json(&json!({"percent": 5, "reason": "bump"}))
            .send()
    };
    let ok = put("\"1\"").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["etag"], "\"2\"");

    let before = server.observable_state().await;
    for stale in ["\"1\"", "W/\"1\"", "garbage", "\"1\", \"3\""] {
        let response = put(stale).await.unwrap();
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED, "{stale}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("revision 2"), "{problem}");
    }
    assert_eq!(server.observable_state().await, before, "refused changes leave nothing behind");

    assert_eq!(put("*").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        put("\"1\", \"3\"").await.unwrap().status(),
        StatusCode::OK,
        "any listed revision matches"
    );

    let kill = server
        .send(reqwest::Method::POST, KILL, Some(RELEASE))
        .header("if-match", "\"1\"")
        .json(&json!({"reason": "errors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kill.status(), StatusCode::OK, "a kill ignores If-Match");
    assert_eq!(server.evaluate("user-2").await.1, flag_core::Reason::Disabled);
}
