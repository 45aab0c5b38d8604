//! Kill latency with subscribers that never read: request to 200 for kills and unkills of a
//! flag, first with no stream open, then with N snapshot streams whose clients read nothing
//! after the headers, then with none again. A slow subscriber must not slow a writer, and the
//! server's memory must stay bounded however far behind its subscribers fall.
//!
//! Usage: slow_subscribers <base-url> <admin-token> <server-pid> [streams=2000] [kills=200]
//! (`benches/http/slow-subscribers` starts a server and calls it.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ENVIRONMENT: &str = "production";
const FLAG: &str = "flag-0";
/// The snapshot the streams carry: at least this large.
const SNAPSHOT_BYTES: usize = 160 * 1024;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(token), Some(pid)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!(
            "usage: slow_subscribers <base-url> <admin-token> <server-pid> [streams] [kills]"
        );
        std::process::exit(2);
    };
    let streams: usize = args.get(4).map_or(2000, |n| n.parse().expect("streams"));
    let kills: usize = args.get(5).map_or(200, |n| n.parse().expect("kills"));
    let client = reqwest::Client::new();
    let size = grow_snapshot(&client, base, token).await;
    eprintln!("production's snapshot: {size} bytes");

    let mut alone = measure(&client, base, token, kills, pid, "no streams").await;
    let before = rss(pid, "VmRSS");
    let authority = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        open.push(unread_stream(&authority, token).await);
    }
    eprintln!("{streams} streams open; their clients read nothing more");
    let crowded = measure(&client, base, token, kills, pid, "unread streams").await;
    let per_stream = rss(pid, "VmRSS").saturating_sub(before) / streams.max(1) as u64;
    eprintln!(
        "kernel TCP buffers on this machine, both ends of every stream: {} MB",
        tcp_memory() / 1024
    );
    drop(open);
    alone.extend(measure(&client, base, token, kills, pid, "no streams, again").await);
    let ratio = p99(&mut crowded.clone()).as_secs_f64() / p99(&mut alone).as_secs_f64();
    eprintln!(
        "p99 with {streams} unread streams / p99 of both runs without: {ratio:.2} (target: at \
         most 2); server peak RSS {} MB, about {per_stream} kB per open stream",
        rss(pid, "VmHWM") / 1024
    );
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    latencies[((latencies.len() - 1) as f64 * 0.99).round() as usize]
}

async fn measure(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    kills: usize,
    pid: &str,
    label: &str,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(kills * 2);
    for round in 0..kills {
        for action in ["kill", "unkill"] {
            let url = format!("{base}/api/v1/environments/{ENVIRONMENT}/flags/{FLAG}/{action}");
            let body = serde_json::json!({"reason": format!("slow subscribers, round {round}")});
            let started = Instant::now();
            let response = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{action}: {}", response.status());
            response.bytes().await.unwrap();
            latencies.push(started.elapsed());
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{label:<18} {} writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server RSS {} MB",
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap()),
        rss(pid, "VmRSS") / 1024
    );
    latencies
}

/// Opens a stream, reads its headers, and reads nothing more.
async fn unread_stream(authority: &str, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "GET /api/v1/environments/{ENVIRONMENT}/stream HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("the stream's headers");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// Fifty flags, and a segment of listed users large enough that the snapshot passes
/// `SNAPSHOT_BYTES`: a beta program's members, say. Returns the snapshot's size.
async fn grow_snapshot(client: &reqwest::Client, base: &str, token: &str) -> usize {
    let post = |path: &str, body: serde_json::Value| {
        client.post(format!("{base}{path}")).bearer_auth(token).json(&body).send()
    };
    for i in 0..50 {
        let flag = serde_json::json!({
            "key": format!("flag-{i}"), "type": "boolean",
            "variants": {"on": true, "off": false}, "off_variant": "off"
        });
        let status = post("/api/v1/flags", flag).await.unwrap().status();
        assert!(status.is_success() || status.as_u16() == 409, "flag-{i}: {status}");
    }
    let members: Vec<String> = (0..SNAPSHOT_BYTES / 16).map(|i| format!("user-{i:08}")).collect();
    let segment = serde_json::json!({"key": "beta-program", "included": members});
    let status = post("/api/v1/segments", segment).await.unwrap().status();
    assert!(status.is_success() || status.as_u16() == 409, "segment: {status}");
    let snapshot = client
        .get(format!("{base}/api/v1/environments/{ENVIRONMENT}/snapshot"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(snapshot.len() >= SNAPSHOT_BYTES, "snapshot of {} bytes", snapshot.len());
    snapshot.len()
}

/// A line of `/proc/<pid>/status`, in kB.
fn rss(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()
        })
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// The kernel's TCP buffer memory, all sockets, in kB (`/proc/net/sockstat` counts pages).
fn tcp_memory() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = sockstat
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))
        .and_then(|fields| fields.split_whitespace().skip_while(|f| *f != "mem").nth(1))
        .and_then(|pages| pages.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
