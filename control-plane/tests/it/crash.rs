//! Crash safety: the real `rollgate` binary is killed with SIGKILL again and again while clients
//! write. Every write it acknowledged must be there after a restart, and the audit log must hold
//! exactly the writes that were acknowledged, plus at most the ones in flight at the kill.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support::{BINARY_ADMIN as ADMIN, Rollgate, free_address};

const ROLLOUT: &str = "/api/v1/environments/production/flags/checkout-v2/rollout";
const ROUNDS: u32 = 5;
const WRITERS: u32 = 3;

#[tokio::test]
async fn a_plan_interrupted_by_kill_9_advances_when_its_hold_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollgate.db");
    let address = free_address();
    let client = reqwest::Client::new();
    let server = Rollgate::start(&db, address, &client).await;
    let plan = json!({
        "flag": "checkout-v2", "environment": "production", "rationale": "restart test",
        "stages": [{"name": "first", "percent": 5, "hold_seconds": 2}, {"name": "second", "percent": 50, "hold_seconds": 3600}]
    });
    let response =
        client.post(format!("{}/api/v1/plans", server.base)).bearer_auth(ADMIN).json(&plan);
    let started: Value = response.send().await.unwrap().json().await.unwrap();
    let entered: chrono::DateTime<chrono::Utc> =
        started["plan"]["stage_started_at"].as_str().unwrap().parse().unwrap();
    server.kill();

    let server = Rollgate::start(&db, address, &client).await;
    let mut advanced = None;
    for _ in 0..300 {
        let decisions = server.get(&client, "/api/v1/decisions?flag=checkout-v2").await;
        advanced = decisions.as_array().unwrap().iter().find(|d| d["action"] == "advance").cloned();
        if advanced.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let advanced = advanced.expect("the plan advanced within 15 s of the restart");
    assert_eq!(
        (advanced["decided_by"].as_str(), advanced["to_stage"].as_str()),
        (Some("schedule"), Some("second"))
    );
    let at: chrono::DateTime<chrono::Utc> = advanced["at"].as_str().unwrap().parse().unwrap();
    assert!(
        at >= entered + chrono::Duration::seconds(2),
        "advanced at {at}, before the hold ended"
    );
    let decisions = server.get(&client, "/api/v1/decisions?flag=checkout-v2").await;
    assert_eq!(decisions.as_array().unwrap().len(), 2, "one start, one advance: {decisions}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollgate.db");
    let address = free_address();
    let client = reqwest::Client::new();
    let next_write = Arc::new(AtomicU32::new(1));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::new()));

    for round in 0..ROUNDS {
        let server = Rollgate::start(&db, address, &client).await;
        // Kill after a different number of acknowledgements each round, with writes in flight.
        let kill_after = 10 + 7 * round as usize;
        let acknowledged_before = acknowledged.lock().await.len();
        let (enough, mut enough_seen) = tokio::sync::watch::channel(false);
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let (client, base) = (client.clone(), server.base.clone());
            let (next_write, acknowledged, attempted, enough) =
                (next_write.clone(), acknowledged.clone(), attempted.clone(), enough.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let n = next_write.fetch_add(1, Ordering::SeqCst);
                    attempted.lock().await.insert(n);
                    let body =
                        json!({"percent": n as f64 / 1000.0, "reason": format!("write {n}")});
                    let request =
                        client.put(format!("{base}{ROLLOUT}")).bearer_auth(ADMIN).json(&body);
                    match request.send().await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let mut acknowledged = acknowledged.lock().await;
                            acknowledged.insert(n);
                            if acknowledged.len() >= acknowledged_before + kill_after {
                                let _ = enough.send(true);
                            }
                        }
                        Ok(response) => panic!("write {n}: {}", response.status()),
                        // The server died under this request: it may or may not have committed.
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(enough);
        enough_seen.wait_for(|enough| *enough).await.unwrap();
        server.kill();
        for writer in writers {
            writer.await.unwrap();
        }
        check(&db, address, &client, &acknowledged, &attempted).await;
    }
    assert!(acknowledged.lock().await.len() >= (10..10 + 7 * ROUNDS as usize).step_by(7).sum());
}

/// Restarts the server and compares what it has with what the clients were told.
async fn check(
    db: &Path,
    address: SocketAddr,
    client: &reqwest::Client,
    acknowledged: &Mutex<BTreeSet<u32>>,
    attempted: &Mutex<BTreeSet<u32>>,
) {
    let server = Rollgate::start(db, address, client).await;
    let audit =
        server.get(client, "/api/v1/audit?flag=checkout-v2&env=production&limit=10000").await;
    let audit = audit.as_array().unwrap();
    let audited: BTreeSet<u32> = audit
        .iter()
        .filter(|record| record["action"] == "flag.rollout")
        .map(|record| record["reason"].as_str().unwrap()["write ".len()..].parse().unwrap())
        .collect();
    let (acknowledged, attempted) = (acknowledged.lock().await, attempted.lock().await);
    eprintln!(
        "acknowledged {}, attempted {}, audited {}",
        acknowledged.len(),
        attempted.len(),
        audited.len()
    );
    let lost: Vec<_> = acknowledged.difference(&audited).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let invented: Vec<_> = audited.difference(&attempted).collect();
    assert!(invented.is_empty(), "audited writes nobody made: {invented:?}");

    // The stored state is the last audited write's, and the snapshot serves it.
    let last = audit.iter().rev().find(|record| record["action"] == "flag.rollout").unwrap();
    let percent = &last["after"]["fallthrough"]["rollout"]["percent"];
    let flag = server.get(client, "/api/v1/flags/checkout-v2").await;
    assert_eq!(&flag["environments"]["production"]["fallthrough"]["rollout"]["percent"], percent);
    let snapshot = server.get(client, "/api/v1/environments/production/snapshot").await;
    assert_eq!(&snapshot["flags"][0]["fallthrough"]["rollout"]["percent"], percent);
    server.kill();
}
