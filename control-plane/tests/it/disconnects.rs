//! Clients that hang up. A change whose client disconnects before, during or after its commit is
//! either not made at all or made and served everywhere: by the snapshot, the stream and OFREP,
//! and for token deletes and edge registrations, by authentication and the edges' pushes.
//!
//! Each operation goes over its own connection, as raw HTTP, and the client hangs up at a
//! random point: partway through the request (nothing can commit), right after sending it
//! (the commit races the hang-up), or after the response. The client half-closes and reads
//! until the server closes, so it knows the server has dropped or finished the handler. Then a
//! fence (a change in another environment, which the store commits after every earlier one) and
//! the checks: the stored truth against what is served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode as AxumStatus;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::sse::Events;
use crate::support::{ADMIN, READ, RELEASE, SNAPSHOT, Server, start};

/// Kills and unkills; token deletes; edge registrations.
const CHANGES: usize = 1_000;
const TOKENS: usize = 40;
const EDGES: usize = 20;
/// The longest anything may take to show; far beyond what it takes, so a slow machine never
/// fails a correct server.
const PATIENCE: Duration = Duration::from_secs(10);

/// Where the client hangs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HangUp {
    /// After this many bytes of the request, never all of it.
    MidRequest(usize),
    /// This many microseconds after the whole request.
    AfterRequest(u64),
    /// After reading the response's status line.
    AfterResponse,
}

impl HangUp {
    /// The `n`th request's hang-up: every kind in each run of four, half of them right after
    /// the request (the case that races the commit), the byte or the delay at random. So even
    /// a short loop meets each kind, and the outcomes it checks for all occur.
    fn nth(n: usize, rng: &mut StdRng, request_length: usize) -> Self {
        match n % 4 {
            0 => Self::MidRequest(rng.random_range(1..request_length)),
            1 | 2 => Self::AfterRequest(rng.random_range(0..3_000)),
            _ => Self::AfterResponse,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::MidRequest(_) => "mid-request",
            Self::AfterRequest(_) => "right after the request",
            Self::AfterResponse => "after the response",
        }
    }
}

/// An HTTP/1.1 request as bytes.
fn request(method: &str, path: &str, token: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` on a new connection and hangs up at `point`; returns once the server has
/// closed its side, with the response's status if one came.
async fn send_and_hang_up(address: SocketAddr, request: &[u8], point: HangUp) -> Option<u16> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match point {
        HangUp::MidRequest(bytes) => stream.write_all(&request[..bytes]).await.unwrap(),
        HangUp::AfterRequest(micros) => {
            stream.write_all(request).await.unwrap();
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        HangUp::AfterResponse => {
            stream.write_all(request).await.unwrap();
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).await.unwrap();
            return status_of(&first);
        }
    }
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    // The server closes once it has dropped the handler or answered; a reset counts as closed.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    status_of(&answer)
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(answer.get(..12)?).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// A change in staging: committed after every earlier change, so once it answers, every change
/// a hung-up client's request made has committed and been applied.
async fn fence(server: &Server) {
    let path = "/api/v1/environments/staging/flags/checkout-v2/kill";
    let (status, _) =
        server.call(Method::POST, path, Some(RELEASE), Some(json!({"reason": "fence"}))).await;
    assert_eq!(status, StatusCode::OK);
}

/// Follows production's stream in the background: each version's `checkout-v2.enabled`.
async fn follow(server: &Server) -> watch::Receiver<BTreeMap<u64, bool>> {
    let (seen, follower) = watch::channel(BTreeMap::new());
    let mut events = Events::open(server, READ, None).await;
    tokio::spawn(async move {
        loop {
            let (version, document) = events.next_snapshot().await;
            let enabled = document["flags"][0]["enabled"].as_bool().unwrap();
            seen.send_modify(|versions| {
                assert!(versions.insert(version, enabled).is_none(), "version {version} twice");
            });
        }
    });
    follower
}

#[tokio::test]
async fn a_change_whose_client_hangs_up_is_made_and_served_everywhere_or_not_at_all() {
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = start().await;
    let mut stream = follow(&server).await;
    let first = stream.wait_for(|versions| !versions.is_empty()).await.unwrap();
    let (&start_version, _) = first.last_key_value().unwrap();
    drop(first);

    let mut committed_by_kind: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let (mut slowest_stream, mut committed, mut enabled) = (Duration::ZERO, 0, true);
    for n in 0..CHANGES {
        // Always the opposite of the current state, so every change that commits shows.
        let action = if enabled { "kill" } else { "unkill" };
        let path = format!("/api/v1/environments/production/flags/checkout-v2/{action}");
        let bytes = request("POST", &path, RELEASE, Some(&json!({"reason": "hang-up test"})));
        let point = HangUp::nth(n, &mut rng, bytes.len());
        let status = send_and_hang_up(server.address, &bytes, point).await;
        fence(&server).await;
        let fenced = Instant::now();

        // The truth: the store's flag and the audit log.
        let (_, flag) =
            server.call(Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
        enabled = flag["environments"]["production"]["enabled"].as_bool().unwrap();
        let audited = production_changes(&server).await;
        let made = audited.len() > committed;
        assert!(audited.len() <= committed + 1, "one request made at most one change");
        committed = audited.len();
        let version = start_version + committed as u64;
        let tally = committed_by_kind.entry(point.kind()).or_default();
        tally.0 += 1;
        tally.1 += usize::from(made);
        tally.2 += usize::from(made && status.is_none());
        match point {
            HangUp::MidRequest(_) => assert!(!made, "an incomplete request changed something"),
            HangUp::AfterResponse => assert_eq!((status, made), (Some(200), true)),
            HangUp::AfterRequest(_) => {}
        }

        // Served: the snapshot and OFREP at once, the stream as soon as it is delivered.
        let snapshot = server.get(SNAPSHOT, Some(READ)).send().await.unwrap();
        assert_eq!(snapshot.headers()["etag"], format!("\"{version}\"").as_str(), "{point:?}");
        let document: Value = snapshot.json().await.unwrap();
        assert_eq!(document["flags"][0]["enabled"], enabled, "{point:?}");
        assert_eq!(ofrep_disabled(&server).await, !enabled, "{point:?}");
        let delivered =
            tokio::time::timeout(PATIENCE, stream.wait_for(|v| v.contains_key(&version)))
                .await
                .expect("the stream delivers the committed version")
                .unwrap()[&version];
        slowest_stream = slowest_stream.max(fenced.elapsed());
        assert_eq!(delivered, enabled, "{point:?}");
    }

    // Every version the stream served is a committed change, in order, and nothing else.
    let served = stream.borrow().clone();
    let audited = production_changes(&server).await;
    let expected: BTreeMap<u64, bool> = std::iter::once((start_version, served[&start_version]))
        .chain(
            audited.iter().enumerate().map(|(i, enabled)| (start_version + 1 + i as u64, *enabled)),
        )
        .collect();
    assert_eq!(served, expected, "the stream served exactly the committed changes");
    for (kind, (tries, made, unanswered)) in &committed_by_kind {
        eprintln!("{kind}: {tries} requests, {made} committed ({unanswered} with no answer)");
    }
    assert!(committed_by_kind.len() == 3, "every kind of hang-up was tried");
    eprintln!(
        "{CHANGES} changes, {committed} committed; each served by snapshot and OFREP at its \
         commit, and by the stream at most {} ms after",
        slowest_stream.as_millis()
    );
}

/// Production's committed kills and unkills of `checkout-v2`, oldest first: whether each left
/// the flag enabled.
async fn production_changes(server: &Server) -> Vec<bool> {
    let path = "/api/v1/audit?flag=checkout-v2&env=production&limit=10000";
    let (_, records) = server.call(Method::GET, path, Some(RELEASE), None).await;
    records
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| matches!(record["action"].as_str(), Some("flag.kill" | "flag.unkill")))
        .map(|record| record["after"]["enabled"].as_bool().unwrap())
        .collect()
}

async fn ofrep_disabled(server: &Server) -> bool {
    let path = "/ofrep/v1/evaluate/flags/checkout-v2";
    let body = json!({"context": {"targetingKey": "user-1"}});
    let (status, answer) = server.call(Method::POST, path, Some(READ), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["reason"] == "DISABLED"
}

#[tokio::test]
async fn a_token_deleted_by_a_client_that_hangs_up_stops_working_at_once_or_stays() {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let server = start().await;
    let mut kinds = BTreeSet::new();
    let mut deleted = 0;
    for i in 0..TOKENS {
        let name = format!("app-{i}");
        let secret = server.token(&name, "read", Some("production")).await;
        let mut events = Events::open(&server, &secret, None).await;
        events.next_version().await;

        let bytes = request("DELETE", &format!("/api/v1/tokens/{name}"), ADMIN, None);
        let point = HangUp::nth(i, &mut rng, bytes.len());
        send_and_hang_up(server.address, &bytes, point).await;
        fence(&server).await;

        let (_, tokens) = server.call(Method::GET, "/api/v1/tokens", Some(ADMIN), None).await;
        let stored = tokens.as_array().unwrap().iter().any(|token| token["name"] == name);
        // From an address of its own each time: the brake on guessed tokens counts per address.
        let client = server.client_from(10 + i as u8);
        let url = format!("http://{}{SNAPSHOT}", server.address);
        let status = client.get(url).bearer_auth(&secret).send().await.unwrap().status();
        if stored {
            assert_eq!(status, StatusCode::OK, "{point:?}: the token is kept and works");
            assert!(!matches!(point, HangUp::AfterResponse));
        } else {
            deleted += 1;
            kinds.insert(point.kind());
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{point:?}: deleted, so refused");
            let ended = async { while events.try_next().await.is_some() {} };
            tokio::time::timeout(PATIENCE, ended).await.expect("its stream ends");
        }
    }
    eprintln!("{TOKENS} deletes with hang-ups, {deleted} committed ({kinds:?})");
    assert!(deleted > 0 && deleted < TOKENS, "some deletes went in, some did not");
}

/// A stand-in for many edges: counts the pushes each receives (by the path's first segment).
async fn edge_receiver() -> (String, mpsc::UnboundedReceiver<String>) {
    let (pushed, pushes) = mpsc::unbounded_channel();
    let app =
        axum::Router::new()
            .route(
                "/{edge}/rollgate/v1/push",
                axum::routing::post(
                    |State(pushed): State<mpsc::UnboundedSender<String>>,
                     Path(edge): Path<String>| async move {
                        let _ = pushed.send(edge);
                        AxumStatus::OK
                    },
                ),
            )
            .with_state(pushed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, pushes)
}

#[tokio::test]
async fn an_edge_registered_by_a_client_that_hangs_up_gets_pushes_or_is_not_registered() {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let server = start().await;
    let (url, mut pushes) = edge_receiver().await;
    let pushed: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut registered = BTreeSet::new();
    for i in 0..EDGES {
        let name = format!("edge-{i}");
        let body =
            json!({"name": name, "url": format!("{url}/{name}"), "environment": "production"});
        let bytes = request("POST", "/api/v1/edges", ADMIN, Some(&body));
        send_and_hang_up(server.address, &bytes, HangUp::nth(i, &mut rng, bytes.len())).await;
        fence(&server).await;
        let (_, edges) = server.call(Method::GET, "/api/v1/edges", Some(RELEASE), None).await;
        if edges.as_array().unwrap().iter().any(|edge| edge["name"] == name) {
            registered.insert(name.clone());
            // Its push task started with the commit: the current configuration arrives.
            let arrived = async {
                while !pushed.lock().unwrap().contains(&name) {
                    let edge = pushes.recv().await.unwrap();
                    pushed.lock().unwrap().insert(edge);
                }
            };
            tokio::time::timeout(PATIENCE, arrived).await.expect("a registered edge is pushed to");
        }
    }
    while let Ok(edge) = pushes.try_recv() {
        pushed.lock().unwrap().insert(edge);
    }
    assert_eq!(*pushed.lock().unwrap(), registered, "pushes go to registered edges only");
    eprintln!("{EDGES} registrations with hang-ups, {} committed", registered.len());
    assert!(!registered.is_empty() && registered.len() < EDGES, "some went in, some did not");
}

/// An import whose client hangs up is whole or not at all: each of its flags is stored and
/// served, or none is.
#[tokio::test]
async fn an_import_whose_client_hangs_up_is_whole_or_not_at_all() {
    const IMPORTS: usize = 40;
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = start().await;
    let mut outcomes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for n in 0..IMPORTS {
        let keys: Vec<String> = (0..3).map(|i| format!("imported-{n}-{i}")).collect();
        let flags: Vec<Value> = keys
            .iter()
            .map(|key| {
                json!({
                    "definition": {"key": key, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"},
                    "state": {"enabled": true, "fallthrough": {"rollout": {
                        "algorithm": {"name": "flagd", "prefix": key}, "percent": 25000, "inside": "on", "outside": "off"}}},
                })
            })
            .collect();
        let body = json!({"flags": flags, "reason": "hang-up test"});
        let path = "/api/v1/environments/production/import";
        let bytes = request("POST", path, RELEASE, Some(&body));
        let point = HangUp::nth(n, &mut rng, bytes.len());
        let status = send_and_hang_up(server.address, &bytes, point).await;
        fence(&server).await;

        let (_, stored) = server.call(Method::GET, "/api/v1/flags", Some(RELEASE), None).await;
        let stored: BTreeSet<&str> =
            stored.as_array().unwrap().iter().filter_map(|f| f["key"].as_str()).collect();
        let document: Value =
            server.get(SNAPSHOT, Some(READ)).send().await.unwrap().json().await.unwrap();
        let served: BTreeSet<&str> = document["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["key"].as_str())
            .collect();
        let made = keys.iter().filter(|k| stored.contains(k.as_str())).count();
        assert!(made == 0 || made == keys.len(), "{made} of {} stored after {point:?}", keys.len());
        assert!(keys.iter().all(|k| stored.contains(k.as_str()) == served.contains(k.as_str())));
        match point {
            HangUp::MidRequest(_) => assert_eq!(made, 0, "an incomplete request imported"),
            HangUp::AfterResponse => assert_eq!((status, made), (Some(200), keys.len())),
            HangUp::AfterRequest(_) => {}
        }
        let tally = outcomes.entry(point.kind()).or_default();
        tally.0 += 1;
        tally.1 += usize::from(made > 0);
    }
    for (kind, (tries, made)) in &outcomes {
        eprintln!(
            "import, hung up {kind}: {tries} requests, {made} imported whole, the rest not at all"
        );
    }
}
