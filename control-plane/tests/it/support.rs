//! A real server for the tests: a loopback listener on port 0, a SQLite file in a temporary
//! directory, one token per scope, and the `checkout-v2` flag.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use control_plane::auth;
use control_plane::clock::{Clock, SystemClock};
use control_plane::model::audit::{AuditQuery, AuditRecord};
use control_plane::model::flag::FlagDefinition;
use control_plane::model::token::{Scope, Token};
use control_plane::outbound::Targets;
use control_plane::service::{self, Service};
use control_plane::store::{self, Store};
use control_plane::{AppState, Settings};
use serde_json::json;

pub(crate) struct Server {
    pub(crate) address: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) state: AppState,
    pub(crate) dir: Arc<tempfile::TempDir>,
    /// The listener and the webhook sender: both stop when the server is dropped.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

pub(crate) const READ: &str = "rg_read_token_for_tests";
pub(crate) const RELEASE: &str = "rg_release_token_for_tests";
pub(crate) const ADMIN: &str = "rg_admin_token_for_tests";
pub(crate) const PUSH_SECRET: &str = "push-secret-for-control-plane-tests";

/// A server whose store has the `checkout-v2` flag and one token per scope, the read one bound to
/// production.
pub(crate) async fn start() -> Server {
    start_with(Arc::new(SystemClock)).await
}

/// `start` on `clock`.
pub(crate) async fn start_with(clock: Arc<dyn Clock>) -> Server {
    start_configured(clock, test_settings()).await
}

/// `start` with `settings`.
pub(crate) async fn start_configured(clock: Arc<dyn Clock>, settings: Settings) -> Server {
    let server = reopen_with(Arc::new(tempfile::tempdir().unwrap()), clock, settings).await;
    seed(server).await
}

/// `count` servers on one new PostgreSQL database, as replicas behind a load balancer would
/// be; the first seeded as `start` seeds.
pub(crate) async fn start_replicas(count: usize) -> Vec<Server> {
    start_replicas_with(count, Arc::new(SystemClock)).await
}

/// `start_replicas` on `clock`.
pub(crate) async fn start_replicas_with(count: usize, clock: Arc<dyn Clock>) -> Vec<Server> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join(POSTGRES_URL), postgres_database().await).unwrap();
    let first = reopen(Arc::clone(&dir), Arc::clone(&clock)).await;
    let mut replicas = vec![seed(first).await];
    for _ in 1..count {
        replicas.push(reopen(Arc::clone(&dir), Arc::clone(&clock)).await);
    }
    replicas
}

/// One token per scope, the read one bound to production, and the `checkout-v2` flag.
async fn seed(server: Server) -> Server {
    let service = server.service();
    for (name, scope, token) in [
        ("edge", Scope::Read, READ),
        ("ana", Scope::Release, RELEASE),
        ("ops", Scope::Admin, ADMIN),
    ] {
        let environment = (scope == Scope::Read).then(|| "production".to_owned());
        let token = Token { name: name.into(), scope, environment, hash: auth::hash(token) };
        service::tokens::create(service, token, "test").await.unwrap();
    }
    service::flags::create(service, checkout(), "ana").await.unwrap();
    server
}

/// The `checkout-v2` flag: boolean, `on` and `off`.
pub(crate) fn checkout() -> FlagDefinition {
    serde_json::from_value(json!({
        "key": "checkout-v2", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"
    }))
    .unwrap()
}

/// Serves the database in `dir` (created if new) as a new process would: everything in
/// memory loaded from the store, the webhook sender running. The plan scheduler does not run by
/// itself; tests call `service::plans::tick`.
pub(crate) async fn reopen(dir: Arc<tempfile::TempDir>, clock: Arc<dyn Clock>) -> Server {
    reopen_with(dir, clock, test_settings()).await
}

/// Short keep-alives, the push secret, and loopback allowed: fake edges and webhooks listen
/// there.
pub(crate) fn test_settings() -> Settings {
    let loopback = ["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    Settings {
        keep_alive: Duration::from_millis(200),
        push_secret: Some(PUSH_SECRET.as_bytes().to_vec()),
        targets: Targets::allowing(loopback),
    }
}

/// `reopen` with `settings`.
pub(crate) async fn reopen_with(
    dir: Arc<tempfile::TempDir>,
    clock: Arc<dyn Clock>,
    settings: Settings,
) -> Server {
    let store = open_store(dir.path()).await;
    let state = AppState::load(store, clock.clone(), settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = &state.service;
    let tasks = vec![
        tokio::spawn(control_plane::serve(listener, state.clone(), std::future::pending()))
            .abort_handle(),
        control_plane::webhooks::spawn(
            service.store(),
            clock,
            service.deliveries(),
            state.settings.targets.clone(),
        )
        .abort_handle(),
    ];
    Server { address, client: reqwest::Client::new(), state, dir, tasks }
}

impl Server {
    pub(crate) fn service(&self) -> &Service {
        &self.state.service
    }

    /// Audit records matching `query`, as stored.
    pub(crate) async fn audit(&self, query: AuditQuery) -> Vec<AuditRecord> {
        service::audit::list(self.service(), query).await.unwrap()
    }

    pub(crate) fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("http://{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// What a bad request must leave untouched: the served version and the audit log.
    pub(crate) async fn observable_state(&self) -> (String, usize) {
        let response = self.get(SNAPSHOT, Some(READ)).send().await.unwrap();
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        (etag, self.audit(AuditQuery::default()).await.len())
    }

    pub(crate) async fn evaluate(&self, user: &str) -> (Option<String>, flag_core::Reason) {
        let body = self.get(SNAPSHOT, Some(READ)).send().await.unwrap().bytes().await.unwrap();
        let engine = flag_core::Engine::from_json(&body).unwrap();
        let evaluation =
            engine.evaluate("checkout-v2", &flag_core::Context::with_targeting_key(user));
        (evaluation.variant.map(String::from), evaluation.reason)
    }

    /// Sends `body` as JSON and returns the status and the JSON answer (`null` if none).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.send(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// A new token made through the API; returns its secret.
    pub(crate) async fn token(&self, name: &str, scope: &str, environment: Option<&str>) -> String {
        let body = json!({"name": name, "scope": scope, "environment": environment});
        let (status, created) =
            self.call(reqwest::Method::POST, "/api/v1/tokens", Some(ADMIN), Some(body)).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
        created["token"].as_str().unwrap().to_owned()
    }

    /// A client that connects from another loopback address (`127.0.0.<n>`): the brake on
    /// guessed tokens counts per address.
    pub(crate) fn client_from(&self, n: u8) -> reqwest::Client {
        let address = std::net::IpAddr::from([127, 0, 0, n]);
        reqwest::Client::builder().local_address(address).build().unwrap()
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.get(format!("http://{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

pub(crate) const SNAPSHOT: &str = "/api/v1/environments/production/snapshot";

/// The admin token of servers started as the real binary.
pub(crate) const BINARY_ADMIN: &str = "rg_crash_test_admin_token_long_enough";

/// A loopback address nobody listens on right now.
pub(crate) fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The real `rollgate serve`, with the demo flag and `BINARY_ADMIN`; SIGKILLed when dropped.
pub(crate) struct Rollgate {
    child: std::process::Child,
    pub(crate) base: String,
}

impl Rollgate {
    pub(crate) async fn start(db: &Path, address: SocketAddr, client: &reqwest::Client) -> Self {
        Self::start_with(db, address, client, &[], None).await
    }

    /// With `extra` arguments, and its output (the log: warnings and up) in `log` if given.
    pub(crate) async fn start_with(
        db: &Path,
        address: SocketAddr,
        client: &reqwest::Client,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                (file.try_clone().unwrap().into(), file.into())
            }
            None => (std::process::Stdio::null(), std::process::Stdio::inherit()),
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .args([
                "serve",
                "--demo",
                "--scheduler-tick-ms",
                "50",
                "--listen",
                &address.to_string(),
            ])
            .args(extra)
            .arg("--db")
            .arg(db)
            .env("ROLLGATE_ADMIN_TOKEN", BINARY_ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let server = Self { child, base: format!("http://{address}") };
        // Ready when /readyz answers; a refused connection means not yet.
        for _ in 0..500 {
            if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("rollgate did not become ready within 5 s");
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A GET as the admin, as JSON.
    pub(crate) async fn get(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        admin_get(client, &self.base, path).await
    }

    pub(crate) fn kill(self) {
        drop(self);
    }
}

/// A GET of `base` + `path` as `BINARY_ADMIN`, as JSON.
pub(crate) async fn admin_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> serde_json::Value {
    let response = client.get(format!("{base}{path}")).bearer_auth(BINARY_ADMIN).send().await;
    response.unwrap().json().await.unwrap()
}

/// Waits until `check` holds, looking every 10 ms; fails the test after 10 s.
pub(crate) async fn until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGKILL, also when a failed assertion unwinds past a running server.
impl Drop for Rollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test directory names its PostgreSQL database.
const POSTGRES_URL: &str = "postgres-url";

/// The store kept in `dir`: the PostgreSQL database `dir` names, if it names one; else with
/// `ROLLGATE_TEST_STORE=postgres` a new database in the test cluster, named in `dir` so that a
/// reopen finds the same data; else an SQLite file.
pub(crate) async fn open_store(dir: &Path) -> Arc<dyn Store> {
    let named = dir.join(POSTGRES_URL);
    let db = match std::fs::read_to_string(&named) {
        Ok(url) => url,
        Err(_) if std::env::var("ROLLGATE_TEST_STORE").as_deref() == Ok("postgres") => {
            let url = postgres_database().await;
            std::fs::write(&named, &url).unwrap();
            url
        }
        Err(_) => dir.join("rollgate.db").to_str().unwrap().to_owned(),
    };
    store::open(&db).await.unwrap()
}

/// Runs `sql` as the test cluster's superuser, in its `postgres` database.
pub(crate) async fn postgres_admin(sql: &str) {
    let cluster = std::env::var("ROLLGATE_TEST_POSTGRES").unwrap();
    let (client, connection) =
        tokio_postgres::connect(&format!("{cluster}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    drop(client);
    let _ = connection.await;
}

impl Server {
    /// The PostgreSQL database this server's store is in.
    pub(crate) fn postgres_database(&self) -> String {
        let url = std::fs::read_to_string(self.dir.path().join(POSTGRES_URL)).unwrap();
        url.rsplit('/').next().unwrap().to_owned()
    }
}

/// A new, empty database in the PostgreSQL cluster `ROLLGATE_TEST_POSTGRES` names, as a URL.
/// README's test command runs the tests under `tests/with-postgres`, which starts a throwaway
/// cluster and sets it.
pub(crate) async fn postgres_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CREATED: AtomicU32 = AtomicU32::new(0);
    let cluster = std::env::var("ROLLGATE_TEST_POSTGRES").expect(
        "ROLLGATE_TEST_POSTGRES is not set: run the tests as `tests/with-postgres cargo test`, \
         or point it at a PostgreSQL superuser URL without a database",
    );
    let name =
        format!("rollgate_test_{}_{}", std::process::id(), CREATED.fetch_add(1, Ordering::Relaxed));
    let (client, connection) =
        tokio_postgres::connect(&format!("{cluster}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("connecting to {cluster}: {error}"));
    let connection = tokio::spawn(connection);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    drop(client);
    let _ = connection.await;
    format!("{cluster}/{name}")
}
