//! Kill-switch propagation to snapshot-stream subscribers: opens N Server-Sent Events streams on
//! a running control plane, then kills and unkills a flag again and again. For each kill it
//! measures, per subscriber, the time until that subscriber has the new version: from the
//! kill's 200 reaching the client (events that beat the 200 count as 0), and from the kill's
//! request being sent, which is what an on-call engineer waits for end to end.
//!
//! Usage: stream_propagation <base-url> <release-token> [subscribers=1000] [cycles=20]
//! (`benches/http/run` starts a server and calls it.) With `SUBSCRIBE_AT=host:port,…`, the
//! subscribers are spread over those servers (other replicas) while the kills go to the base.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ENVIRONMENT: &str = "production";
const FLAG: &str = "flag-0";

/// One version seen by one subscriber, and when.
struct Seen {
    subscriber: usize,
    version: u64,
    at: Instant,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(token)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: stream_propagation <base-url> <release-token> [subscribers] [cycles]");
        std::process::exit(2);
    };
    let subscribers: usize = args.get(3).map_or(1000, |n| n.parse().expect("subscribers"));
    let cycles: usize = args.get(4).map_or(20, |n| n.parse().expect("cycles"));
    let authority = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let authorities: Vec<String> = match std::env::var("SUBSCRIBE_AT") {
        Ok(list) => list.split(',').map(str::to_owned).collect(),
        Err(_) => vec![authority],
    };

    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    for subscriber in 0..subscribers {
        let authority = authorities[subscriber % authorities.len()].clone();
        let (token, sender) = (token.clone(), seen_sender.clone());
        tokio::spawn(async move { subscribe(subscriber, &authority, &token, sender).await });
    }
    drop(seen_sender);

    // Everyone has the current snapshot before the first kill.
    let mut latest = vec![0u64; subscribers];
    let mut connected = 0;
    while connected < subscribers {
        let event = recv(&mut seen).await;
        if latest[event.subscriber] == 0 {
            connected += 1;
        }
        latest[event.subscriber] = event.version;
    }
    eprintln!("{subscribers} subscribers have the current snapshot");

    let client = reqwest::Client::new();
    let mut kill_latencies = Vec::with_capacity(subscribers * cycles);
    let mut from_request = Vec::with_capacity(subscribers * cycles);
    let mut before_ack = 0;
    for cycle in 0..cycles {
        for action in ["kill", "unkill"] {
            let url = format!("{base}/api/v1/environments/{ENVIRONMENT}/flags/{FLAG}/{action}");
            let body =
                serde_json::json!({"reason": format!("propagation benchmark, cycle {cycle}")});
            let sent = Instant::now();
            let response = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            let acknowledged = Instant::now();
            assert!(response.status().is_success(), "{action}: {}", response.status());
            let answer: serde_json::Value = response.json().await.unwrap();
            let version = answer["version"].as_u64().expect("the change's version");
            // Events already received before the 200 was read.
            let mut arrived: Vec<Option<Instant>> = vec![None; subscribers];
            let mut missing = subscribers;
            while missing > 0 {
                let event = recv(&mut seen).await;
                latest[event.subscriber] = latest[event.subscriber].max(event.version);
                if event.version >= version && arrived[event.subscriber].is_none() {
                    arrived[event.subscriber] = Some(event.at);
                    missing -= 1;
                }
            }
            if action == "kill" {
                for at in arrived.into_iter().flatten() {
                    from_request.push(at.duration_since(sent));
                    match at.checked_duration_since(acknowledged) {
                        Some(latency) => kill_latencies.push(latency),
                        None => {
                            before_ack += 1;
                            kill_latencies.push(Duration::ZERO);
                        }
                    }
                }
            }
        }
    }
    let (from_ack, from_request) = (percentiles(kill_latencies), percentiles(from_request));
    eprintln!(
        "stream propagation: {cycles} kills x {subscribers} subscribers = {} deliveries; \
         from the 200: {from_ack}, {before_ack} arrived before it; from the request: {from_request}",
        subscribers * cycles,
    );
}

/// `p50 …, p99 …, max …` in milliseconds.
fn percentiles(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let at = |p: f64| {
        let rank = ((latencies.len() as f64) * p).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64() * 1e3
    };
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.5), at(0.99), at(1.0))
}

async fn recv(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("an event within 30 s")
        .expect("subscribers stay connected")
}

/// Reads one stream over a raw connection and reports each event id (the snapshot version).
async fn subscribe(
    subscriber: usize,
    authority: &str,
    token: &str,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "GET /api/v1/environments/{ENVIRONMENT}/stream HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut chunk).await.expect("read");
        if read == 0 {
            return;
        }
        let at = Instant::now();
        buffer.extend_from_slice(&chunk[..read]);
        // Each event starts with an `id:` line; the JSON on `data:` lines has no newlines.
        let mut consumed = 0;
        while let Some(start) = find(&buffer[consumed..], b"\nid: ") {
            let digits = consumed + start + 5;
            let Some(end) = find(&buffer[digits..], b"\n") else { break };
            let version =
                std::str::from_utf8(&buffer[digits..digits + end]).unwrap().parse().unwrap();
            if seen.send(Seen { subscriber, version, at }).is_err() {
                return;
            }
            consumed = digits + end;
        }
        // Keep a little tail: a marker may straddle two reads.
        let keep_from = consumed.max(buffer.len().saturating_sub(32));
        buffer.drain(..keep_from);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}
