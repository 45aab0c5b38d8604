//! The `rollgate` command line for release managers and on-call engineers: every subcommand is
//! one or two API calls, printed as a table or, with `--output json`, as the server's JSON.
//! docs/cli.md lists the commands and their exit codes.

pub mod client;
mod code;
mod render;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use client::exit;
pub use client::{Client, Failure, Settings};

use crate::clock::Clock as _;
use crate::model::percent::Percent;

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The control plane, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "ROLLGATE_URL", hide_env_values = true)]
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
    #[arg(long, env = "ROLLGATE_ENV", hide_env_values = true)]
    pub env: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ImportCommand {
    /// An Unleash export (`/api/admin/features-batch/export`) or what Unleash serves its SDKs
    /// (`/api/client/features`, which carries segments' constraints), into one environment.
    Unleash {
        #[command(flatten)]
        import: ImportArgs,
        /// The Unleash environment to take, when the export holds several.
        #[arg(long)]
        source_environment: Option<String>,
    },
    /// flagd flag definitions (JSON, or YAML if the file's name ends in .yaml or .yml), into
    /// one environment.
    Flagd {
        #[command(flatten)]
        import: ImportArgs,
    },
}

/// What every import takes.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to import.
    file: std::path::PathBuf,
    #[command(flatten)]
    env: Env,
    /// Shows what would be imported and what cannot be, and changes nothing.
    #[arg(long)]
    dry_run: bool,
    /// Imports the flags that can be expressed even when others cannot.
    #[arg(long)]
    partial: bool,
    /// Why: kept in the audit log with each flag (by default "imported from" the system).
    #[arg(long)]
    reason: Option<String>,
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
        /// The flag's key, e.g. checkout-v2.
        flag: String,
        /// 0% to 100%, e.g. 25% or 2.5%.
        percent: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
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
        /// The flag's key, e.g. checkout-v2.
        flag: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Evaluates the flag's rules again after a kill.
    Unkill {
        /// The flag's key, e.g. checkout-v2.
        flag: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Starts, moves and shows rollout plans.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Imports flags from another system, every unit served what it was there (docs/import.md).
    #[command(subcommand)]
    Import(ImportCommand),
    /// The audit log, newest first: who changed what, when and why.
    Audit {
        /// Only this flag's records.
        #[arg(long)]
        flag: Option<String>,
        /// Only this segment's records.
        #[arg(long)]
        segment: Option<String>,
        /// Only this environment's records.
        #[arg(long, env = "ROLLGATE_ENV", hide_env_values = true)]
        env: Option<String>,
        #[command(flatten)]
        window: Window,
    },
    /// The decision log of rollout plans, newest first.
    Decisions {
        /// Only this flag's decisions.
        #[arg(long)]
        flag: Option<String>,
        /// Only this environment's decisions.
        #[arg(long, env = "ROLLGATE_ENV", hide_env_values = true)]
        env: Option<String>,
        /// Only this plan's decisions.
        #[arg(long)]
        plan: Option<i64>,
        #[command(flatten)]
        window: Window,
        /// As CSV, for a spreadsheet or the release record: every matching decision (up to
        /// 1,000), oldest first; --limit does not apply.
        #[arg(long)]
        csv: bool,
    },
    /// Edge deployments: the configuration version each applied and how far behind it is;
    /// registering and removing them.
    Edges {
        #[command(subcommand)]
        command: Option<EdgesCommand>,
    },
    /// Environments and their snapshot versions; adding one.
    #[command(subcommand)]
    Environments(EnvironmentsCommand),
    /// Segments: named sets of users that rules target.
    #[command(subcommand)]
    Segments(SegmentsCommand),
    /// API tokens for apps, edges, release managers and admins.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Webhooks that receive rollout plans' notifications.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Writes every flag, segment and environment state as YAML, for Git (docs/flags-as-code.md).
    Export {
        /// Where to write it; default standard output.
        #[arg(long, short = 'f')]
        file: Option<std::path::PathBuf>,
    },
    /// Makes the control plane match a YAML file from `export`: shows the diff, then applies
    /// each change, audited and with If-Match. Never archives what the file leaves out.
    Apply {
        /// The file; `-` reads standard input.
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Why: kept in the audit log with every change (not needed with --dry-run).
        #[arg(long, required_unless_present = "dry_run")]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum EdgesCommand {
    /// Every edge, with what it applied (the default).
    List,
    /// Registers an edge worker: every new configuration of its environment is pushed to it.
    Register {
        /// A name for it, e.g. edge-eu.
        name: String,
        /// Where it listens, e.g. https://flags.example.com.
        #[arg(value_name = "URL")]
        address: String,
        #[command(flatten)]
        env: Env,
    },
    /// Stops pushing to an edge.
    Delete {
        /// The edge's name.
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum EnvironmentsCommand {
    /// Every environment and its snapshot version.
    List,
    /// Adds an environment; every flag starts there serving its off variant.
    Create {
        /// Its name, e.g. qa.
        name: String,
    },
    /// Sets the origins whose pages may evaluate its client-visible flags (CORS), replacing
    /// the ones set before; none given allows none.
    Origins {
        /// The environment, e.g. production.
        name: String,
        /// Origins as browsers send them, e.g. https://app.example.com.
        origins: Vec<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum SegmentsCommand {
    /// Every segment, with how many keys and conditions it has.
    List,
    /// A segment's keys and conditions.
    Get {
        /// The segment's key, e.g. staff.
        segment: String,
    },
    /// Creates a segment, or with --replace replaces one (keys from options and a file).
    Create {
        /// The segment's key, e.g. staff.
        segment: String,
        /// Keys that are members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// Keys that are never members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// A file of member keys, one per line (or separated by commas or spaces), as pasted
        /// from a spreadsheet; `-` reads standard input.
        #[arg(long)]
        keys_file: Option<std::path::PathBuf>,
        /// Conditions as JSON, e.g. '[{"attribute": "plan", "op": "eq", "values": ["pro"]}]'.
        #[arg(long)]
        conditions: Option<String>,
        /// Replace the existing segment of this key (refused if it changed meanwhile).
        #[arg(long)]
        replace: bool,
    },
    /// Archives a segment no rule targets.
    Delete {
        /// The segment's key.
        segment: String,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokensCommand {
    /// Every token's name, scope and environment; never secrets.
    List,
    /// Makes a token and prints its secret, the only time it is shown.
    Create {
        /// A name for it, e.g. shop-production.
        name: String,
        /// client (browsers: client-visible flags only), read (apps and edges), release
        /// (release managers) or admin.
        #[arg(long)]
        scope: String,
        /// For a read or client token: the one environment it reads.
        #[arg(long)]
        env: Option<String>,
    },
    /// Revokes a token at once: its next request gets 401, its open streams end.
    Delete {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhooksCommand {
    /// Every webhook, with pending and failed deliveries (URLs masked unless admin).
    List,
    /// Sends an environment's plan notifications to a URL (e.g. a Slack incoming webhook).
    Create {
        /// A name for it, e.g. releases.
        name: String,
        /// Where to post, e.g. https://hooks.slack.com/services/….
        #[arg(value_name = "URL")]
        address: String,
        #[command(flatten)]
        env: Env,
    },
    /// Stops sending to a webhook.
    Delete {
        /// The webhook's name.
        name: String,
    },
}

/// Which part of a log to show.
#[derive(Debug, Clone, Args)]
pub struct Window {
    /// Only entries at or after this: an age such as 30m, 12h or 7d, or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// At most this many entries, the newest.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Sets values in the config file; the others stay.
    Set {
        /// The control plane's URL, e.g. https://rollgate.internal.
        #[arg(long)]
        url: Option<String>,
        /// The API token to use (the file is written readable by you only).
        #[arg(long)]
        token: Option<String>,
        /// The environment commands act on by default, e.g. production.
        #[arg(long)]
        env: Option<String>,
    },
    /// Shows the settings in effect (the token masked) and the config file's path.
    Show,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FlagsCommand {
    /// Flags with their owner, tags and state, filtered by the options given.
    List {
        /// Text in the key or the description, ignoring case.
        #[arg(long)]
        search: Option<String>,
        /// Only flags with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only this owner's flags.
        #[arg(long)]
        owner: Option<String>,
        /// Only flags rolled out at this stage label, e.g. beta (in --env if given).
        #[arg(long)]
        stage: Option<String>,
        /// The environment --stage looks at.
        #[arg(long)]
        env: Option<String>,
    },
    /// A flag's definition and its state in each environment.
    Get {
        /// The flag's key, e.g. checkout-v2.
        flag: String,
    },
    /// A new flag in every environment, serving its off variant.
    Create {
        /// The new flag's key: letters, digits, `-`, `_` and `.`.
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
        #[command(flatten)]
        metadata: Metadata,
    },
    /// Changes a flag's description, owner or tags; the rest stays.
    Describe {
        /// The flag's key, e.g. checkout-v2.
        flag: String,
        #[command(flatten)]
        metadata: Metadata,
    },
    /// Replaces a flag's rules, prerequisites and fallthrough in an environment with a JSON
    /// file's (docs/api.md, "Flag state"); refused if the flag changed since it was read.
    SetState {
        /// The flag's key, e.g. checkout-v2.
        flag: String,
        /// A JSON file: {"enabled": …, "rules": […], "fallthrough": …}.
        #[arg(long)]
        file: std::path::PathBuf,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
}

/// A flag's metadata, as options.
#[derive(Debug, Clone, Args)]
pub struct Metadata {
    /// What the flag is for.
    #[arg(long)]
    description: Option<String>,
    /// Who answers for it: a person or a team.
    #[arg(long)]
    owner: Option<String>,
    /// Labels to find it by, comma-separated, e.g. checkout,experiment (replaces the tags).
    #[arg(long, value_delimiter = ',')]
    tags: Option<Vec<String>>,
}

impl Metadata {
    /// Sets the fields given on `definition`.
    fn apply(self, definition: &mut Value) {
        if let Some(description) = self.description {
            definition["description"] = json!(description);
        }
        if let Some(owner) = self.owner {
            definition["owner"] = json!(owner);
        }
        if let Some(tags) = self.tags {
            definition["tags"] =
                json!(tags.into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>());
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum PlanCommand {
    /// Starts a plan from a template, or from a JSON file of stages.
    Start {
        /// The flag's key, e.g. checkout-v2.
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
        #[arg(long, required_if_eq("template", "four-stage"))]
        internal_segment: Option<String>,
        /// Four-stage: the friendly customers' segment.
        #[arg(long, required_if_eq("template", "four-stage"))]
        alpha_segment: Option<String>,
        /// Four-stage: beta exposure, 10% to 25%.
        #[arg(long)]
        beta: Option<String>,
        /// Advance only by hand.
        #[arg(long)]
        manual: bool,
        /// No sample-ratio check: for a flag whose variant changes how often it is evaluated.
        #[arg(long)]
        no_sample_ratio_check: bool,
        /// Start at this stage rather than the first: a plan never lowers exposure, so a flag
        /// already rolled out further starts at the stage that matches.
        #[arg(long, value_name = "STAGE")]
        start_at: Option<String>,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Approves moving a plan into its next stage (a plan id, or a flag with an active plan).
    Advance {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Rolls a plan back one stage (held there), or with --kill kills the flag and ends it.
    Rollback {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Kill the flag and end the plan, rather than step back one stage.
        #[arg(long)]
        kill: bool,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Stops a plan advancing on its own.
    Hold {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Continues a held plan.
    Resume {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Ends a plan at its last stage.
    Complete {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Why: kept in the audit log and shown to whoever looks next.
        #[arg(long)]
        reason: String,
    },
    /// Draws a plan's stages, exposure and guardrails; --watch follows it live.
    Status {
        /// A plan id, or a flag key with an active plan in the environment.
        plan: String,
        #[command(flatten)]
        env: Env,
        /// Redraw every few seconds until the plan ends or Ctrl-C.
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
        Command::Flags(FlagsCommand::List { search, tag, owner, stage, env }) => {
            let parameters =
                [("q", search), ("tag", tag), ("owner", owner), ("stage", stage), ("env", env)];
            let flags = client
                .call(Method::GET, &format!("/api/v1/flags{}", query(&parameters)), None)
                .await?;
            out.print(&flags, render::flags)
        }
        Command::Flags(FlagsCommand::Get { flag }) => {
            let record = client
                .call(Method::GET, &format!("/api/v1/flags/{}", segment(&flag)), None)
                .await?;
            out.print(&record, render::flag)
        }
        Command::Flags(FlagsCommand::Create { key, variants, off, kind, metadata }) => {
            let mut body = new_flag(key, variants, off, kind)?;
            metadata.apply(&mut body);
            let record = client.call(Method::POST, "/api/v1/flags", Some(&body)).await?;
            out.print(&record, render::flag)
        }
        Command::Flags(FlagsCommand::Describe { flag, metadata }) => {
            let path = format!("/api/v1/flags/{}", segment(&flag));
            let (mut record, revision) = client.get_with_etag(&path).await?;
            let mut definition = json!({});
            for field in
                ["key", "type", "variants", "off_variant", "salt", "description", "owner", "tags"]
            {
                if let Some(value) = record.get_mut(field).map(Value::take) {
                    definition[field] = value;
                }
            }
            metadata.apply(&mut definition);
            let record = client.call_if_match(Method::PUT, &path, &definition, &revision).await?;
            out.print(&record, render::flag)
        }
        Command::Flags(FlagsCommand::SetState { flag, file, env, reason }) => {
            let text = read_input(&file)?;
            let mut state: Value = serde_json::from_str(&text).map_err(|error| {
                Failure::usage(format!("{} is not JSON: {error}", file.display()))
            })?;
            if !state.is_object() {
                return Err(Failure::usage(format!("{} holds no JSON object", file.display())));
            }
            state["reason"] = json!(reason);
            let (_, revision) =
                client.get_with_etag(&format!("/api/v1/flags/{}", segment(&flag))).await?;
            let path = flag_path(&environment(env)?, &flag, "");
            let changed = client.call_if_match(Method::PUT, &path, &state, &revision).await?;
            out.print(&changed, render::state_change)
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
        Command::Import(ImportCommand::Unleash { import: args, source_environment }) => {
            let text = read_import(&args)?;
            let conversion = crate::import::unleash::convert(&text, source_environment.as_deref())
                .map_err(|e| Failure::usage(format!("{}: {e}", args.file.display())))?;
            let environment = environment(args.env.clone())?;
            import(&client, &out, conversion, &environment, &args, "Unleash").await
        }
        Command::Import(ImportCommand::Flagd { import: args }) => {
            let text = read_import(&args)?;
            let yaml = args.file.extension().is_some_and(|e| e == "yaml" || e == "yml");
            let json = if yaml {
                let value: Value = yaml_serde::from_slice(&text).map_err(|e| {
                    Failure::usage(format!("{}: not YAML: {e}", args.file.display()))
                })?;
                value.to_string().into_bytes()
            } else {
                text
            };
            let conversion = crate::import::flagd::convert(&json)
                .map_err(|e| Failure::usage(format!("{}: {e}", args.file.display())))?;
            let environment = environment(args.env.clone())?;
            import(&client, &out, conversion, &environment, &args, "flagd").await
        }
        Command::Audit { flag, segment: seg, env, window } => {
            let parameters = vec![("flag", flag), ("segment", seg), ("env", env)];
            let records = newest(&client, "/api/v1/audit", parameters, &window, "records").await?;
            out.print(&records, render::audit)
        }
        Command::Decisions { flag, env, plan, window, csv } => {
            let mut parameters =
                vec![("flag", flag), ("env", env), ("plan", plan.map(|p| p.to_string()))];
            if csv {
                parameters.push(("since", window.since.as_deref().map(since).transpose()?));
                parameters.push(("format", Some("csv".into())));
                let text = client
                    .text(Method::GET, &format!("/api/v1/decisions{}", query(&parameters)), None)
                    .await?;
                return out.raw(&text);
            }
            let decisions =
                newest(&client, "/api/v1/decisions", parameters, &window, "decisions").await?;
            out.print(&decisions, render::decisions)
        }
        Command::Edges { command: None | Some(EdgesCommand::List) } => {
            let edges = client.call(Method::GET, "/api/v1/edges", None).await?;
            out.print(&edges, render::edges)
        }
        Command::Edges { command: Some(EdgesCommand::Register { name, address, env }) } => {
            let body = json!({"name": name, "url": address, "environment": environment(env)?});
            let edge = client.call(Method::POST, "/api/v1/edges", Some(&body)).await?;
            out.print(&json!([edge]), render::edges)
        }
        Command::Edges { command: Some(EdgesCommand::Delete { name }) } => {
            client.call(Method::DELETE, &format!("/api/v1/edges/{}", segment(&name)), None).await?;
            out.print(&json!(format!("edge `{name}` deleted")), render::done)
        }
        Command::Environments(EnvironmentsCommand::List) => {
            let environments = client.call(Method::GET, "/api/v1/environments", None).await?;
            out.print(&environments, render::environments)
        }
        Command::Environments(EnvironmentsCommand::Create { name }) => {
            let body = json!({"name": name});
            let created = client.call(Method::POST, "/api/v1/environments", Some(&body)).await?;
            out.print(&json!([created]), render::environments)
        }
        Command::Environments(EnvironmentsCommand::Origins { name, origins }) => {
            let body = json!({"allowed_origins": origins});
            let path = format!("/api/v1/environments/{}/allowed-origins", segment(&name));
            let updated = client.call(Method::PUT, &path, Some(&body)).await?;
            out.print(&json!([updated]), render::environments)
        }
        Command::Segments(SegmentsCommand::List) => {
            let segments = client.call(Method::GET, "/api/v1/segments", None).await?;
            out.print(&segments, render::segments)
        }
        Command::Segments(SegmentsCommand::Get { segment: key }) => {
            let path = format!("/api/v1/segments/{}", segment(&key));
            let found = client.call(Method::GET, &path, None).await?;
            out.print(&found, render::segment)
        }
        Command::Segments(SegmentsCommand::Create {
            segment: key,
            include,
            exclude,
            keys_file,
            conditions,
            replace,
        }) => {
            let mut included: Vec<String> = include.into_iter().filter(|k| !k.is_empty()).collect();
            if let Some(file) = keys_file {
                included.extend(read_keys(&file)?);
            }
            let mut body = json!({"key": key, "included": included, "excluded": exclude});
            if let Some(conditions) = conditions {
                body["conditions"] = serde_json::from_str(&conditions).map_err(|error| {
                    Failure::usage(format!("--conditions is not JSON: {error}"))
                })?;
            }
            let saved = if replace {
                let path = format!("/api/v1/segments/{}", segment(&key));
                let (_, revision) = client.get_with_etag(&path).await?;
                client.call_if_match(Method::PUT, &path, &body, &revision).await?
            } else {
                client.call(Method::POST, "/api/v1/segments", Some(&body)).await?
            };
            out.print(&saved, render::segment)
        }
        Command::Segments(SegmentsCommand::Delete { segment: key, reason }) => {
            let path =
                format!("/api/v1/segments/{}{}", segment(&key), query(&[("reason", Some(reason))]));
            client.call(Method::DELETE, &path, None).await?;
            out.print(&json!(format!("segment `{key}` archived")), render::done)
        }
        Command::Tokens(TokensCommand::List) => {
            let tokens = client.call(Method::GET, "/api/v1/tokens", None).await?;
            out.print(&tokens, render::tokens)
        }
        Command::Tokens(TokensCommand::Create { name, scope, env }) => {
            let body = json!({"name": name, "scope": scope, "environment": env});
            let created = client.call(Method::POST, "/api/v1/tokens", Some(&body)).await?;
            out.print(&created, render::new_token)
        }
        Command::Tokens(TokensCommand::Delete { name }) => {
            client
                .call(Method::DELETE, &format!("/api/v1/tokens/{}", segment(&name)), None)
                .await?;
            out.print(&json!(format!("token `{name}` deleted")), render::done)
        }
        Command::Export { file } => {
            let exported = code::to_yaml(&code::export(&client).await?);
            match file {
                None => out.raw(&exported),
                Some(path) => std::fs::write(&path, exported).map_err(|error| Failure {
                    code: exit::FAILED,
                    message: format!("writing {}: {error}", path.display()),
                }),
            }
        }
        Command::Apply { file, dry_run, reason } => {
            let text = read_input(&file)?;
            let wanted = code::from_yaml(&text, &file.display().to_string())?;
            let reason = reason.unwrap_or_default();
            let report = code::apply(&client, &wanted, &reason, dry_run).await?;
            out.raw(&report)
        }
        Command::Webhooks(WebhooksCommand::List) => {
            let webhooks = client.call(Method::GET, "/api/v1/webhooks", None).await?;
            out.print(&webhooks, render::webhooks)
        }
        Command::Webhooks(WebhooksCommand::Create { name, address, env }) => {
            let body = json!({"name": name, "url": address, "environment": environment(env)?});
            let created = client.call(Method::POST, "/api/v1/webhooks", Some(&body)).await?;
            out.print(&json!([created]), render::webhooks)
        }
        Command::Webhooks(WebhooksCommand::Delete { name }) => {
            let path = format!("/api/v1/webhooks/{}", segment(&name));
            client.call(Method::DELETE, &path, None).await?;
            out.print(&json!(format!("webhook `{name}` deleted")), render::done)
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

fn read_import(args: &ImportArgs) -> Result<Vec<u8>, Failure> {
    std::fs::read(&args.file)
        .map_err(|e| Failure::usage(format!("reading {}: {e}", args.file.display())))
}

/// Writes converted flags into the environment in one change (the server's import): all or
/// nothing, and nothing at all while some cannot be expressed unless `--partial`.
async fn import(
    client: &Client,
    out: &Printer,
    conversion: crate::import::Conversion,
    environment: &str,
    args: &ImportArgs,
    system: &str,
) -> Result<(), Failure> {
    let report = conversion.report();
    let summary = |imported: bool| {
        json!({
            "report": report,
            "environment": environment,
            "imported": imported,
            "flags": conversion.flags.iter().map(|f| &f.definition.key).collect::<Vec<_>>(),
            "skipped": conversion.skipped.iter()
                .map(|s| json!({"key": s.key, "reason": s.reason})).collect::<Vec<_>>(),
            "left_out": conversion.left_out.iter()
                .map(|s| json!({"key": s.key, "reason": s.reason})).collect::<Vec<_>>(),
        })
    };
    if args.dry_run {
        return out.print(&summary(false), render::import);
    }
    let environments = client.call(Method::GET, "/api/v1/environments", None).await?;
    let known = environments.as_array().into_iter().flatten();
    if !known.clone().any(|e| e["name"] == environment) {
        return Err(Failure {
            code: exit::NOT_FOUND,
            message: format!(
                "no environment `{environment}`; nothing imported (`rollgate environments` lists them)"
            ),
        });
    }
    if !conversion.skipped.is_empty() && !args.partial {
        return Err(Failure {
            code: exit::REFUSED,
            message: format!(
                "{report}\nnothing imported: {} cannot be expressed exactly; --partial imports the rest",
                conversion.skipped.len()
            ),
        });
    }
    if conversion.flags.is_empty() {
        return out.print(&summary(true), render::import);
    }
    let flags: Vec<Value> = conversion
        .flags
        .iter()
        .map(|flag| json!({"definition": flag.definition, "state": flag.state}))
        .collect();
    let reason = args.reason.clone().unwrap_or_else(|| format!("imported from {system}"));
    let body = json!({"flags": flags, "reason": reason});
    let path = format!("/api/v1/environments/{}/import", segment(environment));
    client.call(Method::POST, &path, Some(&body)).await?;
    out.print(&summary(true), render::import)
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
            no_sample_ratio_check,
            start_at,
            reason,
        } => {
            let mut body = json!({"flag": flag, "environment": environment(env)?,
                "rationale": reason, "start_at": start_at});
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
            if no_sample_ratio_check {
                body["sample_ratio_check"] = json!(false);
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

/// The newest entries of a log within `window`, newest first; says on stderr when more exist.
async fn newest(
    client: &Client,
    path: &str,
    mut parameters: Vec<(&'static str, Option<String>)>,
    window: &Window,
    entries: &str,
) -> Result<Value, Failure> {
    parameters.push(("since", window.since.as_deref().map(since).transpose()?));
    // One more than shown, to know whether there are more.
    parameters.push(("limit", Some((window.limit + 1).to_string())));
    parameters.push(("order", Some("newest".into())));
    let mut answer =
        client.call(Method::GET, &format!("{path}{}", query(&parameters)), None).await?;
    if let Some(list) = answer.as_array_mut()
        && list.len() > window.limit as usize
    {
        list.truncate(window.limit as usize);
        eprintln!(
            "The newest {} {entries} are shown and there are more: raise --limit, or narrow with \
             --since or --flag.",
            window.limit
        );
    }
    Ok(answer)
}

/// `--since`: an age (`30m`, `12h`, `7d`, `1d12h`) before now, or an RFC 3339 time, as RFC 3339.
fn since(text: &str) -> Result<String, Failure> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    let bad = || {
        Failure::usage(format!(
            "`--since {text}`: give an age such as 30m, 12h or 7d, or an RFC 3339 time such as \
             2026-11-22T09:00:00Z"
        ))
    };
    let mut seconds: i64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let count: i64 = number.parse().map_err(|_| bad())?;
        seconds = count.checked_mul(unit).and_then(|s| s.checked_add(seconds)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || seconds == 0 {
        return Err(bad());
    }
    let now = crate::clock::SystemClock.now();
    let at = now - chrono::Duration::try_seconds(seconds).ok_or_else(bad)?;
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A file's text, or standard input's for `-`.
fn read_input(file: &std::path::Path) -> Result<String, Failure> {
    if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|error| Failure::usage(format!("reading {}: {error}", file.display())))
}

/// Keys from a file (or `-`, standard input), one per line or separated by commas, tabs or
/// spaces, as pasted from a spreadsheet.
fn read_keys(file: &std::path::Path) -> Result<Vec<String>, Failure> {
    Ok(read_input(file)?
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `25%`, `25` or `2.5%`.
pub fn parse_percent(text: &str) -> Result<Percent, Failure> {
    Percent::parse(text).map_err(Failure::usage)
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
        assert_eq!(parse_percent("25%").unwrap().thousandths(), 25_000);
        assert_eq!(parse_percent("2.5%").unwrap().thousandths(), 2_500);
        assert_eq!(parse_percent("100").unwrap().thousandths(), 100_000);
        assert_eq!(parse_percent("0.001%").unwrap().thousandths(), 1);
        for bad in ["101%", "-1%", "half", "0.0001%", ""] {
            assert_eq!(parse_percent(bad).unwrap_err().code, exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn since_takes_ages_and_times() {
        assert_eq!(since("2026-11-22T09:00:00+01:00").unwrap(), "2026-11-22T08:00:00.000Z");
        let day_and_a_half = crate::clock::SystemClock.now() - chrono::Duration::hours(36);
        let parsed: chrono::DateTime<chrono::Utc> = since("1d12h").unwrap().parse().unwrap();
        assert!((parsed - day_and_a_half).num_seconds().abs() < 5, "{parsed}");
        for bad in ["", "7", "d", "7x", "yesterday", "0m", "99999999999999999999d"] {
            assert_eq!(since(bad).unwrap_err().code, exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn queries_and_segments_are_encoded() {
        assert_eq!(query(&[("flag", Some("a b".into())), ("env", None)]), "?flag=a+b");
        assert_eq!(query(&[("env", None)]), "");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
