//! The `rollgate` CLI, the real binary, against a real server: every subcommand, in text and
//! JSON, and the failures a release manager meets, each with its exit code.

use std::future::IntoFuture as _;
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

    // A plan never lowers exposure: the canary's 5% would take the feature from 20% of users.
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["plan", "start", "checkout-v2", "--template", "canary", "--reason", "QA passed"],
    )
    .await;
    assert_eq!(code, 6);
    assert!(message.contains("already serves `on` to 25%"), "{message}");
    assert!(
        message.contains("stage `expanded` (25%)") && message.contains("--start-at"),
        "{message}"
    );
    assert!(!message.contains("already exists"), "{message}");
    configured(&config, &["rollout", "checkout-v2", "5%", "--reason", "back to the canary's 5%"])
        .await;
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
    // While it runs, the plan owns the audience.
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["rollout", "checkout-v2", "50%", "--reason", "impatient"],
    )
    .await;
    assert_eq!(code, 6);
    assert!(message.contains("hold it first"), "{message}");
    let status = stdout(&configured(&config, &["plan", "status", "checkout-v2"]).await);
    assert!(status.contains("▶  canary    5%        1h"), "{status}");
    assert!(
        status.contains(
            "errors/requests <= control + 0.5 points (95% sequential)  -    0 of 0  insufficient data"
        ),
        "{status}"
    );
    let advanced = stdout(
        &configured(&config, &["plan", "advance", "checkout-v2", "--reason", "assessed early"])
            .await,
    );
    assert!(advanced.starts_with("Advanced by ana: assessed early"), "{advanced}");
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
    assert_eq!(actions, ["rollback", "resume", "hold", "advance", "start"], "newest first");
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
    let killed = stdout(&rollgate(&server, Some(RELEASE), &config, &kill).await);
    assert!(killed.starts_with("Rolled back by ana: errors"), "once, in words: {killed}");
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

#[tokio::test]
async fn audit_shows_the_newest_first_and_says_when_more_exist() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let path = "/api/v1/environments/production/flags/checkout-v2/rollout";
    for n in 1..=120 {
        let body = json!({"percent": f64::from(n) / 10.0, "reason": format!("step {n}")});
        let (status, answer) =
            server.call(reqwest::Method::PUT, path, Some(RELEASE), Some(body)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    }
    let kill = "/api/v1/environments/production/flags/checkout-v2/kill";
    let body = json!({"reason": "the newest"});
    let (status, _) = server.call(reqwest::Method::POST, kill, Some(RELEASE), Some(body)).await;
    assert_eq!(status, reqwest::StatusCode::OK);

    let shown =
        rollgate(&server, Some(RELEASE), &config, &["audit", "--flag", "checkout-v2"]).await;
    let (text, hint) = (stdout(&shown), String::from_utf8_lossy(&shown.stderr).into_owned());
    let first = text.lines().nth(1).unwrap();
    assert!(first.contains("flag.kill") && first.contains("the newest"), "{text}");
    assert_eq!(text.lines().count(), 51, "a header and the newest 50: {text}");
    assert!(hint.contains("The newest 50 records are shown and there are more"), "{hint}");

    let all = rollgate(
        &server,
        Some(RELEASE),
        &config,
        &["audit", "--flag", "checkout-v2", "--limit", "500", "--since", "1h", "-o", "json"],
    )
    .await;
    let records = json_of(&all);
    assert_eq!(records.as_array().unwrap().len(), 122, "the demo flag's creation too");
    assert_eq!(records[0]["reason"], "the newest");
    assert!(all.stderr.is_empty(), "no hint when everything is shown");
    let future = rollgate(
        &server,
        Some(RELEASE),
        &config,
        &["audit", "--since", "2999-01-01T00:00:00Z", "-o", "json"],
    )
    .await;
    assert_eq!(json_of(&future), json!([]));
    let (code, message) =
        fails(&server, Some(RELEASE), &config, &["audit", "--since", "yesterday"]).await;
    assert_eq!(code, 2);
    assert!(message.contains("an age such as 30m, 12h or 7d"), "{message}");
}

#[tokio::test]
async fn flags_metadata_and_state_from_a_file() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let run = async |args: &[&str]| rollgate(&server, Some(RELEASE), &config, args).await;
    let created = json_of(
        &run(&[
            "flags",
            "create",
            "banner",
            "--variant",
            "old=\"Welcome\"",
            "--variant",
            "new=\"Hello!\"",
            "--off",
            "old",
            "--description",
            "The home page's banner",
            "--owner",
            "web",
            "--tags",
            "ui,copy",
            "-o",
            "json",
        ])
        .await,
    );
    assert_eq!(
        (created["owner"].as_str(), created["tags"].clone()),
        (Some("web"), json!(["ui", "copy"]))
    );
    assert!(created["created_at"].is_string() && created["updated_at"].is_string(), "{created}");

    let by_tag = json_of(&run(&["flags", "list", "--tag", "ui", "-o", "json"]).await);
    let keys: Vec<&str> =
        by_tag.as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["banner"]);
    let by_text = stdout(&run(&["flags", "list", "--search", "HOME PAGE"]).await);
    assert!(
        by_text.contains("banner")
            && by_text.contains("ui, copy")
            && !by_text.contains("checkout-v2"),
        "{by_text}"
    );
    let shown = stdout(&run(&["flags", "get", "banner"]).await);
    assert!(shown.contains("The home page's banner") && shown.contains("owner: web"), "{shown}");

    let described =
        json_of(&run(&["flags", "describe", "banner", "--owner", "growth", "-o", "json"]).await);
    assert_eq!(described["owner"], "growth");
    assert_eq!(described["description"], "The home page's banner", "the rest stays");
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["flags", "describe", "banner", "--tags", "no spaces"],
    )
    .await;
    assert_eq!(code, 6);
    assert!(message.contains("tags[0]"), "{message}");

    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"enabled": true, "rules": [{"conditions": [{"attribute": "country", "op": "in", "values": ["SE"]}], "serve": {"variant": "new"}}], "fallthrough": {"variant": "old"}}"#).unwrap();
    let path = state.to_str().unwrap();
    let changed = json_of(
        &run(&[
            "flags",
            "set-state",
            "banner",
            "--file",
            path,
            "--env",
            "production",
            "--reason",
            "Sweden first",
            "-o",
            "json",
        ])
        .await,
    );
    assert_eq!(changed["state"]["rules"][0]["serve"]["variant"], "new");
    let staged = json_of(
        &run(&["flags", "list", "--stage", "beta", "--env", "production", "-o", "json"]).await,
    );
    assert_eq!(staged, json!([]), "no flag at a beta stage yet");
    std::fs::write(&state, "{not json").unwrap();
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["flags", "set-state", "banner", "--file", path, "--env", "production", "--reason", "x"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(message.contains("is not JSON"), "{message}");
}

#[tokio::test]
async fn environments_segments_tokens_webhooks_and_edges() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let run = async |args: &[&str]| rollgate(&server, Some(ADMIN), &config, args).await;

    assert!(stdout(&run(&["environments", "create", "qa"]).await).contains("qa"));
    let environments = json_of(&run(&["environments", "list", "-o", "json"]).await);
    assert!(environments.as_array().unwrap().iter().any(|e| e["name"] == "qa"), "{environments}");
    let origins = stdout(&run(&["environments", "origins", "qa", "https://app.example.com"]).await);
    assert!(origins.contains("ALLOWED ORIGINS") && origins.contains("https://app.example.com"));
    let (code, message) = fails(
        &server,
        Some(ADMIN),
        &config,
        &["environments", "origins", "qa", "https://app.example.com/login"],
    )
    .await;
    assert_eq!(code, 6, "{message}");
    assert!(message.contains("scheme, host and port only"), "{message}");
    let page = json_of(
        &run(&["tokens", "create", "qa-page", "--scope", "client", "--env", "qa", "-o", "json"])
            .await,
    );
    assert!(page["token"].as_str().unwrap().starts_with("rg_"), "{page}");
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &["rollout", "checkout-v2", "5%", "--env", "nope", "--reason", "x"],
    )
    .await;
    assert_eq!(code, 5);
    assert!(message.contains("`rollgate environments list` shows the environments"), "{message}");

    // Segments, with keys pasted from a spreadsheet.
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "carol\ndave, erin\tfrank\n").unwrap();
    let keys = keys.to_str().unwrap();
    let created = json_of(
        &run(&[
            "segments",
            "create",
            "staff",
            "--include",
            "ana,ben",
            "--keys-file",
            keys,
            "-o",
            "json",
        ])
        .await,
    );
    assert_eq!(created["included"], json!(["ana", "ben", "carol", "dave", "erin", "frank"]));
    let (code, message) =
        fails(&server, Some(ADMIN), &config, &["segments", "create", "staff"]).await;
    assert_eq!(code, 6);
    assert!(message.contains("segment `staff` already exists"), "{message}");
    let replaced = json_of(
        &run(&["segments", "create", "staff", "--include", "zoe", "--replace", "-o", "json"]).await,
    );
    assert_eq!(replaced["included"], json!(["zoe"]));
    let listed = stdout(&run(&["segments", "list"]).await);
    assert!(listed.contains("staff"), "{listed}");
    assert!(stdout(&run(&["segments", "get", "staff"]).await).contains("included: zoe"));
    assert!(run(&["segments", "delete", "staff", "--reason", "done"]).await.status.success());
    let (code, message) = fails(&server, Some(ADMIN), &config, &["segments", "get", "staff"]).await;
    assert_eq!(code, 5);
    assert!(message.contains("`rollgate segments list`"), "{message}");

    // Tokens: the secret once, never in the list.
    let created =
        stdout(&run(&["tokens", "create", "shop", "--scope", "read", "--env", "production"]).await);
    let secret = created.lines().next().unwrap().to_owned();
    assert!(secret.starts_with("rg_") && created.contains("shown once"), "{created}");
    let listed = stdout(&run(&["tokens", "list"]).await);
    assert!(listed.contains("shop") && !listed.contains(&secret), "{listed}");
    assert_eq!(
        rollgate(&server, Some(&secret), &config, &["flags", "list"]).await.status.code(),
        Some(4),
        "a read token may not list flags"
    );
    assert!(run(&["tokens", "delete", "shop"]).await.status.success());
    let (code, message) = fails(&server, Some(ADMIN), &config, &["tokens", "delete", "shop"]).await;
    assert_eq!(code, 5);
    assert!(message.contains("`rollgate tokens list`"), "{message}");
    let (code, _) =
        fails(&server, Some(RELEASE), &config, &["tokens", "create", "x", "--scope", "admin"])
            .await;
    assert_eq!(code, 4, "only admins make tokens");

    // Webhooks and edges.
    let created = stdout(
        &run(&["webhooks", "create", "releases", "http://127.0.0.1:9/hook", "--env", "production"])
            .await,
    );
    assert!(created.contains("releases"), "{created}");
    assert!(json_of(&run(&["webhooks", "list", "-o", "json"]).await)[0]["name"] == "releases");
    assert!(run(&["webhooks", "delete", "releases"]).await.status.success());
    assert_eq!(json_of(&run(&["webhooks", "list", "-o", "json"]).await), json!([]));
    assert!(
        run(&["edges", "register", "edge-eu", "http://127.0.0.1:9", "--env", "production"])
            .await
            .status
            .success()
    );
    assert!(stdout(&run(&["edges"]).await).contains("edge-eu"));
    assert!(stdout(&run(&["edges", "delete", "edge-eu"]).await).contains("deleted"));
    assert_eq!(json_of(&run(&["edges", "list", "-o", "json"]).await), json!([]));

    // The four-stage template's segments, named as the CLI's options.
    let (code, message) = fails(
        &server,
        Some(RELEASE),
        &config,
        &[
            "plan",
            "start",
            "checkout-v2",
            "--env",
            "production",
            "--template",
            "four-stage",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        message.contains("--internal-segment") && message.contains("--alpha-segment"),
        "{message}"
    );
}

/// A proxy to `server` that, before forwarding the first PUT, makes a change of its own
/// straight on the server: another release manager's edit landing mid-apply.
async fn meddling_proxy(server: &Server) -> String {
    let target = format!("http://{}", server.address);
    let meddled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = server.client.clone();
    let forward = async move |request: axum::extract::Request| {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        if parts.method == axum::http::Method::PUT
            && !meddled.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let rollout =
                format!("{target}/api/v1/environments/production/flags/checkout-v2/rollout");
            let status = client
                .put(rollout)
                .bearer_auth(RELEASE)
                .json(&json!({"percent": 42, "reason": "meanwhile, by hand"}))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, reqwest::StatusCode::OK);
        }
        let mut forwarded = client.request(parts.method.clone(), format!("{target}{}", parts.uri));
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST {
                forwarded = forwarded.header(name, value);
            }
        }
        let answer = forwarded.body(body).send().await.unwrap();
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let mut response =
            axum::response::Response::new(axum::body::Body::from(answer.bytes().await.unwrap()));
        *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
        *response.headers_mut() = headers;
        response
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    format!("http://{address}")
}

#[tokio::test]
async fn flags_as_code_round_trips_and_applies_with_if_match() {
    let (source, target) = (start().await, start().await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let on =
        async |server: &Server, args: &[&str]| rollgate(server, Some(ADMIN), &config, args).await;

    // A control plane with a segment, a flag with metadata and a rule, and a rollout.
    assert!(
        on(&source, &["segments", "create", "staff", "--include", "ana,ben"])
            .await
            .status
            .success()
    );
    let banner = [
        "flags",
        "create",
        "banner",
        "--variant",
        "old=\"Welcome\"",
        "--variant",
        "new=\"Hi\"",
        "--off",
        "old",
        "--description",
        "The banner",
        "--owner",
        "web",
        "--tags",
        "ui",
    ];
    assert!(on(&source, &banner).await.status.success());
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"enabled": true, "rules": [{"segments": ["staff"], "serve": {"variant": "new"}}], "fallthrough": {"variant": "old"}}"#).unwrap();
    let state = state.to_str().unwrap();
    assert!(
        on(
            &source,
            &[
                "flags",
                "set-state",
                "banner",
                "--file",
                state,
                "--env",
                "staging",
                "--reason",
                "staff first"
            ]
        )
        .await
        .status
        .success()
    );
    assert!(
        on(
            &source,
            &[
                "rollout",
                "checkout-v2",
                "25%",
                "--env",
                "production",
                "--stage",
                "beta",
                "--reason",
                "beta"
            ]
        )
        .await
        .status
        .success()
    );

    let exported = dir.path().join("flags.yaml");
    let exported = exported.to_str().unwrap();
    assert!(on(&source, &["export", "-f", exported]).await.status.success());
    let file = std::fs::read_to_string(exported).unwrap();
    assert!(
        file.contains("fallthrough:\n        variant: old") && file.contains("owner: web"),
        "{file}"
    );

    // The dry run shows the diff and changes nothing.
    let before = target.observable_state().await;
    let planned = stdout(&on(&target, &["apply", "-f", exported, "--dry-run"]).await);
    for change in [
        "+ segment staff",
        "+ flag banner",
        "~ flag banner in staging",
        "~ flag checkout-v2 in production",
        "+    percent: 25000",
    ] {
        assert!(planned.contains(change), "{change}: {planned}");
    }
    assert!(planned.ends_with("\n4 change(s); nothing applied (--dry-run).\n"), "{planned}");
    assert_eq!(target.observable_state().await, before);

    // Applied, the target exports the very same file; applied again, nothing is left to do.
    let applied = stdout(&on(&target, &["apply", "-f", exported, "--reason", "from git"]).await);
    assert!(applied.contains("change(s) applied"), "{applied}");
    let again = dir.path().join("again.yaml");
    let again = again.to_str().unwrap();
    assert!(on(&target, &["export", "-f", again]).await.status.success());
    assert_eq!(std::fs::read_to_string(again).unwrap(), file, "export, apply, export: identical");
    let unchanged = stdout(&on(&target, &["apply", "-f", exported, "--reason", "again"]).await);
    assert_eq!(unchanged, "Nothing to change: the control plane matches the file.\n");
    let audit = json_of(&on(&target, &["audit", "-o", "json"]).await);
    assert!(audit.as_array().unwrap().iter().any(|r| r["reason"] == "from git"), "{audit}");

    // A change landing between apply's read and its write is reported, not overwritten.
    std::fs::write(exported, file.replace("percent: 25000", "percent: 30000")).unwrap();
    let proxy = meddling_proxy(&target).await;
    let raced = command(&config, &["apply", "-f", exported, "--reason", "bump"])
        .env("ROLLGATE_URL", &proxy)
        .env("ROLLGATE_TOKEN", ADMIN)
        .output()
        .await
        .unwrap();
    let (code, message) = failure(&raced);
    assert_eq!(code, 6, "{message}");
    assert!(
        message.contains("applying `~ flag checkout-v2 in production`") && message.contains("412"),
        "{message}"
    );
    let (_, record) =
        target.call(reqwest::Method::GET, "/api/v1/flags/checkout-v2", Some(RELEASE), None).await;
    assert_eq!(
        record["environments"]["production"]["fallthrough"]["rollout"]["percent"], 42_000,
        "the other edit stands"
    );

    // Files that are not flags files are refused with where and why.
    for (text, expected) in [
        ("version: 1\nflags: [\n", "flags.yaml"),
        ("version: 1\ncolour: red\n", "unknown field `colour`"),
        ("version: 2\n", "version 2 is not one this rollgate reads"),
    ] {
        std::fs::write(exported, text).unwrap();
        let (code, message) =
            fails(&target, Some(ADMIN), &config, &["apply", "-f", exported, "--dry-run"]).await;
        assert_eq!(code, 2, "{text}: {message}");
        assert!(message.contains(expected), "{text}: {message}");
    }
}

/// `rollgate import SOURCE FILE --env production`, with `extra` arguments.
async fn import(
    server: &Server,
    config: &Path,
    source: &str,
    file: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec!["import", source, file, "--env", "production"];
    args.extend_from_slice(extra);
    rollgate(server, Some(ADMIN), config, &args).await
}

fn assert_lines(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(output.contains(line), "{line:?} missing from\n{output}");
    }
}

#[tokio::test]
async fn import_from_unleash_shows_its_plan_then_imports_all_or_nothing() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let export =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unleash-export.json").to_owned();
    let run = async |extra: &[&str]| import(&server, &config, "unleash", &export, extra).await;
    let before = server.observable_state().await;

    let dry = stdout(&run(&["--dry-run"]).await);
    assert_lines(
        &dry,
        &[
            "import  new-checkout  (0 rules)",
            "import  checkout-banner  (2 rules)",
            "import  search-beta  (2 rules)",
            "skip    legacy-pricing  constraint `IN_CIDR` on `remoteAddress`: no Rollgate operator",
            "3 to import, 1 that cannot be expressed",
            "dry run: nothing imported",
        ],
    );
    assert_eq!(server.observable_state().await, before, "a dry run changes nothing");

    let (code, message) = failure(&run(&[]).await);
    assert_eq!(code, 6);
    assert!(
        message.contains("nothing imported: 1 cannot be expressed exactly; --partial"),
        "{message}"
    );
    assert_eq!(server.observable_state().await, before);

    let imported = stdout(&run(&["--partial"]).await);
    assert!(imported.contains("imported 3 flags into production"), "{imported}");
    // new-checkout serves whom Unleash's 25% flexible rollout took.
    let engine = production_engine(&server).await;
    for i in 0..2000 {
        let user = format!("user-{i}");
        let unleash = flag_core::bucketing::unleash_normalized("new-checkout", &user, 100, 0) <= 25;
        let context = flag_core::Context::with_targeting_key(user.as_str());
        let served = engine.evaluate("new-checkout", &context).variant;
        assert_eq!(served, Some(if unleash { "on" } else { "off" }), "{user}");
    }
    let (_, audit) = server
        .call(reqwest::Method::GET, "/api/v1/audit?flag=new-checkout", Some(ADMIN), None)
        .await;
    assert!(audit.to_string().contains("imported from Unleash"), "{audit}");

    let (code, message) = failure(&run(&["--partial"]).await);
    assert_eq!(code, 6);
    assert!(
        message.contains("flag `new-checkout` is already set up in `production`; nothing imported"),
        "{message}"
    );

    // A rollout plan goes on from Unleash's 25% to 50%: no one who had it loses it.
    let engine = plan_new_checkout_from_25_to_50(&server).await;
    let mut inside = 0;
    for i in 0..2000 {
        let user = format!("user-{i}");
        let hash = flag_core::bucketing::unleash_normalized("new-checkout", &user, 100, 0);
        let context = flag_core::Context::with_targeting_key(user.as_str());
        let on = engine.evaluate("new-checkout", &context).variant == Some("on");
        assert!(on || hash > 25, "{user} had it at 25% in Unleash and lost it at 50%");
        assert_eq!(on, hash <= 50, "{user} at 50%");
        inside += usize::from(on);
    }
    assert!((900..1100).contains(&inside), "{inside} of 2,000 at 50%");
}

#[tokio::test]
async fn import_from_flagd_reads_yaml_and_keeps_its_cohorts_through_a_plan() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // flagd reads YAML as well as JSON.
    let json: Value =
        serde_json::from_slice(include_bytes!("../fixtures/flagd-flags.json")).unwrap();
    let file = dir.path().join("flags.yaml");
    std::fs::write(&file, yaml_serde::to_string(&json).unwrap()).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let run = async |extra: &[&str]| import(&server, &config, "flagd", &file, extra).await;
    let before = server.observable_state().await;

    let dry = stdout(&run(&["--dry-run"]).await);
    assert_lines(
        &dry,
        &[
            "import  new-checkout  (3 rules)",
            "note: `fractional` is carried as flagd buckets it since April 2026",
            "leave   holiday-banner  DISABLED in flagd",
            "skip    flash-sale  condition",
            "4 to import, 1 that cannot be expressed, 1 left out",
            "dry run: nothing imported",
        ],
    );
    assert_eq!(server.observable_state().await, before, "a dry run changes nothing");
    let (code, _) = failure(&run(&[]).await);
    assert_eq!(code, 6, "flash-sale cannot be expressed: nothing without --partial");
    assert_eq!(server.observable_state().await, before);

    let imported = stdout(&run(&["--partial"]).await);
    assert!(imported.contains("imported 4 flags into production"), "{imported}");
    let in_flagd = |user: &str, percent: u64| {
        let hash = murmur3::murmur3_32(&mut format!("new-checkout{user}").as_bytes(), 0).unwrap();
        (u64::from(hash) * 100) >> 32 < percent
    };
    let engine = production_engine(&server).await;
    for i in 0..2000 {
        let user = format!("user-{i}");
        let context = flag_core::Context::with_targeting_key(user.as_str());
        let served = engine.evaluate("new-checkout", &context).variant;
        assert_eq!(served, Some(if in_flagd(&user, 25) { "on" } else { "off" }), "{user}");
    }

    // A rollout plan goes on from flagd's 25% to 50%: no one who had it loses it.
    let engine = plan_new_checkout_from_25_to_50(&server).await;
    for i in 0..2000 {
        let user = format!("user-{i}");
        let context = flag_core::Context::with_targeting_key(user.as_str());
        let on = engine.evaluate("new-checkout", &context).variant == Some("on");
        assert!(on || !in_flagd(&user, 25), "{user} had it at 25% in flagd and lost it at 50%");
        assert_eq!(on, in_flagd(&user, 50), "{user} at 50%");
    }
}

/// Starts a plan on the imported `new-checkout` at 25% and advances it to 50%; the production
/// snapshot then.
async fn plan_new_checkout_from_25_to_50(server: &Server) -> flag_core::Engine {
    let body = json!({"flag": "new-checkout", "environment": "production", "auto_advance": false,
        "stages": [{"name": "quarter", "percent": 25}, {"name": "half", "percent": 50}],
        "rationale": "on from where the old system was"});
    let (status, answer) =
        server.call(reqwest::Method::POST, "/api/v1/plans", Some(RELEASE), Some(body)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
    let advance = format!("/api/v1/plans/{}/advance", answer["plan"]["id"]);
    let body = json!({"rationale": "healthy"});
    let (status, answer) =
        server.call(reqwest::Method::POST, &advance, Some(RELEASE), Some(body)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    production_engine(server).await
}

/// The production snapshot, compiled.
async fn production_engine(server: &Server) -> flag_core::Engine {
    let snapshot = server.get("/api/v1/environments/production/snapshot", Some(READ)).send();
    let snapshot = snapshot.await.unwrap().bytes().await.unwrap();
    flag_core::Engine::from_json(&snapshot).unwrap()
}
