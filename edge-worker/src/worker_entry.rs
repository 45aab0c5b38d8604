//! The Worker: routes, the isolate's in-memory configuration, and the `EdgeConfig` Durable
//! Object that keeps the configuration durably and pulls it when pushes stop coming.
//!
//! Bindings (see edge-worker/README.md): `EDGE_CONFIG` (the Durable Object), `ENVIRONMENT`,
//! `PUSH_SECRET` (HMAC key shared with the control plane), and for the backstop pull
//! `CONTROL_PLANE_URL`, `CONTROL_PLANE_TOKEN` and `PULL_INTERVAL_SECONDS` (default 60), which
//! evaluation count reports (`report`) use too, with `METRICS_INTERVAL_SECONDS` (default 10).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use flag_core::{ErrorCode, ofrep};
use worker::js_sys::{Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{
    Context, Date, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response,
    Result, State, durable_object, event,
};

use crate::config::{Config, Refusal, SIGNATURE_HEADER, verify};
use crate::report;

/// How long an isolate trusts its copy before asking the Durable Object whether it is current.
/// Pushes update the isolate that receives them at once; other isolates catch up this fast.
const SYNC_INTERVAL_MS: u64 = 1_000;
const DEFAULT_PULL_INTERVAL_SECONDS: u64 = 60;
/// Durable Object values are limited in size, so the envelope is stored in chunks.
const CHUNK_BYTES: usize = 100 * 1024;
/// A Durable Object takes at most 128 keys per put or delete.
const KEYS_PER_PUT: usize = 100;

/// The isolate's configuration, and when it last checked it against the Durable Object.
#[derive(Default)]
struct Isolate {
    config: Option<Rc<Config>>,
    checked_at: u64,
}

thread_local! {
    static ISOLATE: RefCell<Isolate> = RefCell::default();
}

fn current() -> Option<Rc<Config>> {
    ISOLATE.with(|isolate| isolate.borrow().config.clone())
}

/// Installs `config` unless the isolate already has one at least as new.
fn install(config: Config) {
    ISOLATE.with(|isolate| {
        let mut isolate = isolate.borrow_mut();
        let have = isolate.config.as_ref().map(|c| c.position());
        if config.supersedes(have).is_ok() {
            isolate.config = Some(Rc::new(config));
        }
        isolate.checked_at = Date::now().as_millis();
    });
}

#[event(fetch)]
async fn fetch(mut request: Request, env: Env, context: Context) -> Result<Response> {
    let path = request.path();
    match (request.method(), path.as_str()) {
        (Method::Post, "/rollgate/v1/push") => push(&mut request, &env).await,
        (Method::Get, "/rollgate/v1/status") => status(&env).await,
        (Method::Post, "/ofrep/v1/evaluate/flags") => {
            evaluate(&mut request, &env, &context, None).await
        }
        (Method::Post, _) if path.starts_with("/ofrep/v1/evaluate/flags/") => {
            let flag = path["/ofrep/v1/evaluate/flags/".len()..].to_owned();
            evaluate(&mut request, &env, &context, Some(&flag)).await
        }
        _ => problem(404, "no such route"),
    }
}

/// The configuration to serve: the isolate's, or, in a fresh isolate, the durable one. Checks in
/// the background whether a newer one is stored, at most once per `SYNC_INTERVAL_MS`.
async fn configuration(env: &Env, context: &Context) -> Result<Option<Rc<Config>>> {
    if let Some(config) = current() {
        let due = ISOLATE.with(|isolate| {
            let mut isolate = isolate.borrow_mut();
            let now = Date::now().as_millis();
            let due = now.saturating_sub(isolate.checked_at) >= SYNC_INTERVAL_MS;
            if due {
                isolate.checked_at = now;
            }
            due
        });
        if due {
            let env = env.clone();
            context.wait_until(async move {
                if let Err(error) = load_stored(&env).await {
                    worker::console_error!("syncing with the Durable Object: {error}");
                }
            });
        }
        return Ok(Some(config));
    }
    load_stored(env).await?;
    Ok(current())
}

/// Loads the Durable Object's envelope into the isolate, if it has one newer than the isolate's.
async fn load_stored(env: &Env) -> Result<()> {
    let headers = Headers::new();
    if let Some(config) = current() {
        headers.set("if-none-match", &position_tag(config.position()))?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let request = Request::new_with_init("https://edge-config/envelope", &init)?;
    let mut response = config_object(env)?.fetch_with_request(request).await?;
    if response.status_code() == 200 {
        let envelope = response.bytes().await?;
        match Config::from_envelope(&envelope, &environment(env)?) {
            Ok(config) => install(config),
            Err(refusal) => worker::console_error!("stored envelope: {}", refusal.detail()),
        }
    }
    Ok(())
}

async fn evaluate(
    request: &mut Request,
    env: &Env,
    context: &Context,
    flag: Option<&str>,
) -> Result<Response> {
    let Some(config) = configuration(env, context).await? else {
        // Never a made-up value: the caller's default applies.
        let answer = ofrep::failure(500, flag, ErrorCode::General, "no configuration yet");
        return json(answer.status, answer.body);
    };
    let presented = presented_token(request.headers());
    match presented {
        None => return problem(401, "an API key is required (X-API-Key or Authorization: Bearer)"),
        Some(token) if !config.admits(&token) => {
            return problem(401, "unknown API key for this environment");
        }
        Some(_) => {}
    }
    let body = request.bytes().await?;
    let now = i64::try_from(Date::now().as_millis()).ok();
    let Some(flag) = flag else {
        let etag = bulk_etag(&config, &body);
        if none_match(request.headers(), &etag) {
            let headers = Headers::new();
            headers.set("etag", &etag)?;
            return Ok(Response::empty()?.with_status(304).with_headers(headers));
        }
        let answer = ofrep::bulk_counted(&config.engine, &body, now, &mut report::served);
        report::flush_if_due(env, context);
        let response = json(answer.status, answer.body)?;
        if answer.status == 200 {
            response.headers().set("etag", &etag)?;
        }
        return Ok(response);
    };
    let answer = ofrep::single_counted(&config.engine, flag, &body, now, &mut report::served);
    report::flush_if_due(env, context);
    json(answer.status, answer.body)
}

/// The bulk answer's ETag: the configuration's position and a hash of the request body.
fn bulk_etag(config: &Config, body: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{}.{}-{:016x}\"", config.version, config.readers_revision, hasher.finish())
}

fn none_match(headers: &Headers, etag: &str) -> bool {
    headers.get("if-none-match").ok().flatten().is_some_and(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

fn presented_token(headers: &Headers) -> Option<String> {
    let bearer = headers.get("authorization").ok().flatten().and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    bearer
        .or_else(|| headers.get("x-api-key").ok().flatten().map(|key| key.trim().to_owned()))
        .filter(|token| !token.is_empty())
}

/// `POST /rollgate/v1/push`: a signed envelope from the control plane.
async fn push(request: &mut Request, env: &Env) -> Result<Response> {
    let body = request.bytes().await?;
    let signature = request.headers().get(SIGNATURE_HEADER)?;
    let secret = env.secret("PUSH_SECRET").map(|s| s.to_string()).unwrap_or_default();
    let environment = environment(env)?;
    let config = match verify(secret.as_bytes(), &body, signature.as_deref())
        .and_then(|()| Config::from_envelope(&body, &environment))
    {
        Ok(config) => config,
        Err(refusal) => return refused(&refusal),
    };
    // The Durable Object decides, so two isolates racing with pushes cannot go backwards.
    let mut init = RequestInit::new();
    init.with_method(Method::Put)
        .with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
    let stored = config_object(env)?
        .fetch_with_request(Request::new_with_init("https://edge-config/envelope", &init)?)
        .await?;
    if stored.status_code() != 200 {
        return Ok(stored);
    }
    let position = config.position();
    install(config);
    json(
        200,
        format!(r#"{{"version":{},"readers_revision":{}}}"#, position.0, position.1).into_bytes(),
    )
}

/// `GET /rollgate/v1/status`: what this isolate serves.
async fn status(env: &Env) -> Result<Response> {
    let environment = environment(env)?;
    let body = match current() {
        Some(config) => format!(
            r#"{{"environment":"{environment}","version":{},"readers_revision":{}}}"#,
            config.version, config.readers_revision
        ),
        None => format!(r#"{{"environment":"{environment}","version":null}}"#),
    };
    json(200, body.into_bytes())
}

fn chunk_key(generation: u64, index: u32) -> String {
    format!("envelope.{generation}.{index}")
}

fn set(object: &Object, key: &str, value: JsValue) -> Result<()> {
    Reflect::set(object, &key.into(), &value).map(drop).map_err(worker::Error::from)
}

/// A configuration's position as an entity tag, as the control plane's edge-config ETag.
fn position_tag((version, readers_revision): (u64, u64)) -> String {
    format!("\"{version}.{readers_revision}\"")
}

fn environment(env: &Env) -> Result<String> {
    Ok(env.var("ENVIRONMENT")?.to_string())
}

fn config_object(env: &Env) -> Result<worker::Stub> {
    env.durable_object("EDGE_CONFIG")?.get_by_name("config")
}

fn json(status: u16, body: Vec<u8>) -> Result<Response> {
    let response = Response::from_bytes(body)?.with_status(status);
    response.headers().set("content-type", "application/json")?;
    Ok(response)
}

/// An RFC 9457 problem, as the control plane answers.
fn problem(status: u16, detail: &str) -> Result<Response> {
    let body = serde_json::json!({"type": "about:blank", "status": status, "detail": detail});
    let response = Response::from_bytes(body.to_string().into_bytes())?.with_status(status);
    response.headers().set("content-type", "application/problem+json")?;
    Ok(response)
}

fn refused(refusal: &Refusal) -> Result<Response> {
    let body = serde_json::to_vec(&refusal.answer())?;
    let response = Response::from_bytes(body)?.with_status(refusal.status());
    response.headers().set("content-type", "application/problem+json")?;
    Ok(response)
}

/// Keeps the edge's envelope durably: a fresh isolate starts from it, and pushes race here, so
/// a stale one is refused even when isolates disagree. Its alarm pulls from the control plane
/// when pushes have stopped coming.
#[durable_object(alarm)]
pub struct EdgeConfig {
    state: State,
    env: Env,
}

impl DurableObject for EdgeConfig {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    async fn fetch(&self, mut request: Request) -> Result<Response> {
        self.arm_pull().await?;
        match request.method() {
            Method::Get => {
                // The isolate's copy is current: spare it a transfer and a compile.
                let have = self.position().await?.map(position_tag);
                if have.is_some() && request.headers().get("if-none-match")? == have {
                    return Ok(Response::empty()?.with_status(304));
                }
                match self.stored().await? {
                    Some(envelope) => Ok(Response::from_bytes(envelope)?),
                    None => problem(404, "no configuration yet"),
                }
            }
            Method::Put => {
                let envelope = request.bytes().await?;
                match self.store(&envelope).await? {
                    Ok(()) => json(200, b"{}".to_vec()),
                    Err(refusal) => refused(&refusal),
                }
            }
            _ => problem(405, "GET or PUT"),
        }
    }

    /// The backstop: unless a push arrived within the interval, pull from the control plane.
    async fn alarm(&self) -> Result<Response> {
        let interval = self.pull_interval_ms();
        let heard_at: u64 = self.state.storage().get("heard_at").await?.unwrap_or(0);
        if Date::now().as_millis().saturating_sub(heard_at) >= interval {
            if let Err(error) = self.pull().await {
                worker::console_error!("pulling from the control plane: {error}");
            }
        }
        self.state.storage().set_alarm(Duration::from_millis(interval)).await?;
        Response::empty()
    }
}

impl EdgeConfig {
    /// The stored envelope's version and readers revision.
    async fn position(&self) -> Result<Option<(u64, u64)>> {
        let storage = self.state.storage();
        let version: Option<u64> = storage.get("version").await?;
        let readers_revision: Option<u64> = storage.get("readers_revision").await?;
        Ok(version.zip(readers_revision))
    }

    async fn stored(&self) -> Result<Option<Vec<u8>>> {
        let storage = self.state.storage();
        let Some(generation) = storage.get::<u64>("generation").await? else { return Ok(None) };
        let chunks: u32 = storage.get("chunks").await?.unwrap_or(0);
        let mut envelope = Vec::new();
        for index in 0..chunks {
            let chunk: String =
                storage.get(&chunk_key(generation, index)).await?.unwrap_or_default();
            envelope.extend_from_slice(chunk.as_bytes());
        }
        Ok(Some(envelope))
    }

    /// Stores `envelope` if it is for this edge and newer than the stored one. Its chunks go
    /// under a new generation first; one last write of a few keys then makes that generation
    /// current, so readers see the old envelope or the new one, however large, never a mix.
    async fn store(&self, envelope: &[u8]) -> Result<std::result::Result<(), Refusal>> {
        let config = match Config::from_envelope(envelope, &environment(&self.env)?) {
            Ok(config) => config,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let storage = self.state.storage();
        if let Err(refusal) = config.supersedes(self.position().await?) {
            return Ok(Err(refusal));
        }
        let text =
            std::str::from_utf8(envelope).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let old_generation: Option<u64> = storage.get("generation").await?;
        let old_chunks: u32 = storage.get("chunks").await?.unwrap_or(0);
        let generation = old_generation.map_or(1, |g| g + 1);
        let mut batch = Object::new();
        let mut in_batch = 0;
        let mut chunks = 0u32;
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(CHUNK_BYTES);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            set(&batch, &chunk_key(generation, chunks), rest[..end].into())?;
            rest = &rest[end..];
            chunks += 1;
            in_batch += 1;
            if in_batch == KEYS_PER_PUT {
                storage.put_multiple_raw(std::mem::replace(&mut batch, Object::new())).await?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            storage.put_multiple_raw(batch).await?;
        }
        let current = Object::new();
        set(&current, "generation", (generation as f64).into())?;
        set(&current, "chunks", chunks.into())?;
        set(&current, "version", (config.version as f64).into())?;
        set(&current, "readers_revision", (config.readers_revision as f64).into())?;
        set(&current, "heard_at", (Date::now().as_millis() as f64).into())?;
        storage.put_multiple_raw(current).await?;
        if let Some(old) = old_generation {
            let keys: Vec<String> = (0..old_chunks).map(|index| chunk_key(old, index)).collect();
            for keys in keys.chunks(KEYS_PER_PUT) {
                storage.delete_multiple(keys.to_vec()).await?;
            }
        }
        Ok(Ok(()))
    }

    async fn pull(&self) -> Result<()> {
        let (Ok(url), Ok(token)) =
            (self.env.var("CONTROL_PLANE_URL"), self.env.secret("CONTROL_PLANE_TOKEN"))
        else {
            return Ok(());
        };
        let environment = environment(&self.env)?;
        let have = self.position().await?;
        let headers = Headers::new();
        headers.set("authorization", &format!("Bearer {token}"))?;
        if let Some(have) = have {
            headers.set("if-none-match", &position_tag(have))?;
        }
        let mut init = RequestInit::new();
        init.with_headers(headers);
        let address = format!(
            "{}/api/v1/environments/{environment}/edge-config",
            url.to_string().trim_end_matches('/')
        );
        let mut response = Fetch::Request(Request::new_with_init(&address, &init)?).send().await?;
        if response.status_code() != 200 {
            return Ok(());
        }
        let signature = response.headers().get(SIGNATURE_HEADER)?;
        let envelope = response.bytes().await?;
        let secret = self.env.secret("PUSH_SECRET")?.to_string();
        if let Err(refusal) = verify(secret.as_bytes(), &envelope, signature.as_deref()) {
            worker::console_error!("pulled envelope refused: {}", refusal.detail());
            return Ok(());
        }
        if let Err(refusal) = self.store(&envelope).await? {
            worker::console_log!("pulled envelope not stored: {}", refusal.detail());
        }
        Ok(())
    }

    /// Makes sure the backstop alarm is set.
    async fn arm_pull(&self) -> Result<()> {
        if self.state.storage().get_alarm().await?.is_none() {
            let interval = Duration::from_millis(self.pull_interval_ms());
            self.state.storage().set_alarm(interval).await?;
        }
        Ok(())
    }

    fn pull_interval_ms(&self) -> u64 {
        self.env
            .var("PULL_INTERVAL_SECONDS")
            .ok()
            .and_then(|seconds| seconds.to_string().parse().ok())
            .unwrap_or(DEFAULT_PULL_INTERVAL_SECONDS)
            * 1000
    }
}
