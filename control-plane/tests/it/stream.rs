//! The snapshot stream: current snapshot first, every new version after, resumption with
//! `Last-Event-ID`, keep-alive comments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::clock::SystemClock;
use control_plane::store::KEPT_SNAPSHOTS;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::sse::{Events, Frame, STREAM};
use crate::support::{ADMIN, READ, RELEASE, Server, reopen, start};

async fn bump(server: &Server, percent: u32) -> u64 {
    let path = "/api/v1/environments/production/flags/checkout-v2/rollout";
    let body = json!({"percent": f64::from(percent) / 1000.0, "reason": "step"});
    let (status, answer) = server.call(Method::PUT, path, Some(RELEASE), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["version"].as_u64().unwrap()
}

#[tokio::test]
async fn the_current_snapshot_comes_first_then_every_change() {
    let server = start().await;
    let mut events = Events::open(&server, READ, None).await;
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
    let mut events = Events::open(&server, READ, None).await;
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
    let mut events = Events::open(&server, READ, seen.last().copied()).await;
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
    let current = Events::open(&server, READ, None).await.next_version().await;
    let mut events = Events::open(&server, READ, Some(current)).await;
    // Keep-alives every 200 ms in tests; nothing else while nothing changes.
    assert_eq!(events.next().await, Frame::Comment);
    let version = bump(&server, 1_000).await;
    assert_eq!(events.next_version().await, version);
    assert_eq!(version, current + 1);
}

#[tokio::test]
async fn a_subscriber_resumes_across_a_restart_unless_far_behind_or_from_the_future() {
    let server = start().await;
    let first = bump(&server, 1_000).await;
    let mut last = first;
    for step in 2..=5 {
        last = bump(&server, step * 1_000).await;
    }
    // A new process publishes the versions the store keeps: resuming there leaves no gap.
    let server = reopen(Arc::clone(&server.dir), Arc::new(SystemClock)).await;
    let mut events = Events::open(&server, READ, Some(first)).await;
    for version in first + 1..=last {
        assert_eq!(events.next_version().await, version, "resumed after a restart");
    }
    // The store keeps the latest `KEPT_SNAPSHOTS`: from before them, or from a version not
    // made yet, a subscriber starts again from the current one.
    for step in 0..KEPT_SNAPSHOTS as u32 {
        last = bump(&server, 10_000 + step).await;
    }
    let server = reopen(Arc::clone(&server.dir), Arc::new(SystemClock)).await;
    for claimed in [first, last + 100] {
        let mut events = Events::open(&server, READ, Some(claimed)).await;
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

#[tokio::test]
async fn a_deleted_tokens_open_streams_end_at_once() {
    let server = start().await;
    let secret = server.token("dashboard-1", "read", Some("production")).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut events = Events::open(&server, &secret, None).await;
        events.next_version().await;
        streams.push(events);
    }
    let mut others = Events::open(&server, READ, None).await;
    others.next_version().await;

    let (status, _) =
        server.call(Method::DELETE, "/api/v1/tokens/dashboard-1", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deleted = Instant::now();
    for mut events in streams {
        while let Some(frame) = events.try_next().await {
            assert_eq!(frame, Frame::Comment, "nothing new is sent to a deleted token");
        }
    }
    eprintln!(
        "a deleted token's 3 streams ended {} ms after the delete",
        deleted.elapsed().as_millis()
    );
    let version = bump(&server, 1_000).await;
    assert_eq!(others.next_version().await, version, "other tokens' streams go on");
}

/// Production and staging written by 4 writers each, as fast as they go.
const WRITERS: usize = 8;
const SUBSCRIBERS: usize = 100;
/// Every tenth subscriber hangs up halfway and comes back with `Last-Event-ID`.
const RECONNECTING: usize = 10;

/// Server, writers and subscribers share this process: two threads, so the subscribers (which
/// read only event ids) keep up with writers that go as fast as they can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_and_a_hundred_subscribers_every_version_in_order_once() {
    let seconds = std::env::var("ROLLGATE_FANOUT_SECONDS").map_or(30, |s| s.parse().unwrap());
    let server = Arc::new(start().await);
    let environments = ["production", "staging"];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let halfway = deadline - Duration::from_secs(seconds) / 2;
    // Each environment's last version, once the writers are done.
    let (finish, finished) = tokio::sync::watch::channel(None::<BTreeMap<String, u64>>);

    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (server, finished) = (Arc::clone(&server), finished.clone());
        let environment = environments[i % 2];
        let mut reconnect = i % (SUBSCRIBERS / RECONNECTING) == 0;
        let mut events = Events::open_in(&server, environment, RELEASE, None).await.ids_only();
        subscribers.push(tokio::spawn(async move {
            let mut seen = vec![events.next_version().await];
            loop {
                let last = *seen.last().unwrap();
                if finished.borrow().as_ref().is_some_and(|versions| versions[environment] == last)
                {
                    return seen;
                }
                if reconnect && Instant::now() >= halfway {
                    // Away for a moment, then back from the last version received.
                    reconnect = false;
                    drop(events);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    events =
                        Events::open_in(&server, environment, RELEASE, Some(last)).await.ids_only();
                    continue;
                }
                // Keep-alives come every 200 ms, so the loop looks around that often.
                if let Frame::Snapshot { id, .. } = events.next().await {
                    assert_eq!(id, last + 1, "{environment}: no gap and no duplicate");
                    seen.push(id);
                }
            }
        }));
    }

    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let server = Arc::clone(&server);
            let environment = environments[i % 2];
            tokio::spawn(async move {
                let path = format!("/api/v1/environments/{environment}/flags/checkout-v2/rollout");
                let mut writes = 0u32;
                while Instant::now() < deadline {
                    let percent = (writes * 7919 + i as u32) % 100_001;
                    let body =
                        json!({"percent": f64::from(percent) / 1000.0, "reason": "many writers"});
                    let (status, _) =
                        server.call(Method::PUT, &path, Some(RELEASE), Some(body)).await;
                    assert_eq!(status, StatusCode::OK);
                    writes += 1;
                }
                writes
            })
        })
        .collect();
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    let (_, listed) = server.call(Method::GET, "/api/v1/environments", Some(RELEASE), None).await;
    let last: BTreeMap<String, u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["version"].as_u64().unwrap()))
        .collect();
    finish.send_replace(Some(last.clone()));

    let mut versions_seen = 0;
    for subscriber in subscribers {
        let seen = subscriber.await.unwrap();
        versions_seen += seen.len();
    }
    eprintln!(
        "{WRITERS} writers for {seconds} s: {writes} writes, last versions {last:?}; each of \
         {SUBSCRIBERS} subscribers ({RECONNECTING} reconnecting with Last-Event-ID halfway) saw \
         every version of its environment once, in order ({versions_seen} deliveries)"
    );
}
