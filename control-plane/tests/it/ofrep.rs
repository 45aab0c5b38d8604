//! OFREP on the control plane: its success and failure shapes, auth, and the bulk ETag.

use flag_core::{Context, Engine};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{READ, RELEASE, SNAPSHOT, Server, start};

const SINGLE: &str = "/ofrep/v1/evaluate/flags/checkout-v2";
const BULK: &str = "/ofrep/v1/evaluate/flags";

/// checkout-v2 at 50% in production.
async fn half_rolled_out() -> Server {
    let server = start().await;
    let rollout = json!({"percent": 50, "stage": "beta", "reason": "beta"});
    let path = "/api/v1/environments/production/flags/checkout-v2/rollout";
    let (status, _) = server.call(Method::PUT, path, Some(RELEASE), Some(rollout)).await;
    assert_eq!(status, StatusCode::OK);
    server
}

async fn native_engine(server: &Server) -> Engine {
    let snapshot = server.get(SNAPSHOT, Some(READ)).send().await.unwrap().bytes().await.unwrap();
    Engine::from_json(&snapshot).unwrap()
}

#[tokio::test]
async fn single_evaluations_equal_flag_cores_for_500_users() {
    let server = half_rolled_out().await;
    let engine = native_engine(&server).await;
    let mut on = 0;
    for user in 0..500 {
        let key = format!("user-{user}");
        let context = json!({"targetingKey": key, "plan": "pro"});
        let request = server
            .send(Method::POST, SINGLE, None)
            .header("x-api-key", READ)
            .json(&json!({"context": context}));
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        let expected = engine.evaluate("checkout-v2", &Context::from_value(context).unwrap());
        assert_eq!(answer["key"], "checkout-v2");
        assert_eq!(answer["reason"], "SPLIT");
        assert_eq!(answer["variant"], expected.variant.unwrap(), "{key}");
        assert_eq!(&answer["value"], expected.value.unwrap(), "{key}");
        on += usize::from(answer["variant"] == "on");
    }
    assert!((200..300).contains(&on), "about half of 500 users are in a 50% rollout, got {on}");
}

#[tokio::test]
async fn failures_use_ofreps_codes_and_statuses() {
    let server = half_rolled_out().await;
    let post = |path: &str, body: &str| {
        server
            .send(Method::POST, path, Some(READ))
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let cases = [
        (post(SINGLE, "{"), StatusCode::BAD_REQUEST, "PARSE_ERROR"),
        (post(SINGLE, r#"{"context": 5}"#), StatusCode::BAD_REQUEST, "INVALID_CONTEXT"),
        (
            post(SINGLE, r#"{"context": {"targetingKey": 7}}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_CONTEXT",
        ),
        (post(SINGLE, r#"{"context": {}}"#), StatusCode::BAD_REQUEST, "TARGETING_KEY_MISSING"),
        (
            post("/ofrep/v1/evaluate/flags/nope", r#"{"context": {"targetingKey": "u"}}"#),
            StatusCode::NOT_FOUND,
            "FLAG_NOT_FOUND",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        let failure: Value = response.json().await.unwrap();
        assert_eq!(failure["errorCode"], code, "case {i}: {failure}");
        assert!(failure["key"].is_string(), "case {i}: single failures name the flag");
        assert!(!failure["errorDetails"].as_str().unwrap().is_empty(), "case {i}");
    }
    let response = post(BULK, "[").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let failure: Value = response.json().await.unwrap();
    assert_eq!(failure["errorCode"], "PARSE_ERROR");
}

#[tokio::test]
async fn ofrep_needs_a_read_token_that_reaches_the_environment() {
    let server = half_rolled_out().await;
    let body = json!({"context": {"targetingKey": "u"}});
    let staging_reader = server.token("staging-app", "read", Some("staging")).await;
    let cases = [
        (SINGLE.to_owned(), None, StatusCode::UNAUTHORIZED),
        (SINGLE.to_owned(), Some("rg_not_a_token"), StatusCode::UNAUTHORIZED),
        // A token bound to no environment must name one in the URL.
        (SINGLE.to_owned(), Some(RELEASE), StatusCode::FORBIDDEN),
        (format!("/api/v1/environments/production{SINGLE}"), Some(RELEASE), StatusCode::OK),
        (format!("/api/v1/environments/staging{SINGLE}"), Some(READ), StatusCode::FORBIDDEN),
        (SINGLE.to_owned(), Some(staging_reader.as_str()), StatusCode::OK),
        (format!("/api/v1/environments/qa{SINGLE}"), Some(RELEASE), StatusCode::NOT_FOUND),
    ];
    for (i, (path, token, status)) in cases.into_iter().enumerate() {
        let (actual, answer) = server.call(Method::POST, &path, token, Some(body.clone())).await;
        assert_eq!(actual, status, "case {i}: {answer}");
    }
    // Staging was never rolled out: its answer comes from staging's snapshot, not production's.
    let (_, answer) = server.call(Method::POST, SINGLE, Some(&staging_reader), Some(body)).await;
    assert_eq!(
        (answer["variant"].as_str(), answer["reason"].as_str()),
        (Some("off"), Some("STATIC"))
    );
}

#[tokio::test]
async fn bulk_evaluation_has_an_etag_that_changes_with_the_snapshot() {
    let server = half_rolled_out().await;
    let body = json!({"context": {"targetingKey": "user-7"}});
    let bulk = |etag: Option<&str>| {
        let request = server.send(Method::POST, BULK, Some(READ)).json(&body);
        match etag {
            Some(etag) => request.header("if-none-match", etag),
            None => request,
        }
    };
    let first = bulk(None).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let answer: Value = first.json().await.unwrap();
    let flags = answer["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["key"], "checkout-v2");
    assert_eq!(flags[0]["reason"], "SPLIT");

    let again = bulk(Some(&etag)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    let other_user = server
        .send(Method::POST, BULK, Some(READ))
        .header("if-none-match", &etag)
        .json(&json!({"context": {"targetingKey": "user-8"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_user.status(), StatusCode::OK, "another context is another answer");

    let kill = json!({"reason": "errors"});
    let path = "/api/v1/environments/production/flags/checkout-v2/kill";
    assert_eq!(server.call(Method::POST, path, Some(RELEASE), Some(kill)).await.0, StatusCode::OK);
    let after_kill = bulk(Some(&etag)).send().await.unwrap();
    assert_eq!(after_kill.status(), StatusCode::OK, "a new snapshot is a new answer");
    assert_ne!(after_kill.headers()["etag"].to_str().unwrap(), etag);
    let answer: Value = after_kill.json().await.unwrap();
    assert_eq!(answer["flags"][0]["reason"], "DISABLED");
    assert_eq!(answer["flags"][0]["variant"], "off");
}

/// The next `refetchEvaluation` event's id and data on an OFREP event stream, skipping
/// keep-alives; `None` when the server ends the stream.
async fn next_refetch(
    response: &mut reqwest::Response,
    buffer: &mut Vec<u8>,
) -> Option<(u64, Value)> {
    loop {
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame = String::from_utf8(buffer.drain(..end + 2).collect()).unwrap();
            if frame.starts_with(':') {
                continue;
            }
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{name} in {frame:?}"))
            };
            assert_eq!(field("event: "), "message");
            return Some((
                field("id: ").parse().unwrap(),
                serde_json::from_str(field("data: ")).unwrap(),
            ));
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), response.chunk())
            .await
            .expect("an event or the end within 10 s")
            .unwrap()?;
        buffer.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn bulk_answers_advertise_an_event_stream_that_says_when_to_evaluate_again() {
    let server = half_rolled_out().await;
    let app = server.token("web-shop", "read", Some("production")).await;
    let bulk = |query: &str| {
        server
            .send(Method::POST, &format!("{BULK}{query}"), None)
            .header("x-api-key", &app)
            .json(&json!({"context": {"targetingKey": "user-1"}}))
    };
    let response = bulk("").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    let streams = answer["eventStreams"].as_array().unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(
        (&streams[0]["type"], &streams[0]["inactivityDelaySec"]),
        (&json!("sse"), &json!(120))
    );
    let url = streams[0]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "http://{}/ofrep/v1/events?token=web-shop~production~",
            server.address
        )),
        "{url}"
    );
    // The same URL every time, so the bulk ETag still holds.
    assert_eq!(
        bulk("").send().await.unwrap().json::<Value>().await.unwrap()["eventStreams"][0]["url"],
        url.as_str()
    );
    let unchanged = bulk("").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    // A browser's EventSource: the URL alone, no headers.
    let mut events = server.client.get(&url).send().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut buffer = Vec::new();
    // A new stream first names the current version: the client may have evaluated just before it.
    let (current, _) = next_refetch(&mut events, &mut buffer).await.unwrap();
    let kill = "/api/v1/environments/production/flags/checkout-v2/kill";
    let (status, killed) =
        server.call(Method::POST, kill, Some(RELEASE), Some(json!({"reason": "errors"}))).await;
    assert_eq!(status, StatusCode::OK);
    let version = killed["version"].as_u64().unwrap();
    assert_eq!(version, current + 1);
    let (id, data) = next_refetch(&mut events, &mut buffer).await.unwrap();
    assert_eq!(
        (id, data),
        (version, json!({"type": "refetchEvaluation", "etag": format!("\"{version}\"")}))
    );

    // The re-fetch the event triggers, with its metadata, sees the kill.
    let query = format!("?flagConfigEtag=%22{version}%22&flagConfigLastModified=1771622898");
    let refetched: Value = bulk(&query).send().await.unwrap().json().await.unwrap();
    let checkout = refetched["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "checkout-v2")
        .unwrap()
        .clone();
    assert_eq!(checkout["reason"], "DISABLED");

    // Resuming from an older event: one event for the newest version, however many were missed.
    let unkill = "/api/v1/environments/production/flags/checkout-v2/unkill";
    let reason = |text: &str| Some(json!({"reason": text}));
    let (status, _) = server.call(Method::POST, unkill, Some(RELEASE), reason("fixed")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = server.call(Method::POST, kill, Some(RELEASE), reason("again")).await;
    assert_eq!(status, StatusCode::OK);
    let newest = again["version"].as_u64().unwrap();
    let open_from =
        |id: u64| server.client.get(&url).header("last-event-id", id.to_string()).send();
    let mut resumed = open_from(current).await.unwrap();
    let mut resumed_buffer = Vec::new();
    assert_eq!(next_refetch(&mut resumed, &mut resumed_buffer).await.unwrap().0, newest);
    // A client that has the newest version hears nothing until the next change.
    let mut up_to_date = open_from(newest).await.unwrap();
    let mut up_to_date_buffer = Vec::new();
    let (status, _) = server.call(Method::POST, unkill, Some(RELEASE), reason("fixed again")).await;
    assert_eq!(status, StatusCode::OK);
    let next = next_refetch(&mut up_to_date, &mut up_to_date_buffer).await.unwrap().0;
    assert_eq!(next, newest + 1);

    // A server client may present its read token instead.
    let with_header =
        server.get("/ofrep/v1/events", None).header("x-api-key", &app).send().await.unwrap();
    assert_eq!(with_header.status(), StatusCode::OK);

    // Forged, altered or misdirected tokens get 401; so does no token at all.
    let (name_and_environment, signature) =
        url.split_once("token=").unwrap().1.rsplit_once('~').unwrap();
    let mut flipped = signature.to_owned();
    flipped.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
    for token in [
        format!("{name_and_environment}~{flipped}"),
        format!("web-shop~staging~{signature}"),
        format!("nobody~production~{signature}"),
        "web-shop~production".to_owned(),
        String::new(),
    ] {
        let response =
            server.get(&format!("/ofrep/v1/events?token={token}"), None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token}");
    }
    assert_eq!(
        server.get("/ofrep/v1/events", None).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // Deleting the read token ends its streams and its URL.
    let (status, _) = server
        .call(Method::DELETE, "/api/v1/tokens/web-shop", Some(crate::support::ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The first stream saw the later changes too; then it ends (within 10 s, or the read fails).
    while next_refetch(&mut events, &mut buffer).await.is_some() {}
    assert_eq!(server.client.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
