//! Three real `rollgate serve` processes on one PostgreSQL database behind nginx, run with
//! docs/nginx.conf: replicas killed with SIGKILL in a loop while a client writes and a
//! subscriber follows the stream, both through nginx.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{BINARY_ADMIN, Rollgate, admin_get, free_address, postgres_database, until};

const REPLICAS: usize = 3;
const KILLS: usize = 100;

/// nginx in the foreground with docs/nginx.conf, its ports replaced; stopped when dropped.
struct Nginx {
    child: std::process::Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(replicas: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("temp")).unwrap();
        let address = free_address();
        let mut config = include_str!("../../../docs/nginx.conf")
            .replace("listen 127.0.0.1:8080", &format!("listen {address}"));
        for (documented, replica) in
            ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"].iter().zip(replicas)
        {
            config = config.replace(documented, &replica.to_string());
        }
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .spawn()
            .expect("nginx: .ci/setup installs it (apt-get install nginx)");
        let nginx = Self { child, base: format!("http://{address}"), dir };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nginx did not listen within 5 s");
    }
}

/// Stops nginx as its manual says (SIGKILL to the master would leave its worker running).
impl Drop for Nginx {
    fn drop(&mut self) {
        let stopped = std::process::Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .args(["-c", "nginx.conf", "-s", "stop"])
            .status();
        if !stopped.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Follows production's stream through nginx until `last` says where to stop, resuming with
/// `Last-Event-ID` whenever the replica it was on goes; returns every version seen.
async fn follow(base: String, mut last: watch::Receiver<Option<u64>>) -> Vec<u64> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/environments/production/stream");
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let mut request = client.get(&url).bearer_auth(BINARY_ADMIN);
        if let Some(version) = seen.last() {
            request = request.header("last-event-id", version.to_string());
        }
        let Ok(mut response) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if response.status() != StatusCode::OK {
            // Every replica may be restarting at this moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut buffer = String::new();
        loop {
            if let Some(done) = *last.borrow_and_update()
                && seen.last() == Some(&done)
            {
                return seen;
            }
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = last.changed() => continue,
            };
            let Ok(Some(chunk)) = chunk else { break };
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let id = frame.lines().find_map(|line| line.strip_prefix("id: "));
                if let Some(id) = id {
                    seen.push(id.trim().parse().unwrap());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_in_a_loop_lose_no_acknowledged_write_and_streams_resume_anywhere() {
    let database = postgres_database().await;
    let db = Path::new(&database);
    let client = reqwest::Client::new();
    let addresses: Vec<SocketAddr> = (0..REPLICAS).map(|_| free_address()).collect();
    let mut replicas = Vec::new();
    for address in &addresses {
        replicas.push(Some(Rollgate::start(db, *address, &client).await));
    }
    let nginx = Nginx::start(&addresses).await;

    let (finish, last) = watch::channel(None);
    let subscriber = tokio::spawn(follow(nginx.base.clone(), last));

    let (stop, stopped) = watch::channel(false);
    let (count, mut counted) = watch::channel(0usize);
    let writer = {
        let (client, base) = (client.clone(), nginx.base.clone());
        tokio::spawn(async move {
            let url = format!("{base}/api/v1/environments/production/flags/checkout-v2/rollout");
            let mut acknowledged = Vec::new();
            let mut n = 0u64;
            while !*stopped.borrow() {
                n += 1;
                let body = json!({"percent": (n % 100_001) as f64 / 1000.0, "reason": format!("write {n}")});
                let sent = client.put(&url).bearer_auth(BINARY_ADMIN).json(&body).send().await;
                if let Ok(response) = sent
                    && response.status() == StatusCode::OK
                    && let Ok(answer) = response.json::<Value>().await
                {
                    acknowledged.push((n, answer["version"].as_u64().unwrap()));
                    count.send_replace(acknowledged.len());
                }
            }
            acknowledged
        })
    };

    for kill in 0..KILLS {
        let i = kill % REPLICAS;
        drop(replicas[i].take());
        replicas[i] = Some(Rollgate::start(db, addresses[i], &client).await);
        // At least one write between two kills.
        let before = *counted.borrow_and_update();
        let wrote =
            tokio::time::timeout(Duration::from_secs(10), counted.wait_for(|n| *n > before));
        assert!(wrote.await.is_ok(), "kill {kill}: writes go on within 10 s");
    }
    stop.send_replace(true);
    let acknowledged = writer.await.unwrap();

    // Every acknowledged write has its own version and its audit record.
    let versions: BTreeSet<u64> = acknowledged.iter().map(|(_, version)| *version).collect();
    assert_eq!(versions.len(), acknowledged.len(), "no two writes acknowledged with one version");
    // Whichever replica nginx asks has learned the last write (by NOTIFY, in milliseconds).
    let newest = *versions.last().expect("writes were acknowledged");
    let mut last = 0;
    until("a replica serving the last acknowledged version", async || {
        let snapshot = client
            .get(format!("{}/api/v1/environments/production/snapshot", nginx.base))
            .bearer_auth(BINARY_ADMIN)
            .send()
            .await
            .unwrap();
        last = snapshot.headers()["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
        last >= newest
    })
    .await;
    let path = "/api/v1/audit?flag=checkout-v2&env=production&limit=10000";
    let audit = admin_get(&client, &nginx.base, path).await;
    let reasons: BTreeSet<&str> =
        audit.as_array().unwrap().iter().filter_map(|record| record["reason"].as_str()).collect();
    for (n, version) in &acknowledged {
        assert!(reasons.contains(format!("write {n}").as_str()), "write {n} (v{version}) is lost");
    }

    // The subscriber saw every version once, in order, across every replica it was moved to.
    finish.send_replace(Some(last));
    let seen = tokio::time::timeout(Duration::from_secs(30), subscriber)
        .await
        .expect("the subscriber reaches the last version")
        .unwrap();
    for pair in seen.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no gap and no duplicate in {seen:?}");
    }
    eprintln!(
        "{KILLS} kills: {} writes acknowledged, versions {}..={last}, the subscriber saw {}",
        acknowledged.len(),
        seen[0],
        seen.len()
    );
}

/// Which replicas say they lead, from their `/metrics`.
async fn leaders(client: &reqwest::Client, replicas: &[Option<Rollgate>]) -> Vec<usize> {
    let mut leading = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let Some(replica) = replica else { continue };
        let metrics = client.get(format!("{}/metrics", replica.base)).send().await;
        if let Ok(metrics) = metrics
            && metrics.text().await.unwrap_or_default().contains("\nrollgate_leading 1\n")
        {
            leading.push(i);
        }
    }
    leading
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedulers_leader_killed_mid_plan_hands_over_and_each_step_is_taken_once() {
    let database = postgres_database().await;
    let db = Path::new(&database);
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(Some(Rollgate::start(db, free_address(), &client).await));
    }
    until("one replica leads", async || leaders(&client, &replicas).await.len() == 1).await;
    let leader = leaders(&client, &replicas).await[0];
    let other = replicas[(leader + 1) % REPLICAS].as_ref().unwrap().base.clone();
    let plan = json!({
        "flag": "checkout-v2", "environment": "production", "rationale": "leader test",
        "stages": [
            {"name": "one", "percent": 10, "hold_seconds": 2},
            {"name": "two", "percent": 50, "hold_seconds": 1},
            {"name": "all", "percent": 100}
        ]
    });
    let started = client
        .post(format!("{other}/api/v1/plans"))
        .bearer_auth(BINARY_ADMIN)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::CREATED);
    let id = started.json::<Value>().await.unwrap()["plan"]["id"].as_i64().unwrap();

    // Mid-plan, before its first step is due: the leader dies.
    let killed = std::time::Instant::now();
    drop(replicas[leader].take());
    until("another replica leads", async || leaders(&client, &replicas).await.len() == 1).await;
    let takeover = killed.elapsed();
    let successor = leaders(&client, &replicas).await[0];

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let plan = admin_get(&client, &other, &format!("/api/v1/plans/{id}")).await;
        if plan["status"] == "completed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the plan completes within 20 s: {plan}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decisions = admin_get(&client, &other, &format!("/api/v1/decisions?plan={id}")).await;
    let steps: Vec<(&str, &str)> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["action"].as_str().unwrap(), d["to_stage"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        steps,
        [("start", "one"), ("advance", "two"), ("advance", "all"), ("complete", "-")],
        "each step once, after the leader changed"
    );
    eprintln!("leader {leader} killed; replica {successor} led after {takeover:?}");
}
