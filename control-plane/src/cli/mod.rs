//! The `rollgate` command line for release managers and on-call engineers: every subcommand is
//! one or two API calls, printed as a table or, with `--output json`, as the server's JSON.
//! docs/cli.md lists the commands and their exit codes.

pub mod client;
mod render;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use client::exit;
pub use client::{Client, Failure, Settings};

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The control plane, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "ROLLGATE_URL")]
    pub url: Option<String>,
    /// An API token.
    #[arg(long, global = true, env = "ROLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `text` (tables; colours only on a terminal) or `json` (the server's answers).
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Where a change applies: `--env`, else `ROLLGATE_ENV`, else the config file's `environment`.
#[derive(Debug, Clone, Args)]
pub struct Env {
    /// The environment, e.g. production.
    #[arg(long, env = "ROLLGATE_ENV")]
    pub env: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Stores the server URL, a token and a default environment in the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Lists, shows and creates flags.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// Sets a flag's exposure in an environment, e.g. `rollgate rollout checkout-v2 25% --env production --reason "healthy at 5%"`.
    Rollout {
        flag: String,
        /// 0% to 100%, e.g. 25% or 2.5%.
        percent: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
        /// The variant to expose, if the flag has more than two.
        #[arg(long)]
        variant: Option<String>,
        /// A stage label, e.g. beta.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Serves the flag's off variant to everyone in an environment, at once.
    Kill {
        flag: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Evaluates the flag's rules again after a kill.
    Unkill {
        flag: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Starts, moves and shows rollout plans.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// The audit log: who changed what, when and why.
    Audit {
        #[arg(long)]
        flag: Option<String>,
        #[arg(long)]
        segment: Option<String>,
        #[arg(long, env = "ROLLGATE_ENV")]
        env: Option<String>,
        /// At most this many records, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The decision log of rollout plans.
    Decisions {
        #[arg(long)]
        flag: Option<String>,
        #[arg(long, env = "ROLLGATE_ENV")]
        env: Option<String>,
        #[arg(long)]
        plan: Option<i64>,
        /// As CSV, for a spreadsheet or the release record.
        #[arg(long)]
        csv: bool,
    },
    /// Edge deployments: the configuration version each applied and how far behind it is.
    Edges,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Sets values in the config file; the others stay.
    Set {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        env: Option<String>,
    },
    /// Shows the settings in effect (the token masked) and the config file's path.
    Show,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FlagsCommand {
    List,
    /// A flag's definition and its state in each environment.
    Get {
        flag: String,
    },
    /// A new flag in every environment, serving its off variant.
    Create {
        key: String,
        /// Variants as name=JSON, e.g. `--variant on=true --variant off=false` (default: a
        /// boolean flag with `on` and `off`).
        #[arg(long = "variant")]
        variants: Vec<String>,
        /// The variant served when the flag is off (default: `off`).
        #[arg(long)]
        off: Option<String>,
        /// boolean, string, number or object (default: from the variants' values).
        #[arg(long = "type")]
        kind: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum PlanCommand {
    /// Starts a plan from a template, or from a JSON file of stages.
    Start {
        flag: String,
        #[command(flatten)]
        env: Env,
        /// canary or four-stage.
        #[arg(long, required_unless_present = "stages", conflicts_with = "stages")]
        template: Option<String>,
        /// A JSON file with the plan's stages (docs/rollout-plans.md).
        #[arg(long)]
        stages: Option<std::path::PathBuf>,
        /// Four-stage: the staff segment.
        #[arg(long)]
        internal_segment: Option<String>,
        /// Four-stage: the friendly customers' segment.
        #[arg(long)]
        alpha_segment: Option<String>,
        /// Four-stage: beta exposure, 10% to 25%.
        #[arg(long)]
        beta: Option<String>,
        /// Advance only by hand.
        #[arg(long)]
        manual: bool,
        #[arg(long)]
        reason: String,
    },
    /// Approves moving a plan into its next stage (a plan id, or a flag with an active plan).
    Advance {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Rolls a plan back one stage (held there), or with --kill kills the flag and ends it.
    Rollback {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        kill: bool,
        #[arg(long)]
        reason: String,
    },
    /// Stops a plan advancing on its own.
    Hold {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Continues a held plan.
    Resume {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Ends a plan at its last stage.
    Complete {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        reason: String,
    },
    /// Draws a plan's stages, exposure and guardrails; --watch follows it live.
    Status {
        plan: String,
        #[command(flatten)]
        env: Env,
        #[arg(long)]
        watch: bool,
    },
}

/// Runs a client command; the exit code says how it went.
pub async fn run(global: Global, command: Command) -> std::process::ExitCode {
    match execute(global, command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            let mut stderr = anstream::stderr();
            let style = anstyle::Style::new().bold().fg_color(Some(anstyle::AnsiColor::Red.into()));
            let _ = writeln!(stderr, "{style}error:{style:#} {}", failure.message);
            failure.exit_code()
        }
    }
}

async fn execute(global: Global, command: Command) -> Result<(), Failure> {
    let file = Settings::load()?;
    if let Command::Config(config) = command {
        return configure(file, config, global.output);
    }
    let settings = file.clone().overridden_by(Settings {
        url: global.url.clone(),
        token: global.token.clone(),
        environment: None,
    });
    let client = Client::new(&settings)?;
    let out = Printer { json: global.output == Output::Json };
    let environment = |env: Env| -> Result<String, Failure> {
        env.env.or_else(|| settings.environment.clone()).ok_or_else(|| {
            Failure::usage(
                "which environment? Give --env, set ROLLGATE_ENV, or `rollgate config set --env <env>`".into(),
            )
        })
    };
    match command {
        Command::Config(_) => unreachable!("handled above"),
        Command::Flags(FlagsCommand::List) => {
            let flags = client.call(Method::GET, "/api/v1/flags", None).await?;
            out.print(&flags, render::flags)
        }
        Command::Flags(FlagsCommand::Get { flag }) => {
            let record = client
                .call(Method::GET, &format!("/api/v1/flags/{}", segment(&flag)), None)
                .await?;
            out.print(&record, render::flag)
        }
        Command::Flags(FlagsCommand::Create { key, variants, off, kind }) => {
            let body = new_flag(key, variants, off, kind)?;
            let record = client.call(Method::POST, "/api/v1/flags", Some(&body)).await?;
            out.print(&record, render::flag)
        }
        Command::Rollout { flag, percent, env, reason, variant, stage } => {
            let percent = parse_percent(&percent)?;
            let body =
                json!({"percent": percent, "reason": reason, "variant": variant, "stage": stage});
            let path = flag_path(&environment(env)?, &flag, "/rollout");
            let changed = client.call(Method::PUT, &path, Some(&body)).await?;
            out.print(&changed, render::state_change)
        }
        Command::Kill { flag, env, reason } => {
            let path = flag_path(&environment(env)?, &flag, "/kill");
            let changed =
                client.call(Method::POST, &path, Some(&json!({"reason": reason}))).await?;
            out.print(&changed, render::state_change)
        }
        Command::Unkill { flag, env, reason } => {
            let path = flag_path(&environment(env)?, &flag, "/unkill");
            let changed =
                client.call(Method::POST, &path, Some(&json!({"reason": reason}))).await?;
            out.print(&changed, render::state_change)
        }
        Command::Plan(plan) => plans(&client, &out, plan, environment).await,
        Command::Audit { flag, segment: seg, env, limit } => {
            let query = query(&[
                ("flag", flag),
                ("segment", seg),
                ("env", env),
                ("limit", Some(limit.to_string())),
            ]);
            let records = client.call(Method::GET, &format!("/api/v1/audit{query}"), None).await?;
            out.print(&records, render::audit)
        }
        Command::Decisions { flag, env, plan, csv } => {
            let mut parameters =
                vec![("flag", flag), ("env", env), ("plan", plan.map(|p| p.to_string()))];
            if csv {
                parameters.push(("format", Some("csv".into())));
                let text = client
                    .text(Method::GET, &format!("/api/v1/decisions{}", query(&parameters)), None)
                    .await?;
                return out.raw(&text);
            }
            let decisions = client
                .call(Method::GET, &format!("/api/v1/decisions{}", query(&parameters)), None)
                .await?;
            out.print(&decisions, render::decisions)
        }
        Command::Edges => {
            let edges = client.call(Method::GET, "/api/v1/edges", None).await?;
            out.print(&edges, render::edges)
        }
    }
}

/// Prints an answer as JSON or through its text renderer.
struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, value: &Value, text: fn(&Value) -> String) -> Result<(), Failure> {
        let rendered = if self.json {
            serde_json::to_string_pretty(value).expect("JSON values serialize") + "\n"
        } else {
            text(value)
        };
        self.raw(&rendered)
    }

    fn raw(&self, text: &str) -> Result<(), Failure> {
        let mut stdout = anstream::stdout();
        stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|error| Failure {
            code: exit::FAILED,
            message: format!("writing output: {error}"),
        })
    }
}

fn configure(file: Settings, command: ConfigCommand, output: Output) -> Result<(), Failure> {
    match command {
        ConfigCommand::Set { url, token, env } => {
            if url.is_none() && token.is_none() && env.is_none() {
                return Err(Failure::usage("nothing to set: give --url, --token or --env".into()));
            }
            if let Some(url) = &url
                && reqwest::Url::parse(url).is_err()
            {
                return Err(Failure::usage(format!(
                    "`{url}` is not a URL, e.g. {}",
                    client::DEFAULT_URL
                )));
            }
            let settings = file.overridden_by(Settings { url, token, environment: env });
            let path = settings.save()?;
            eprintln!("saved {}", path.display());
            Ok(())
        }
        ConfigCommand::Show => {
            let effective = file.overridden_by(Settings {
                url: std::env::var("ROLLGATE_URL").ok(),
                token: std::env::var("ROLLGATE_TOKEN").ok(),
                environment: std::env::var("ROLLGATE_ENV").ok(),
            });
            let masked = effective.token.as_deref().map(|token| {
                let shown: String = token.chars().take(6).collect();
                format!("{shown}…")
            });
            let shown = json!({
                "config_file": Settings::path().map(|p| p.display().to_string()),
                "url": effective.url.unwrap_or_else(|| client::DEFAULT_URL.to_owned()),
                "token": masked,
                "environment": effective.environment,
            });
            Printer { json: output == Output::Json }.print(&shown, render::settings)
        }
    }
}

async fn plans(
    client: &Client,
    out: &Printer,
    command: PlanCommand,
    environment: impl Fn(Env) -> Result<String, Failure>,
) -> Result<(), Failure> {
    let environment = &environment;
    let act = |plan: String, env: Env, action: &'static str, body: Value| async move {
        let id = resolve_plan(client, &plan, env, environment).await?;
        let answer =
            client.call(Method::POST, &format!("/api/v1/plans/{id}/{action}"), Some(&body)).await?;
        out.print(&answer, render::action)
    };
    match command {
        PlanCommand::Start {
            flag,
            env,
            template,
            stages,
            internal_segment,
            alpha_segment,
            beta,
            manual,
            reason,
        } => {
            let mut body =
                json!({"flag": flag, "environment": environment(env)?, "rationale": reason});
            if let Some(template) = template {
                body["template"] = json!(template);
                let mut parameters = serde_json::Map::new();
                if let Some(segment) = internal_segment {
                    parameters.insert("internal_segment".into(), json!(segment));
                }
                if let Some(segment) = alpha_segment {
                    parameters.insert("alpha_segment".into(), json!(segment));
                }
                if let Some(beta) = beta {
                    parameters.insert("beta_percent".into(), json!(parse_percent(&beta)?));
                }
                body["parameters"] = Value::Object(parameters);
            }
            if let Some(file) = stages {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| Failure::usage(format!("reading {}: {e}", file.display())))?;
                body["stages"] = serde_json::from_str(&text)
                    .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", file.display())))?;
            }
            if manual {
                body["auto_advance"] = json!(false);
            }
            let answer = client.call(Method::POST, "/api/v1/plans", Some(&body)).await?;
            out.print(&answer, render::action)
        }
        PlanCommand::Advance { plan, env, reason } => {
            act(plan, env, "advance", json!({"rationale": reason})).await
        }
        PlanCommand::Hold { plan, env, reason } => {
            act(plan, env, "hold", json!({"rationale": reason})).await
        }
        PlanCommand::Complete { plan, env, reason } => {
            act(plan, env, "complete", json!({"rationale": reason})).await
        }
        PlanCommand::Resume { plan, env, reason } => {
            act(plan, env, "resume", json!({"rationale": reason})).await
        }
        PlanCommand::Rollback { plan, env, kill, reason } => {
            let to = if kill { "kill" } else { "previous" };
            act(plan, env, "rollback", json!({"rationale": reason, "to": to})).await
        }
        PlanCommand::Status { plan, env, watch } => {
            let id = resolve_plan(client, &plan, env, environment).await?;
            let path = format!("/api/v1/plans/{id}");
            let mut view = client.call(Method::GET, &path, None).await?;
            if !watch {
                return out.print(&view, render::plan);
            }
            watch_plan(client, out, &path, &mut view).await
        }
    }
}

/// Redraws the plan whenever its environment's snapshot changes, and every few seconds for
/// its readings, until the plan ends.
async fn watch_plan(
    client: &Client,
    out: &Printer,
    path: &str,
    view: &mut Value,
) -> Result<(), Failure> {
    let environment = view["environment"].as_str().unwrap_or_default().to_owned();
    let stream_path = format!("/api/v1/environments/{}/stream", segment(&environment));
    let mut stream = client
        .request(Method::GET, &stream_path)
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !out.json;
    loop {
        if terminal {
            out.raw("\x1b[2J\x1b[H")?;
        }
        out.print(view, render::plan)?;
        if !matches!(view["status"].as_str(), Some("running" | "held")) {
            return Ok(());
        }
        let tick = tokio::time::sleep(Duration::from_secs(5));
        match stream.as_mut() {
            Some(events) => tokio::select! {
                chunk = events.chunk() => if !matches!(chunk, Ok(Some(_))) { stream = None },
                () = tick => {}
            },
            None => tick.await,
        }
        *view = client.call(Method::GET, path, None).await?;
    }
}

/// A plan id, or the active plan of a flag in the environment (else its latest plan).
async fn resolve_plan(
    client: &Client,
    plan: &str,
    env: Env,
    environment: &impl Fn(Env) -> Result<String, Failure>,
) -> Result<i64, Failure> {
    if let Ok(id) = plan.parse() {
        return Ok(id);
    }
    let environment = environment(env)?;
    let path = format!(
        "/api/v1/plans{}",
        query(&[("flag", Some(plan.to_owned())), ("env", Some(environment.clone()))])
    );
    let plans = client.call(Method::GET, &path, None).await?;
    plans.as_array().and_then(|plans| plans.first()).and_then(|plan| plan["id"].as_i64()).ok_or_else(|| Failure {
        code: exit::NOT_FOUND,
        message: format!(
            "flag `{plan}` has no rollout plan in `{environment}`\nStart one with `rollgate plan start {plan} --env {environment} --template canary --reason \"...\"`."
        ),
    })
}

/// `25%`, `25` or `2.5%` as thousandths of a percent.
pub fn parse_percent(text: &str) -> Result<u32, Failure> {
    let number = text.trim().trim_end_matches('%').trim();
    let bad = || {
        Failure::usage(format!("`{text}` is not a percentage from 0% to 100%, e.g. 25% or 2.5%"))
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&value) {
        return Err(bad());
    }
    let thousandths = (value * 1000.0).round();
    if (thousandths - value * 1000.0).abs() > 1e-6 {
        return Err(Failure::usage(format!(
            "`{text}`: at most three decimals (thousandths of a percent)"
        )));
    }
    Ok(thousandths as u32)
}

fn new_flag(
    key: String,
    variants: Vec<String>,
    off: Option<String>,
    kind: Option<String>,
) -> Result<Value, Failure> {
    let mut parsed = serde_json::Map::new();
    for variant in
        if variants.is_empty() { vec!["on=true".into(), "off=false".into()] } else { variants }
    {
        let (name, value) = variant.split_once('=').ok_or_else(|| {
            Failure::usage(format!("`{variant}`: a variant is name=JSON, e.g. on=true"))
        })?;
        // A bare word is a string, so `--variant blue=blue` works.
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        parsed.insert(name.to_owned(), value);
    }
    let kind = kind.unwrap_or_else(|| {
        match parsed.values().next() {
            Some(Value::Bool(_)) => "boolean",
            Some(Value::Number(_)) => "number",
            Some(Value::String(_)) => "string",
            _ => "object",
        }
        .to_owned()
    });
    let off = off.unwrap_or_else(|| "off".to_owned());
    Ok(json!({"key": key, "type": kind, "variants": parsed, "off_variant": off}))
}

fn flag_path(environment: &str, flag: &str, action: &str) -> String {
    format!("/api/v1/environments/{}/flags/{}{action}", segment(environment), segment(flag))
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// `?a=1&b=2` from the parameters that are set.
fn query(parameters: &[(&str, Option<String>)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in parameters {
        if let Some(value) = value {
            serializer.append_pair(name, value);
        }
    }
    let query = serializer.finish();
    if query.is_empty() { query } else { format!("?{query}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("25%").unwrap(), 25_000);
        assert_eq!(parse_percent("2.5%").unwrap(), 2_500);
        assert_eq!(parse_percent("100").unwrap(), 100_000);
        assert_eq!(parse_percent("0.001%").unwrap(), 1);
        for bad in ["101%", "-1%", "half", "0.0001%", ""] {
            assert_eq!(parse_percent(bad).unwrap_err().code, exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn queries_and_segments_are_encoded() {
        assert_eq!(query(&[("flag", Some("a b".into())), ("env", None)]), "?flag=a+b");
        assert_eq!(query(&[("env", None)]), "");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
