//! The `rollgate` binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use control_plane::auth;
use control_plane::clock::SystemClock;
use control_plane::model::Refusal;
use control_plane::model::flag::FlagDefinition;
use control_plane::model::token::{Scope, Token};
use control_plane::outbound::Targets;
use control_plane::service::{self, Service};
use control_plane::store;
use control_plane::{AppState, Settings, cli, webhooks};

#[derive(Parser)]
#[command(name = "rollgate", version, about = "Staged feature rollouts at the edge")]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

/// `rollgate serve` alone: the server's options, without the client's (`--url`, `--token`).
#[derive(Parser)]
#[command(name = "rollgate serve", bin_name = "rollgate serve", about = "Runs the control plane")]
struct ServeCli {
    #[command(flatten)]
    options: ServeOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane.
    Serve(ServeOptions),
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(Args)]
struct ServeOptions {
    /// The SQLite database file, created on first start, or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/rollgate`) for several replicas on one database.
    #[arg(long, env = "ROLLGATE_DB", hide_env_values = true, default_value = "rollgate.db")]
    db: String,
    /// Where to listen.
    #[arg(long, env = "ROLLGATE_LISTEN", hide_env_values = true, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Creates the demo flag `checkout-v2` (boolean, serving `off`) unless it exists.
    #[arg(long)]
    demo: bool,
    /// The key edge configurations are signed with (HMAC-SHA256); each edge worker holds
    /// the same one as its PUSH_SECRET. Without it, no edges can be registered.
    #[arg(long, env = "ROLLGATE_PUSH_SECRET", hide_env_values = true)]
    push_secret: Option<String>,
    /// Private address ranges (CIDR, comma-separated) that edges and webhooks may be at,
    /// e.g. `10.0.0.0/8,127.0.0.1/32`. Without them, only public addresses are reached:
    /// not loopback, link-local (cloud metadata), private or unique-local ones.
    #[arg(long, env = "ROLLGATE_ALLOW_TARGETS", hide_env_values = true, value_delimiter = ',')]
    allow_targets: Vec<ipnet::IpNet>,
    /// How often the plan scheduler looks at every active plan, in milliseconds. Metrics
    /// arriving also wake it.
    #[arg(long, env = "ROLLGATE_SCHEDULER_TICK_MS", hide_env_values = true, default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    scheduler_tick_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `serve` parses on its own, so its help and errors know only the server's options.
    let arguments: Vec<_> = std::env::args_os().collect();
    let (global, command) = if arguments.get(1).is_some_and(|first| first == "serve") {
        let ServeCli { options } = ServeCli::parse_from(arguments.into_iter().skip(1));
        (None, Command::Serve(options))
    } else {
        let Cli { global, command } = Cli::parse_from(arguments);
        (Some(global), command)
    };
    match (global, command) {
        (_, Command::Serve(options)) => {
            let ServeOptions { db, listen, demo, push_secret, allow_targets, scheduler_tick_ms } =
                options;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let tick = Duration::from_millis(scheduler_tick_ms);
            let targets = Targets::allowing(allow_targets);
            match serve(db, listen, demo, push_secret, targets, tick).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("rollgate serve: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        (Some(global), Command::Client(command)) => cli::run(global, command).await,
        (None, Command::Client(_)) => {
            unreachable!("only `serve` parses without the client's options")
        }
    }
}

async fn serve(
    db: String,
    listen: SocketAddr,
    demo: bool,
    push_secret: Option<String>,
    targets: Targets,
    scheduler_tick: Duration,
) -> anyhow::Result<()> {
    if push_secret.as_ref().is_some_and(|secret| secret.len() < 16) {
        anyhow::bail!("the push secret must be at least 16 characters");
    }
    let admin_token = std::env::var("ROLLGATE_ADMIN_TOKEN").ok();
    if admin_token.as_ref().is_some_and(|token| token.len() < auth::TOKEN_LENGTH) {
        anyhow::bail!(
            "ROLLGATE_ADMIN_TOKEN must be at least {} characters, as long as the tokens rollgate \
             makes (`rg_` and 32 hex digits); unset it to have one made",
            auth::TOKEN_LENGTH
        );
    }
    let clock = Arc::new(SystemClock);
    let store = store::open(&db).await.with_context(|| format!("opening {}", store::shown(&db)))?;
    let push_secret = push_secret.map(String::into_bytes);
    let settings = Settings { push_secret, targets: targets.clone(), ..Settings::default() };
    let state = AppState::load(store, clock.clone(), settings).await?;
    let service = &state.service;
    bootstrap_admin_token(service, admin_token).await?;
    if demo {
        create_demo_flag(service).await?;
    }
    service::plans::spawn_scheduler(service.clone(), scheduler_tick);
    webhooks::spawn(service.store(), clock, service.deliveries(), targets);
    let (publisher, edges) = (service.publisher.clone(), service.edges.clone());
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(db = %store::shown(&db), address = %listener.local_addr()?, "rollgate serving");
    control_plane::serve(listener, state, async move {
        shutdown_signal().await;
        // Open streams would otherwise hold the shutdown forever.
        publisher.close();
        edges.stop_all();
    })
    .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => _ = signal.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// On first start, creates the `admin` token: `ROLLGATE_ADMIN_TOKEN` if set, else a new one
/// printed once, here, and never again.
async fn bootstrap_admin_token(service: &Service, given: Option<String>) -> anyhow::Result<()> {
    if !service::tokens::list(service).await?.is_empty() {
        return Ok(());
    }
    let (token, generated) = match given {
        Some(token) => (token, false),
        None => (auth::generate()?, true),
    };
    let record = Token {
        name: "admin".into(),
        scope: Scope::Admin,
        environment: None,
        hash: auth::hash(&token),
    };
    match service::tokens::create(service, record, service::environments::SYSTEM_ACTOR).await {
        Ok(_) => {}
        // Another replica starting at the same moment made the first admin token.
        Err(service::Error::Refused(Refusal::Conflict(_))) => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    if generated {
        eprintln!(
            "\nrollgate: created the admin token. It is shown this once; keep it safe:\n\n    {token}\n"
        );
    }
    Ok(())
}

async fn create_demo_flag(service: &Service) -> anyhow::Result<()> {
    let flag = FlagDefinition {
        key: "checkout-v2".into(),
        kind: "boolean".into(),
        variants: [("on".into(), true.into()), ("off".into(), false.into())].into(),
        off_variant: "off".into(),
        salt: None,
        description: "The new checkout: the demo flag.".into(),
        owner: "payments".into(),
        tags: vec!["checkout".into(), "demo".into()],
        client_visible: false,
    };
    match service::flags::create(service, flag, service::environments::SYSTEM_ACTOR).await {
        Ok(_) | Err(service::Error::Refused(Refusal::Conflict(_))) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, ServeCli};

    /// Every command and argument says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && command.get_name() != "help" {
                missing.push(path.clone());
            }
            for argument in command.get_arguments() {
                let id = argument.get_id().as_str();
                if argument.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "", &mut missing);
        check(&ServeCli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn serve_takes_only_the_servers_options() {
        let help = ServeCli::command().render_long_help().to_string();
        assert!(help.contains("--db") && !help.contains("--url") && !help.contains("--token"));
        assert!(!help.contains("ROLLGATE_DB="), "no dangling `=`: {help}");
        assert!(ServeCli::try_parse_from(["rollgate serve", "--url", "x"]).is_err());
    }
}
