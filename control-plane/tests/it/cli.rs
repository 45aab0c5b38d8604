//! The `rollgate` CLI, the real binary, against a real server: every subcommand, in text and
//! JSON, and the failures a release manager meets, each with its exit code.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN, READ, RELEASE, Server, start};

/// Runs `rollgate args` with the server's URL and `token` in the environment, and a config
/// file of its own.
async fn rollgate(server: &Server, token: Option<&str>, config: &Path, args: &[&str]) -> Output {
    let mut command = command(config, args);
    command.env("ROLLGATE_URL", format!("http://{}", server.address));
    if let Some(token) = token {
        command.env("ROLLGATE_TOKEN", token);
    }
    command.output().await.unwrap()
}

fn command(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"));
    command
        .args(args)
        .env("ROLLGATE_CONFIG", config)
        .env_remove("ROLLGATE_URL")
        .env_remove("ROLLGATE_TOKEN")
        .env_remove("ROLLGATE_ENV")
        .kill_on_drop(true);
    command
}

/// Runs `rollgate args` with nothing but the config file.
async fn configured(config: &Path, args: &[&str]) -> Output {
    command(config, args).output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

/// Runs `rollgate args`, which must fail, and returns its exit code and message.
async fn fails(
    server: &Server,
    token: Option<&str>,
    config: &Path,
    args: &[&str],
) -> (i32, String) {
    failure(&rollgate(server, token, config, args).await)
}

/// The exit code and the message of a failed run.
fn failure(output: &Output) -> (i32, String) {
    (output.status.code().unwrap(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn every_subcommand_against_a_real_server() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let run = |token: Option<&'static str>, args: &'static [&'static str]| {
        rollgate(&server, token, &config, args)
    };

    // Configured once; later commands need neither the URL nor the token.
    let url = format!("http://{}", server.address);
    let set = command(
        &config,
        &["config", "set", "--url", &url, "--token", RELEASE, "--env", "production"],
    )
    .output()
    .await
    .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let shown =
        json_of(&command(&config, &["config", "show", "-o", "json"]).output().await.unwrap());
    assert_eq!(
        (shown["url"].as_str(), shown["environment"].as_str()),
        (Some(url.as_str()), Some("production"))
    );
    assert_eq!(shown["token"], "rg_rel…", "the token is masked");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    let created = json_of(
        &configured(
            &config,
            &[
                "flags",
                "create",
                "banner",
                "--variant",
                "a=\"A\"",
                "--variant",
                "b=\"B\"",
                "--off",
                "a",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        (created["type"].as_str(), created["variants"]["b"].as_str()),
        (Some("string"), Some("B"))
    );
    let listed = stdout(&configured(&config, &["flags", "list"]).await);
    assert!(listed.starts_with("FLAG"), "{listed}");
    assert!(listed.contains("banner") && listed.contains("checkout-v2"), "{listed}");
    assert!(!listed.contains('\x1b'), "no colours when stdout is not a terminal");
    let shown = stdout(&configured(&config, &["flags", "get", "checkout-v2"]).await);
    assert!(shown.contains("production   off to everyone"), "{shown}");

    let rolled = json_of(
        &configured(
            &config,
            &["rollout", "checkout-v2", "25%", "--reason", "healthy at 5%", "-o", "json"],
        )
        .await,
    );
    assert_eq!(rolled["state"]["fallthrough"]["rollout"]["percent"], 25_000);
    let killed = stdout(&configured(&config, &["kill", "checkout-v2", "--reason", "pager"]).await);
    assert!(killed.contains("KILLED (was 25% on)"), "{killed}");
    assert_eq!(server.evaluate("user-1").await.1, flag_core::Reason::Disabled);
    let unkilled =
        stdout(&configured(&config, &["unkill", "checkout-v2", "--reason", "fixed"]).await);
    assert!(unkilled.contains("checkout-v2 in production: 25% on"), "{unkilled}");

    let started = json_of(
        &configured(
            &config,
            &[
                "plan",
                "start",
                "checkout-v2",
                "--template",
                "canary",
                "--reason",
                "QA passed",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(started["decision"]["action"], "start");
    let status = stdout(&configured(&config, &["plan", "status", "checkout-v2"]).await);
    assert!(status.contains("▶  canary    5%        1h"), "{status}");
    assert!(status.contains("errors/requests <= 2%  -    0 of 0  not enough data"), "{status}");
    let advanced = stdout(
        &configured(&config, &["plan", "advance", "checkout-v2", "--reason", "assessed early"])
            .await,
    );
    assert!(advanced.starts_with("proceed advance by ana: assessed early"), "{advanced}");
    let id = started["plan"]["id"].to_string();
    let held = json_of(
        &configured(&config, &["plan", "hold", &id, "--reason", "tickets", "-o", "json"]).await,
    );
    assert_eq!(held["plan"]["status"], "held");
    let resumed = json_of(
        &configured(&config, &["plan", "resume", &id, "--reason", "fine", "-o", "json"]).await,
    );
    assert_eq!(resumed["plan"]["status"], "running");
    let back = json_of(
        &configured(&config, &["plan", "rollback", &id, "--reason", "latency", "-o", "json"]).await,
    );
    assert_eq!(
        (back["plan"]["stage"].as_u64(), back["plan"]["status"].as_str()),
        (Some(0), Some("held"))
    );

    let decisions =
        json_of(&configured(&config, &["decisions", "--flag", "checkout-v2", "-o", "json"]).await);
    let actions: Vec<&str> =
        decisions.as_array().unwrap().iter().map(|d| d["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["start", "advance", "hold", "resume", "rollback"]);
    let table = stdout(&configured(&config, &["decisions", "--plan", &id]).await);
    assert!(table.contains("canary→assessed") && table.contains("latency"), "{table}");
    let csv = stdout(&configured(&config, &["decisions", "--flag", "checkout-v2", "--csv"]).await);
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(csv.starts_with("date,stage,decision,rationale,decided_by"), "{csv}");
    let audit = json_of(
        &configured(
            &config,
            &["audit", "--flag", "checkout-v2", "--env", "production", "-o", "json"],
        )
        .await,
    );
    let kill = audit.as_array().unwrap().iter().find(|r| r["action"] == "flag.kill").unwrap();
    assert_eq!((kill["actor"].as_str(), kill["reason"].as_str()), (Some("ana"), Some("pager")));
    let audit = stdout(&configured(&config, &["audit", "--flag", "checkout-v2"]).await);
    assert!(audit.contains("flag.kill") && audit.contains("pager"), "{audit}");

    let body = json!({"name": "edge-eu", "url": "http://127.0.0.1:9", "environment": "production"});
    let (status, _) =
        server.call(reqwest::Method::POST, "/api/v1/edges", Some(ADMIN), Some(body)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let edges = json_of(&configured(&config, &["edges", "-o", "json"]).await);
    assert_eq!(edges[0]["name"], "edge-eu");
    let edges = stdout(&configured(&config, &["edges"]).await);
    assert!(edges.contains("edge-eu") && edges.contains("production"), "{edges}");

    // The environment variable overrides the file's token: a read token may not roll out.
    let (code, message) = failure(
        &run(
            Some(READ),
            &["rollout", "checkout-v2", "50%", "--env", "production", "--reason", "x"],
        )
        .await,
    );
    assert_eq!(code, 4);
    assert!(message.contains("403 Forbidden") && message.contains("Ask an admin"), "{message}");
}

#[tokio::test]
async fn failures_say_what_to_do_and_exit_with_their_code() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut no_server = command(&config, &["flags", "list"]);
    no_server.env("ROLLGATE_URL", format!("http://{nobody}")).env("ROLLGATE_TOKEN", RELEASE);
    let (code, message) = failure(&no_server.output().await.unwrap());
    assert_eq!(code, 3);
    assert!(
        message.contains("cannot reach the control plane")
            && message.contains("Is `rollgate serve` running"),
        "{message}"
    );

    let (code, message) = fails(&server, Some("rg_not_a_token"), &config, &["flags", "list"]).await;
    assert_eq!(code, 4);
    assert!(
        message.contains("401") && message.contains("rollgate config set --token"),
        "{message}"
    );
    let (code, message) = fails(&server, None, &config, &["edges"]).await;
    assert_eq!(code, 4);
    assert!(message.contains("No token is set"), "{message}");

    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["kill", "nope", "--env", "production", "--reason", "x"],
    )
    .await;
    assert_eq!(code, 5);
    assert!(
        message.contains("flag `nope` not found") && message.contains("rollgate flags list"),
        "{message}"
    );
    let (code, _) = fails(&server, Some(RELEASE), &config, &["flags", "get", "nope"]).await;
    assert_eq!(code, 5);

    let (code, message) =
        fails(&server, Some(RELEASE), &config, &["kill", "checkout-v2", "--reason", "x"]).await;
    assert_eq!(code, 2);
    assert!(message.contains("which environment?"), "{message}");
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["rollout", "checkout-v2", "120%", "--env", "production", "--reason", "x"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(message.contains("not a percentage"), "{message}");
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["rollout", "checkout-v2", "5%", "--env", "production", "--reason", " "],
    )
    .await;
    assert_eq!(code, 6);
    assert!(message.contains("`reason` must not be empty"), "{message}");

    let start = [
        "plan",
        "start",
        "checkout-v2",
        "--env",
        "production",
        "--template",
        "canary",
        "--reason",
        "go",
    ];
    assert!(rollgate(&server, Some(RELEASE), &config, &start).await.status.success());
    let (code, message) = fails(&server, Some(RELEASE), &config, &start).await;
    assert_eq!(code, 6);
    assert!(message.contains("409 Conflict"), "{message}");
    let complete = ["plan", "complete", "checkout-v2", "--env", "production", "--reason", "done"];
    let (code, message) = fails(&server, Some(RELEASE), &config, &complete).await;
    assert_eq!(code, 6);
    assert!(message.contains("only the last stage completes"), "{message}");
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["plan", "status", "banner", "--env", "production"],
    )
    .await;
    assert_eq!(code, 5);
    assert!(message.contains("rollgate plan start banner"), "{message}");
    std::fs::write(&config, "url = 3").unwrap();
    let (code, message) = fails(&server, Some(RELEASE), &config, &["edges"]).await;
    assert_eq!(code, 2);
    assert!(message.contains("is not a valid config file"), "{message}");
}

#[tokio::test]
async fn plan_status_watch_follows_the_plan_until_it_ends() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let start = [
        "plan",
        "start",
        "checkout-v2",
        "--env",
        "production",
        "--template",
        "canary",
        "--reason",
        "go",
    ];
    assert!(rollgate(&server, Some(RELEASE), &config, &start).await.status.success());

    let mut watch =
        command(&config, &["plan", "status", "checkout-v2", "--env", "production", "--watch"]);
    watch
        .env("ROLLGATE_URL", format!("http://{}", server.address))
        .env("ROLLGATE_TOKEN", RELEASE)
        .stdout(std::process::Stdio::piped());
    let mut watching = watch.spawn().unwrap();
    // Once the watch has drawn the running plan, the plan is killed.
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        watching.stdout.take().unwrap(),
    ));
    let mut seen = String::new();
    while !seen.contains("running") {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&line);
    }
    let kill =
        ["plan", "rollback", "checkout-v2", "--env", "production", "--kill", "--reason", "errors"];
    assert!(rollgate(&server, Some(RELEASE), &config, &kill).await.status.success());
    let mut rest = String::new();
    while let Some(line) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap()
    {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status =
        tokio::time::timeout(Duration::from_secs(10), watching.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert!(rest.contains("rolled_back"), "the watch drew the rollback and ended:\n{rest}");
}
