//! Several servers on one PostgreSQL database, as replicas behind a load balancer: whichever
//! replica commits a change, every replica serves it, version by version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::edges::{fake_edge, kill, register, until_accepted};
use crate::hardening;
use crate::plans::{decisions, minutes, plan, report, stage_name, start_canary, t0};
use crate::sse::Events;
use crate::support::{
    ADMIN, READ, RELEASE, SNAPSHOT, Server, postgres_admin, start_replicas, start_replicas_with,
    until,
};

const REPLICAS: usize = 3;
/// Writers per replica, each making `WRITES` changes.
const WRITERS: usize = 3;
const WRITES: u64 = 20;

async fn status(replica: &Server, path: &str, token: &str) -> StatusCode {
    replica.get(path, Some(token)).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_replica_reach_every_replicas_subscribers_in_order() {
    let replicas = Arc::new(start_replicas(REPLICAS).await);
    let mut subscribers = Vec::new();
    for replica in replicas.iter() {
        subscribers.push(Events::open(replica, RELEASE, None).await.ids_only());
    }
    let mut first = Vec::new();
    for events in &mut subscribers {
        first.push(events.next_version().await);
    }
    assert!(first.iter().all(|version| *version == first[0]), "every replica starts alike");

    let writers: Vec<_> = (0..REPLICAS * WRITERS)
        .map(|i| {
            let replicas = Arc::clone(&replicas);
            tokio::spawn(async move {
                let path = "/api/v1/environments/production/flags/checkout-v2/rollout";
                for n in 0..WRITES {
                    let body =
                        json!({"percent": n as f64 + i as f64 / 1000.0, "reason": "replicas"});
                    let replica = &replicas[i % REPLICAS];
                    let (status, answer) =
                        replica.call(Method::PUT, path, Some(RELEASE), Some(body)).await;
                    assert_eq!(status, StatusCode::OK, "{answer}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let last = first[0] + (REPLICAS * WRITERS) as u64 * WRITES;
    for (i, events) in subscribers.iter_mut().enumerate() {
        let mut version = first[0];
        let every_version = async {
            while version < last {
                let next = events.next_version().await;
                assert_eq!(next, version + 1, "replica {i}: no gap and no duplicate");
                version = next;
            }
        };
        // Keep-alives keep the stream busy: bound the wait for the versions themselves.
        let arrived = tokio::time::timeout(Duration::from_secs(10), every_version).await;
        assert!(arrived.is_ok(), "replica {i}: every version within 10 s");
    }
    for replica in replicas.iter() {
        let snapshot = replica.get(SNAPSHOT, Some(RELEASE)).send().await.unwrap();
        assert_eq!(snapshot.headers()["etag"], format!("\"{last}\"").as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_or_deleted_on_one_replica_takes_effect_on_all() {
    let replicas = start_replicas(REPLICAS).await;
    let secret = replicas[0].token("app", "read", Some("production")).await;
    for replica in &replicas {
        until("the new token works on every replica", async || {
            status(replica, SNAPSHOT, &secret).await == StatusCode::OK
        })
        .await;
    }
    let mut stream = Events::open(&replicas[2], &secret, None).await;
    stream.next_version().await;

    let (deleted, _) =
        replicas[1].call(Method::DELETE, "/api/v1/tokens/app", Some(ADMIN), None).await;
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    // Keep-alives until the stream ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.try_next().await.is_some() {
        assert!(Instant::now() < deadline, "the deleted token's stream ends within 10 s");
    }
    for replica in &replicas {
        until("the deleted token fails on every replica", async || {
            status(replica, SNAPSHOT, &secret).await == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_it_goes() {
    let mut replicas = start_replicas(REPLICAS).await;
    let leaders = |replicas: &[Server]| -> Vec<usize> {
        (0..replicas.len()).filter(|&i| replicas[i].service().leads()).collect()
    };
    until("one replica leads", async || leaders(&replicas).len() == 1).await;
    let leader = leaders(&replicas)[0];
    drop(replicas.remove(leader));
    until("another replica takes the lead", async || leaders(&replicas).len() == 1).await;
    // Never two at once.
    for _ in 0..20 {
        assert!(leaders(&replicas).len() <= 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_pushes_to_an_edge_registered_on_any_replica() {
    let replicas = start_replicas(REPLICAS).await;
    let leads = |i: usize| replicas[i].service().leads();
    until("one replica leads", async || (0..REPLICAS).filter(|&i| leads(i)).count() == 1).await;
    let leader = (0..REPLICAS).find(|&i| leads(i)).unwrap();
    let (url, edge, mut seen) = fake_edge(0).await;
    register(&replicas[(leader + 1) % REPLICAS], &url).await;
    until_accepted(&mut seen, (1, 0)).await;
    let version = kill(&replicas[(leader + 2) % REPLICAS]).await;
    until_accepted(&mut seen, (version, 0)).await;
    let pushes = edge.pushes.lock().unwrap().clone();
    let mut distinct = pushes.clone();
    distinct.dedup();
    assert_eq!(pushes, distinct, "each position pushed once, by one replica: {pushes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_replicas_serve_reads_refuse_writes_then_catch_up() {
    let replicas = start_replicas(2).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut events = Events::open(b, RELEASE, None).await.ids_only();
    let before = events.next_version().await;
    let database = a.postgres_database();
    // The outage: no new connections to this test's database, and every open one cut.
    postgres_admin(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ))
    .await;

    let kill = "/api/v1/environments/production/flags/checkout-v2/kill";
    let refused = a.send(Method::POST, kill, Some(RELEASE)).json(&json!({"reason": "x"}));
    let refused = refused.send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    for replica in &replicas {
        assert_eq!(status(replica, SNAPSHOT, READ).await, StatusCode::OK, "served from memory");
        let ofrep = replica
            .send(Method::POST, "/ofrep/v1/evaluate/flags/checkout-v2", Some(READ))
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(ofrep.status(), StatusCode::OK);
        until("/readyz says the database is away", async || {
            status(replica, "/readyz", READ).await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    }

    postgres_admin(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).await;
    for replica in &replicas {
        until("/readyz says ready again", async || {
            status(replica, "/readyz", READ).await == StatusCode::OK
        })
        .await;
    }
    let (killed, answer) =
        a.call(Method::POST, kill, Some(RELEASE), Some(json!({"reason": "x"}))).await;
    assert_eq!(killed, StatusCode::OK, "{answer}");
    let version = answer["version"].as_u64().unwrap();
    assert_eq!(version, before + 1, "the refused kill changed nothing");
    let next = tokio::time::timeout(Duration::from_secs(10), events.next_version()).await;
    assert_eq!(next.ok(), Some(version), "the other replica's subscribers get it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_goes_mid_plan_another_replica_takes_each_step_once() {
    let clock = Arc::new(control_plane::clock::ManualClock::new(t0()));
    let mut replicas = start_replicas_with(REPLICAS, clock.clone()).await;
    // Every replica runs its scheduler, as `rollgate serve` does; only the leader's ticks act.
    let every = Duration::from_millis(20);
    let mut schedulers: Vec<_> = replicas
        .iter()
        .map(|replica| {
            control_plane::service::plans::spawn_scheduler(replica.service().clone(), every)
        })
        .collect();
    let id = start_canary(&replicas[1]).await["plan"]["id"].as_i64().unwrap();
    let stage_at = async |replica: &Server, at: i64, expected: &str| {
        clock.set(t0() + minutes(at));
        report(replica, 4000, 20).await;
        until(&format!("the plan reaches {expected} at +{at} min"), async || {
            stage_name(&plan(replica, id).await) == expected
        })
        .await;
    };
    stage_at(&replicas[0], 60, "assessed").await;

    let leads = |replicas: &[Server]| replicas.iter().position(|r| r.service().leads());
    let leader = leads(&replicas).expect("a replica leads");
    schedulers.remove(leader).abort();
    drop(replicas.remove(leader));
    stage_at(&replicas[0], 24 * 60, "expanded").await;
    stage_at(&replicas[1], 3 * 24 * 60, "ga").await;
    until("the plan completes", async || plan(&replicas[0], id).await["status"] == "completed")
        .await;

    let log = decisions(&replicas[0]).await;
    let steps: Vec<(&str, &str)> = log
        .iter()
        .map(|d| (d["action"].as_str().unwrap(), d["to_stage"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        steps,
        [
            ("start", "canary"),
            ("advance", "assessed"),
            ("advance", "expanded"),
            ("advance", "ga"),
            ("complete", "-")
        ],
        "each step once"
    );
    schedulers.iter().for_each(tokio::task::JoinHandle::abort);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_metric_quota_holds_across_replicas() {
    let replicas = start_replicas_with(2, hardening::stopped_clock()).await;
    let flags = hardening::names("f", 0..157);
    for flag in &flags {
        let body = json!({"key": flag, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"});
        let (status, answer) =
            replicas[0].call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let metrics = hardening::names("m", 0..32);
    // 156 flags × 2 variants × 32 metrics: 9,984 new rows through the first replica.
    let most = hardening::counters(&flags[..156], &metrics, 1);
    let (status, _, answer) = hardening::report(&replicas[0], READ, &most).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // 18 more through the second pass the quota the first one charged.
    let more = hardening::counters(&flags[156..], &metrics[..9], 1);
    let (status, _, problem) = hardening::report(&replicas[1], READ, &more).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("it added 9984 this minute"), "{problem}");
    let fewer = hardening::counters(&flags[156..], &metrics[..8], 1);
    let (status, _, answer) = hardening::report(&replicas[1], READ, &fewer).await;
    assert_eq!(status, StatusCode::ACCEPTED, "16 rows fill the quota exactly: {answer}");
}
