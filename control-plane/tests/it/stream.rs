//! The snapshot stream: current snapshot first, every new version after, resumption with
//! `Last-Event-ID`, keep-alive comments.

use std::sync::Arc;
use std::time::Duration;

use control_plane::clock::SystemClock;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{READ, RELEASE, Server, reopen, start};

const STREAM: &str = "/api/v1/environments/production/stream";

/// What arrives on a stream.
#[derive(Debug, PartialEq)]
enum Frame {
    Snapshot { id: u64, document: Value },
    Comment,
}

/// A minimal Server-Sent Events reader over a live response.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    async fn open(server: &Server, last_event_id: Option<u64>) -> Self {
        let mut request = server.get(STREAM, Some(READ));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: Vec::new() }
    }

    /// The next frame; fails the test if none comes within 10 s.
    async fn next(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buffer.drain(..end + 2).collect()).unwrap();
                return parse(&frame);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a frame within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next snapshot's id, skipping keep-alives.
    async fn next_version(&mut self) -> u64 {
        loop {
            if let Frame::Snapshot { id, document } = self.next().await {
                assert_eq!(document["version"], id, "the event id is the snapshot's version");
                return id;
            }
        }
    }
}

fn parse(frame: &str) -> Frame {
    if frame.starts_with(':') {
        return Frame::Comment;
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in frame.lines() {
        match line.split_once(": ") {
            Some(("id", value)) => id = Some(value.parse().unwrap()),
            Some(("event", value)) => event = Some(value),
            Some(("data", value)) => data = Some(serde_json::from_str(value).unwrap()),
            _ if line.is_empty() => {}
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(event, Some("snapshot"));
    Frame::Snapshot { id: id.unwrap(), document: data.unwrap() }
}

async fn bump(server: &Server, percent: u32) -> u64 {
    let path = "/api/v1/environments/production/flags/checkout-v2/rollout";
    let body = json!({"percent": percent, "reason": "step"});
    let (status, answer) = server.call(Method::PUT, path, Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["version"].as_u64().unwrap()
}

#[tokio::test]
async fn the_current_snapshot_comes_first_then_every_change() {
    let server = start().await;
    let mut events = Events::open(&server, None).await;
    let Frame::Snapshot { id, document } = events.next().await else { panic!("snapshot first") };
    assert_eq!((id, &document["environment"]), (2, &json!("production")));

    let kill = json!({"reason": "errors"});
    let path = "/api/v1/environments/production/flags/checkout-v2/kill";
    let (_, answer) = server.call(Method::POST, path, Some(RELEASE), Some(kill)).await;
    let Frame::Snapshot { id, document } = events.next().await else { panic!("the kill") };
    assert_eq!(id, answer["version"].as_u64().unwrap());
    assert_eq!(document["flags"][0]["enabled"], false);
}

#[tokio::test]
async fn resuming_with_last_event_id_leaves_no_gap_and_no_duplicate() {
    let server = start().await;
    let mut events = Events::open(&server, None).await;
    let first = events.next_version().await;
    let mut seen = vec![first];
    for percent in [1_000, 2_000] {
        let version = bump(&server, percent).await;
        assert_eq!(events.next_version().await, version);
        seen.push(version);
    }
    drop(events);

    // Three versions go by while the subscriber is away.
    let mut missed = Vec::new();
    for percent in [3_000, 4_000, 5_000] {
        missed.push(bump(&server, percent).await);
    }
    let mut events = Events::open(&server, seen.last().copied()).await;
    for expected in &missed {
        assert_eq!(events.next_version().await, *expected);
    }
    let live = bump(&server, 6_000).await;
    assert_eq!(events.next_version().await, live, "then live, with nothing repeated");
    seen.extend(missed);
    seen.push(live);
    assert!(seen.windows(2).all(|pair| pair[1] == pair[0] + 1), "no gap: {seen:?}");
}

#[tokio::test]
async fn an_up_to_date_subscriber_gets_keep_alives_until_the_next_version() {
    let server = start().await;
    let current = Events::open(&server, None).await.next_version().await;
    let mut events = Events::open(&server, Some(current)).await;
    // Keep-alives every 200 ms in tests; nothing else while nothing changes.
    assert_eq!(events.next().await, Frame::Comment);
    let version = bump(&server, 1_000).await;
    assert_eq!(events.next_version().await, version);
    assert_eq!(version, current + 1);
}

#[tokio::test]
async fn a_subscriber_far_behind_or_from_the_future_gets_the_current_snapshot() {
    let server = start().await;
    let mut last = 0;
    for step in 1..=5 {
        last = bump(&server, step * 1_000).await;
    }
    // A new process keeps only the current version: what came before is not resumable there.
    let server = reopen(Arc::clone(&server.dir), Arc::new(SystemClock)).await;
    for claimed in [1, last + 100] {
        let mut events = Events::open(&server, Some(claimed)).await;
        assert_eq!(events.next_version().await, last, "claimed {claimed}");
        last = bump(&server, 50_000 + claimed as u32).await;
        assert_eq!(events.next_version().await, last, "then every new version");
    }
}

#[tokio::test]
async fn the_stream_needs_a_token_that_reaches_the_environment() {
    let server = start().await;
    let get = |path: &str, token| server.get(path, token);
    let cases = [
        (get(STREAM, None), StatusCode::UNAUTHORIZED),
        (get("/api/v1/environments/staging/stream", Some(READ)), StatusCode::FORBIDDEN),
        (get("/api/v1/environments/qa/stream", Some(RELEASE)), StatusCode::NOT_FOUND),
    ];
    for (i, (request, status)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}
