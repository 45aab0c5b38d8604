//! Hostile and careless input: each gets a clear refusal, and nothing stored changes (the
//! served version, the audit log, the metric counts).

use std::sync::Arc;

use control_plane::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, READ, RELEASE, Server, start, start_with};

const KILL: &str = "/api/v1/environments/production/flags/checkout-v2/kill";
const ROLLOUT: &str = "/api/v1/environments/production/flags/checkout-v2/rollout";

/// A request (method, path, token, JSON body or null), the status it must get, and what its
/// problem's detail must say.
type Case<'a> = (Method, String, Option<&'a str>, Value, StatusCode, &'a str);

/// Sends each request and checks its status and that the problem's detail says `why`.
async fn refused(server: &Server, cases: Vec<Case<'_>>) {
    let before = server.observable_state().await;
    for (method, path, token, body, status, why) in cases {
        let body = (!body.is_null()).then_some(body);
        let (got, problem) = server.call(method.clone(), &path, token, body.clone()).await;
        let shown: String =
            body.map(|body| body.to_string().chars().take(200).collect()).unwrap_or_default();
        assert_eq!(got, status, "{method} {path} {shown}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{method} {path}: `{detail}` should say `{why}`");
    }
    assert_eq!(server.observable_state().await, before, "nothing stored changed");
}

#[tokio::test]
async fn keys_start_with_a_letter_or_a_digit_everywhere() {
    let server = start().await;
    let flag = |key: &str| json!({"key": key, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"});
    let mut cases = Vec::new();
    for key in [".", "..", "-rf", "_hidden", ".env"] {
        let why = "starting with a letter or a digit";
        let post = |path: &str, token, body| {
            (Method::POST, path.to_owned(), Some(token), body, StatusCode::BAD_REQUEST, why)
        };
        cases.push(post("/api/v1/flags", RELEASE, flag(key)));
        cases.push(post("/api/v1/segments", RELEASE, json!({"key": key})));
        cases.push(post("/api/v1/environments", ADMIN, json!({"name": key})));
        cases.push(post("/api/v1/tokens", ADMIN, json!({"name": key, "scope": "read"})));
        cases.push(post(
            "/api/v1/edges",
            ADMIN,
            json!({"name": key, "url": "http://127.0.0.1:9", "environment": "production"}),
        ));
        cases.push(post(
            "/api/v1/webhooks",
            ADMIN,
            json!({"name": key, "url": "https://hooks.example/x", "environment": "production"}),
        ));
    }
    refused(&server, cases).await;
    let (status, _) = server
        .call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(flag("9lives.v2_b-c")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "letters, digits, and . _ - after the first");
}

#[tokio::test]
async fn the_last_admin_token_cannot_be_deleted() {
    let server = start().await;
    let (status, problem) =
        server.call(Method::DELETE, "/api/v1/tokens/ops", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("last admin token"));
    let still = server.get(crate::support::SNAPSHOT, Some(ADMIN)).send().await.unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    let second = server.token("ops-2", "admin", None).await;
    let (status, _) = server.call(Method::DELETE, "/api/v1/tokens/ops", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "not the last one any more");
    let (status, _) =
        server.call(Method::DELETE, "/api/v1/tokens/ops-2", Some(&second), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "now ops-2 is the last");
}

#[tokio::test]
async fn reasons_rationales_and_stage_labels_are_bounded_and_hold_no_control_characters() {
    let server = start().await;
    let long = "x".repeat(1_001);
    let mut cases = Vec::new();
    for (bad, why) in [
        ("stop\u{0}now", "control characters"),
        ("\u{1b}[31mred\u{1b}[0m", "control characters"),
        ("line\r\nInjected: header", "control characters"),
        (long.as_str(), "longer than 1000"),
    ] {
        cases.push((
            Method::POST,
            KILL.to_owned(),
            Some(RELEASE),
            json!({"reason": bad}),
            StatusCode::BAD_REQUEST,
            why,
        ));
        let rollout = json!({"percent": 1, "reason": bad});
        cases.push((
            Method::PUT,
            ROLLOUT.to_owned(),
            Some(RELEASE),
            rollout,
            StatusCode::BAD_REQUEST,
            why,
        ));
        let plan = json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": bad});
        cases.push((
            Method::POST,
            "/api/v1/plans".into(),
            Some(RELEASE),
            plan,
            StatusCode::BAD_REQUEST,
            why,
        ));
    }
    // Long enough to ride in every snapshot, short enough for a request body.
    let huge_stage = "s".repeat(100_000);
    for (stage, why) in [
        (huge_stage.as_str(), "longer than 64"),
        ("beta\n", "control characters"),
        (" ", "must not be empty"),
    ] {
        let rollout = json!({"percent": 1, "stage": stage, "reason": "ok"});
        cases.push((
            Method::PUT,
            ROLLOUT.to_owned(),
            Some(RELEASE),
            rollout,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        ));
        let state = json!({"enabled": true, "fallthrough": {"rollout": {"percent": 1000, "inside": "on", "outside": "off", "stage": stage}}});
        let path = "/api/v1/environments/production/flags/checkout-v2".to_owned();
        cases.push((
            Method::PUT,
            path,
            Some(RELEASE),
            state,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        ));
        let plan = json!({"flag": "checkout-v2", "environment": "production", "stages": [{"name": stage, "percent": 1}], "rationale": "ok"});
        cases.push((
            Method::POST,
            "/api/v1/plans".into(),
            Some(RELEASE),
            plan,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        ));
    }
    refused(&server, cases).await;
}

#[tokio::test]
async fn the_decision_logs_csv_never_starts_a_cell_with_a_formula() {
    let server = start().await;
    let formula = "=HYPERLINK(\"http://evil.example\",\"details\")";
    let plan = json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": formula});
    let (status, _) = server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(plan)).await;
    assert_eq!(status, StatusCode::CREATED);
    let csv = server
        .get("/api/v1/decisions?format=csv", Some(RELEASE))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.contains("\"'=HYPERLINK("), "the rationale is kept, inert: {row}");
    let (_, decisions) = server.call(Method::GET, "/api/v1/decisions", Some(RELEASE), None).await;
    assert_eq!(decisions[0]["rationale"], formula, "JSON keeps the text as given");
}

#[tokio::test]
async fn a_stale_if_match_on_a_missing_resource_is_412() {
    let server = start().await;
    let (status, _) =
        server.call(Method::DELETE, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before = server.observable_state().await;
    for (method, path) in [
        (Method::DELETE, "/api/v1/flags/checkout-v2"),
        (Method::DELETE, "/api/v1/segments/nope"),
        (Method::PUT, "/api/v1/environments/production/flags/checkout-v2/rollout"),
    ] {
        let body = json!({"percent": 1, "reason": "x"});
        let response = server
            .send(method.clone(), path, Some(RELEASE))
            .header("if-match", "\"1\"")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED, "{method} {path}");
    }
    let (status, _) =
        server.call(Method::DELETE, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "without If-Match, missing is 404");
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn a_batch_id_counts_once_per_environment_not_across_them() {
    let server = start().await;
    let staging_reader = server.token("staging-app", "read", Some("staging")).await;
    let batch = |variant| json!({"batch": "app:1", "counters": [{"flag": "checkout-v2", "variant": variant, "counts": {"requests": 5}}]});
    let post = |environment: &str, token: &str| {
        let path = format!("/api/v1/environments/{environment}/metrics");
        let token = token.to_owned();
        let server = &server;
        async move { server.call(Method::POST, &path, Some(&token), Some(batch("on"))).await }
    };
    let (status, answer) = post("staging", &staging_reader).await;
    assert_eq!((status, answer["counted"].as_bool()), (StatusCode::ACCEPTED, Some(true)));
    let (status, answer) = post("production", READ).await;
    assert_eq!(
        (status, answer["counted"].as_bool()),
        (StatusCode::ACCEPTED, Some(true)),
        "staging's batch `app:1` does not hide production's"
    );
    let (_, answer) = post("production", READ).await;
    assert_eq!(answer["counted"], false, "a retry in production counts once");
    let path = "/api/v1/environments/production/metrics?flag=checkout-v2";
    let (_, sums) = server.call(Method::GET, path, Some(RELEASE), None).await;
    assert_eq!(sums["variants"], json!({"on": {"requests": 5}}));
}

#[tokio::test]
async fn an_admin_token_shorter_than_generated_ones_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollgate.db");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("ROLLGATE_ADMIN_TOKEN", "aaaaaaaaaaaaaaaa")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("ROLLGATE_ADMIN_TOKEN must be at least 35 characters"), "{stderr}");
    assert!(!db.exists(), "refused before anything was created");
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body): its status, and whether
/// it says `Connection: close`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<(u16, bool)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((head.get(9..12)?.parse().ok()?, head.contains("\r\nconnection: close\r\n")))
}

#[tokio::test]
async fn requests_after_a_refused_body_on_the_same_connection_all_get_answers() {
    use tokio::io::AsyncWriteExt;
    let server = start().await;
    let body = json!({"reason": "x".repeat(256 << 10)}).to_string();
    let refused = format!(
        "POST {KILL} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let next = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\n\r\n",
        crate::support::SNAPSHOT
    );
    let (mut answered, mut closed) = (0, 0);
    let mut stream = tokio::net::TcpStream::connect(server.address).await.unwrap();
    for _ in 0..150 {
        stream.write_all(refused.as_bytes()).await.unwrap();
        let (status, close) = read_response(&mut stream).await.expect("the refusal");
        assert_eq!(status, 403, "a read token may not kill: refused before the body is read");
        // A client reuses the connection unless the answer said `Connection: close`.
        if close {
            closed += 1;
            stream = tokio::net::TcpStream::connect(server.address).await.unwrap();
        }
        stream.write_all(next.as_bytes()).await.unwrap();
        match read_response(&mut stream).await {
            Some((200, _)) => answered += 1,
            other => panic!("the request after a refused body was cut off: {other:?}"),
        }
    }
    assert_eq!(answered, 150);
    assert_eq!(closed, 150, "an unread body closes the connection, and the answer says so");
}

#[tokio::test]
async fn every_error_is_a_problem_or_on_ofrep_routes_ofreps_shape() {
    use tokio::io::AsyncWriteExt;
    let server = start().await;
    let problem = |response: &reqwest::Response| {
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let unknown = server.get("/api/v1/nothing-here", Some(RELEASE)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(&unknown).as_deref(), Some("application/problem+json"));
    let body: Value = unknown.json().await.unwrap();
    assert_eq!((body["status"].as_u64(), body["title"].as_str()), (Some(404), Some("Not found")));

    let wrong_method =
        server.send(Method::PATCH, "/api/v1/flags", Some(RELEASE)).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(&wrong_method).as_deref(), Some("application/problem+json"));
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let oversized = server
        .send(Method::POST, "/ofrep/v1/evaluate/flags/checkout-v2", Some(READ))
        .header("content-type", "application/json")
        .body(vec![b' '; (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(&oversized).as_deref(), Some("application/json"));
    let body: Value = oversized.json().await.unwrap();
    assert_eq!(body["errorCode"], "PARSE_ERROR", "OFREP's error shape: {body}");

    // Headers over 64 KiB, whichever way hyper happens to read them.
    let padded = server
        .get("/api/v1/flags", Some(RELEASE))
        .header("x-pad", "p".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(padded.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(problem(&padded).as_deref(), Some("application/problem+json"));

    // What hyper refuses before any route sees it: a 100 KB URL, 101 headers, garbage.
    let long_url = format!("GET /api/v1/flags/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..100).map(|n| format!("x-{n}: y\r\n")).collect::<String>()
    );
    for (request, status) in
        [(long_url, "414"), (many_headers, "431"), ("GARBAGE\r\n\r\n".into(), "400")]
    {
        let mut stream = tokio::net::TcpStream::connect(server.address).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer);
        // Bounded, so that a server keeping the connection open fails the test, not hangs it.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(60), read).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(closed.is_ok(), "the connection stayed open after {answer}");
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.contains("content-type: application/problem+json"), "{answer}");
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"].to_string(), status);
    }
}

#[tokio::test]
async fn an_address_guessing_tokens_is_held_up_and_known_tokens_are_not() {
    let server = start().await;
    let before = server.observable_state().await;
    let guess =
        |n: usize| server.get(crate::support::SNAPSHOT, Some(&format!("rg_guess_{n}"))).send();
    for n in 0..20 {
        assert_eq!(guess(n).await.unwrap().status(), StatusCode::UNAUTHORIZED, "guess {n}");
    }
    let held = guess(20).await.unwrap();
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = held.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "Retry-After: {wait}");
    assert_eq!(held.headers()["content-type"], "application/problem+json");
    let known = server.get(crate::support::SNAPSHOT, Some(READ)).send().await.unwrap();
    assert_eq!(known.status(), StatusCode::OK, "a known token from the same address goes through");

    // Another address is not held up.
    let elsewhere = server.client_from(2);
    let url = format!("http://{}{}", server.address, crate::support::SNAPSHOT);
    let other = elsewhere.get(url).bearer_auth("rg_guess_x").send().await.unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.observable_state().await, before);
}

#[tokio::test]
async fn a_body_that_names_a_key_twice_is_refused_with_the_path() {
    let server = start().await;
    let before = server.observable_state().await;
    for (method, path, body, at) in [
        (
            Method::POST,
            "/api/v1/flags",
            r#"{"key": "banner", "type": "boolean", "variants": {"on": true, "on": false, "off": false}, "off_variant": "off"}"#,
            "variants.on",
        ),
        (
            Method::PUT,
            "/api/v1/environments/production/flags/checkout-v2/rollout",
            r#"{"percent": 1, "percent": 100, "reason": "x"}"#,
            "percent",
        ),
        (
            Method::POST,
            "/api/v1/segments",
            r#"{"key": "staff", "conditions": [{"attribute": "plan", "attribute": "country", "op": "eq", "values": ["x"]}]}"#,
            "conditions[0].attribute",
        ),
    ] {
        let response = server
            .send(method, path, Some(RELEASE))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(at) && detail.contains("duplicate key"), "{path}: {detail}");
    }
    assert_eq!(server.observable_state().await, before);
}

/// A clock stopped 15 s into a minute, so a minute's quota is not reset mid-test.
pub(crate) fn stopped_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new("2026-11-22T10:00:15Z".parse().unwrap()))
}

/// Counts of `value` for each flag's `on` and `off` and each metric name.
pub(crate) fn counters(flags: &[String], metrics: &[String], value: u64) -> Value {
    let counts: serde_json::Map<String, Value> =
        metrics.iter().map(|metric| (metric.clone(), json!(value))).collect();
    let counters: Vec<Value> = flags
        .iter()
        .flat_map(|flag| ["on", "off"].map(|variant| (flag, variant)))
        .map(|(flag, variant)| json!({"flag": flag, "variant": variant, "counts": counts}))
        .collect();
    json!({"counters": counters})
}

pub(crate) fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

/// Posts counters to production's metrics: the status, `Retry-After` and the answer.
pub(crate) async fn report(
    server: &Server,
    token: &str,
    batch: &Value,
) -> (StatusCode, Option<u64>, Value) {
    let path = "/api/v1/environments/production/metrics";
    let response = server.send(Method::POST, path, Some(token)).json(batch).send().await.unwrap();
    let status = response.status();
    let retry_after =
        response.headers().get("retry-after").map(|value| value.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

/// A flag's counts in production over the last hour, per variant and metric.
async fn sums(server: &Server, flag: &str) -> Value {
    let path = format!("/api/v1/environments/production/metrics?flag={flag}&window_seconds=3600");
    let (status, sums) = server.call(Method::GET, &path, Some(RELEASE), None).await;
    assert_eq!(status, StatusCode::OK, "{sums}");
    sums["variants"].clone()
}

#[tokio::test]
async fn a_token_adds_at_most_10_000_metric_rows_a_minute() {
    let clock = stopped_clock();
    let server = start_with(clock.clone()).await;
    let flags = names("f", 0..157);
    for flag in &flags {
        let body = json!({"key": flag, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"});
        let (status, answer) =
            server.call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let metrics = names("m", 0..32);
    // 156 flags × 2 variants × 32 metrics: 9,984 new rows.
    let most = counters(&flags[..156], &metrics, 1);
    let (status, _, answer) = report(&server, READ, &most).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    let more = counters(&flags[156..], &metrics[..9], 1);
    let (status, retry_after, problem) = report(&server, READ, &more).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "18 rows more pass the quota");
    assert_eq!(retry_after, Some(45), "the rest of the minute");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("10000 metric rows a minute"), "{detail}");
    assert_eq!(sums(&server, "f156").await, json!({}), "nothing stored");

    let (status, _, answer) = report(&server, READ, &most).await;
    assert_eq!(status, StatusCode::ACCEPTED, "counts summed into this minute's rows are free");
    assert_eq!(sums(&server, "f0").await["on"]["m0"], 2, "{answer}");
    let other = server.token("other-app", "read", Some("production")).await;
    let (status, _, answer) = report(&server, &other, &more).await;
    assert_eq!(status, StatusCode::ACCEPTED, "another token has its own quota: {answer}");
    clock.advance(chrono::Duration::minutes(1));
    let (status, _, answer) = report(&server, READ, &counters(&flags[156..], &metrics, 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a new minute, a new quota: {answer}");
}

#[tokio::test]
async fn a_flag_has_at_most_32_metric_names_an_hour() {
    let clock = stopped_clock();
    let server = start_with(clock.clone()).await;
    let flag = ["checkout-v2".to_owned()];
    let (status, _, answer) = report(&server, READ, &counters(&flag, &names("m", 0..32), 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let before = sums(&server, "checkout-v2").await;

    let mut one_more = counters(&flag, &names("m", 31..33), 1);
    one_more["batch"] = json!("app:1");
    let (status, retry_after, problem) = report(&server, READ, &one_more).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(retry_after, Some(3600));
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("32 metric names in an hour; with this batch it would have 33"));
    assert_eq!(sums(&server, "checkout-v2").await, before, "nothing stored, m31 included");

    clock.advance(chrono::Duration::minutes(1));
    let (status, _, answer) = report(&server, READ, &counters(&flag, &names("m", 0..32), 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "names it has, in new rows: {answer}");
    clock.advance(chrono::Duration::minutes(60));
    let (status, _, answer) = report(&server, READ, &one_more).await;
    assert_eq!(
        (status, answer["counted"].as_bool()),
        (StatusCode::ACCEPTED, Some(true)),
        "an hour later; the refused batch id was not kept"
    );
}
