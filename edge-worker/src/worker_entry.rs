//! The Worker: routes, OFREP and CORS, and the `EdgeConfig` Durable Object (one per region,
//! `freshness`) that keeps the configuration durably, pulls it when pushes stop coming, and
//! holds the OFREP event streams, so a push reaches their browsers the moment it is stored.
//!
//! Bindings (docs/edge.md): `EDGE_CONFIG` (the Durable Object), `ENVIRONMENT`, `PUSH_SECRET`
//! (HMAC key shared with the control plane), `REGIONS`, `REGION` and `LOCATION` (`freshness`),
//! and for the backstop pull `CONTROL_PLANE_URL`, `CONTROL_PLANE_TOKEN` and
//! `PULL_INTERVAL_SECONDS` (default 60), which evaluation count reports (`report`) use too, with
//! `METRICS_INTERVAL_SECONDS` (default 10).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use flag_core::ErrorCode;
use flag_core::ofrep;
use futures_channel::mpsc::{UnboundedSender, unbounded};
use futures_util::StreamExt;
use worker::js_sys::{Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{
    Context, Date, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response,
    Result, State, durable_object, event,
};

use crate::config::{Config, Refusal, SIGNATURE_HEADER, verify};
use crate::freshness::{
    self, configuration, current, environment, install, parse_position_tag, position_tag,
    regional_object,
};
use crate::report;

const DEFAULT_PULL_INTERVAL_SECONDS: u64 = 60;
/// Durable Object values are limited in size, so the envelope is stored in chunks.
const CHUNK_BYTES: usize = 100 * 1024;
/// A Durable Object takes at most 128 keys per put or delete.
const KEYS_PER_PUT: usize = 100;
/// Seconds of client inactivity (a hidden tab) after which an OFREP client should close its
/// event stream, as the control plane advertises.
const INACTIVITY_DELAY_SECONDS: u64 = 120;
/// What browsers may send cross-origin: the token's headers, the body's type and the ETag.
const CORS_HEADERS: &str = "authorization, content-type, if-none-match, x-api-key, last-event-id";

#[event(fetch)]
async fn fetch(mut request: Request, env: Env, context: Context) -> Result<Response> {
    let path = request.path();
    match (request.method(), path.as_str()) {
        (Method::Post, "/rollgate/v1/push") => push(&mut request, &env).await,
        (Method::Get, "/rollgate/v1/status") => status(&env).await,
        _ if path.starts_with("/ofrep/") => {
            freshness::locate(&env, &request)?;
            ofrep(&mut request, &env, &context, &path).await
        }
        _ => problem(404, "no such route"),
    }
}

/// OFREP, with CORS for the origins the envelope allows. Other origins get no CORS headers,
/// so browsers keep the answers from their pages; credentials are never allowed.
async fn ofrep(
    request: &mut Request,
    env: &Env,
    context: &Context,
    path: &str,
) -> Result<Response> {
    let config = configuration(env, context).await?;
    // A browser's Origin, if this edge lets its pages call.
    let origin = request
        .headers()
        .get("origin")?
        .filter(|origin| config.as_ref().is_some_and(|config| config.allows_origin(origin)));
    let response = match (request.method(), path) {
        (Method::Options, _) => return preflight(request, origin.as_deref()),
        (Method::Post, "/ofrep/v1/evaluate/flags") => {
            evaluate(request, env, context, config, None).await
        }
        (Method::Post, _) if path.starts_with("/ofrep/v1/evaluate/flags/") => {
            let flag = &path["/ofrep/v1/evaluate/flags/".len()..];
            evaluate(request, env, context, config, Some(flag)).await
        }
        (Method::Get, "/ofrep/v1/events") => events(request, env, config).await,
        _ => problem(404, "no such route"),
    }?;
    if let Some(origin) = origin {
        let headers = response.headers();
        headers.set("access-control-allow-origin", &origin)?;
        headers.set("access-control-expose-headers", "etag")?;
        headers.append("vary", "origin")?;
    }
    Ok(response)
}

/// A CORS preflight: allowed for the envelope's origins, with GET or POST and the headers
/// OFREP clients send; anything else is refused without CORS headers, which browsers obey.
fn preflight(request: &Request, origin: Option<&str>) -> Result<Response> {
    let headers = request.headers();
    let method = headers.get("access-control-request-method")?.unwrap_or_default();
    let asked = headers.get("access-control-request-headers")?.unwrap_or_default();
    let allowed_headers = asked
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .all(|name| CORS_HEADERS.split(", ").any(|allowed| allowed == name));
    let Some(origin) = origin else {
        return problem(403, "pages from this origin may not call this edge");
    };
    if !matches!(method.as_str(), "GET" | "POST") || !allowed_headers {
        return problem(
            403,
            "OFREP takes GET and POST, with authorization, content-type, if-none-match, x-api-key and last-event-id headers",
        );
    }
    let response = Response::empty()?.with_status(204);
    let cors = response.headers();
    cors.set("access-control-allow-origin", origin)?;
    cors.set("access-control-allow-methods", "GET, POST")?;
    cors.set("access-control-allow-headers", CORS_HEADERS)?;
    cors.set("access-control-max-age", "600")?;
    cors.set("vary", "origin")?;
    Ok(response)
}

/// A query parameter's decoded value. By hand, because the `url` crate's Unicode tables would
/// add a third to the bundle for two parameters.
fn query_parameter(request: &Request, wanted: &str) -> Option<String> {
    let url = request.inner().url();
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = worker::js_sys::decode_uri_component(&value.replace('+', " ")).ok()?;
        (name == wanted).then(|| String::from(value))
    })
}

/// `scheme://host[:port]` of the request's URL.
fn request_origin(request: &Request) -> String {
    let url = request.inner().url();
    let host_start = url.find("://").map_or(0, |at| at + 3);
    let end = url[host_start..].find(['/', '?', '#']).map_or(url.len(), |at| host_start + at);
    url[..end].to_owned()
}

/// `GET /ofrep/v1/events`: the event stream, held by the Durable Object. A browser's
/// `EventSource` sends no headers, so the advertised URL carries a stream key instead of the
/// token; a client that can send headers may present its token.
async fn events(request: &Request, env: &Env, config: Option<Rc<Config>>) -> Result<Response> {
    let Some(config) = config else {
        return problem(503, "no configuration yet");
    };
    let key = match query_parameter(request, "token") {
        Some(key) => Some(key).filter(|key| config.opens_stream(key)),
        None => presented_token(request.headers())
            .filter(|token| config.audience(token).is_some())
            .map(|token| config.stream_key_for(&token)),
    };
    let Some(key) = key else {
        return problem(401, "an event-stream key or an API key of this environment is required");
    };
    let headers = Headers::new();
    // So the object can end the stream when the token is gone from a newer envelope.
    headers.set("x-stream-key", &key)?;
    if let Some(seen) = request.headers().get("last-event-id")? {
        headers.set("last-event-id", &seen)?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let stream = Request::new_with_init("https://edge-config/events", &init)?;
    let held = regional_object(env)?.fetch_with_request(stream).await?;
    if held.status_code() != 200 {
        return Ok(held);
    }
    // A fetched response's headers are immutable: answer with its body under new ones.
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-store")?;
    let (_, body) = held.into_parts();
    Ok(Response::from_body(body)?.with_headers(headers))
}

async fn evaluate(
    request: &mut Request,
    env: &Env,
    context: &Context,
    config: Option<Rc<Config>>,
    flag: Option<&str>,
) -> Result<Response> {
    let Some(config) = config else {
        // Never a made-up value: the caller's default applies.
        let answer = ofrep::failure(500, flag, ErrorCode::General, "no configuration yet");
        return json(answer.status, answer.body);
    };
    let Some(token) = presented_token(request.headers()) else {
        return problem(401, "an API key is required (X-API-Key or Authorization: Bearer)");
    };
    let Some(audience) = config.audience(&token) else {
        return problem(401, "unknown API key for this environment");
    };
    let named = query_parameter(request, "flagConfigEtag").and_then(|tag| parse_position_tag(&tag));
    let config = match (flag, named) {
        (None, Some(named)) => freshness::catch_up(env, config, named).await?,
        _ => config,
    };
    let body = request.bytes().await?;
    let now = i64::try_from(Date::now().as_millis()).ok();
    let Some(flag) = flag else {
        let etag = bulk_etag(&config, &token, &body);
        if none_match(request.headers(), &etag) {
            let headers = Headers::new();
            headers.set("etag", &etag)?;
            return Ok(Response::empty()?.with_status(304).with_headers(headers));
        }
        let mut answer =
            ofrep::bulk_counted(&config.engine, &body, now, audience, &mut report::served);
        report::flush_if_due(env, context);
        if answer.status != 200 {
            return json(answer.status, answer.body);
        }
        let url = format!(
            "{}/ofrep/v1/events?token={}",
            request_origin(request),
            config.stream_key_for(&token)
        );
        let streams = serde_json::json!([{
            "type": "sse",
            "url": url,
            "inactivityDelaySec": INACTIVITY_DELAY_SECONDS,
        }]);
        answer.add_event_streams(&streams.to_string());
        let response = json(answer.status, answer.body)?;
        response.headers().set("etag", &etag)?;
        return Ok(response);
    };
    let answer =
        ofrep::single_counted(&config.engine, flag, &body, now, audience, &mut report::served);
    report::flush_if_due(env, context);
    json(answer.status, answer.body)
}

/// The bulk answer's ETag: the configuration's position and a hash of the token (the answer
/// and its event-stream URL are the token's) and of the request body.
fn bulk_etag(config: &Config, token: &str, body: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    (token, body).hash(&mut hasher);
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
    // The Durable Objects decide, so two isolates racing with pushes cannot go backwards.
    if let Err(answer) = freshness::store_everywhere(env, &body).await? {
        return Ok(answer);
    }
    let position = config.position();
    if install(config) {
        // The location's other isolates see it at their next look.
        freshness::share(env, &body, position).await;
    }
    json(
        200,
        format!(r#"{{"version":{},"readers_revision":{}}}"#, position.0, position.1).into_bytes(),
    )
}

/// `GET /rollgate/v1/status`: what this isolate serves, and the regional object it reads.
async fn status(env: &Env) -> Result<Response> {
    let body = serde_json::json!({
        "environment": environment(env)?,
        "version": current().map(|config| config.version),
        "readers_revision": current().map(|config| config.readers_revision),
        "region": freshness::region_name(),
        "location_cache": freshness::location_cache_works(),
    });
    json(200, body.to_string().into_bytes())
}

fn chunk_key(generation: u64, index: u32) -> String {
    format!("envelope.{generation}.{index}")
}

fn set(object: &Object, key: &str, value: JsValue) -> Result<()> {
    Reflect::set(object, &key.into(), &value).map(drop).map_err(worker::Error::from)
}

/// An OFREP `refetchEvaluation` event for the configuration at `position`; its id and `etag`
/// name the position, so a resumed stream and a re-fetch know what they ask for.
fn refetch_event(position: (u64, u64)) -> Vec<u8> {
    let (version, readers_revision) = position;
    format!(
        "id: {version}.{readers_revision}\nevent: message\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"\\\"{version}.{readers_revision}\\\"\"}}\n\n"
    )
    .into_bytes()
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
/// when pushes have stopped coming. It holds the OFREP event streams: whatever it stores, from
/// a push or a pull, is announced on them at once.
#[durable_object(alarm)]
pub struct EdgeConfig {
    state: State,
    env: Env,
    /// The open event streams, each with its stream key; one whose browser has gone, or whose
    /// token a newer envelope no longer has, is dropped at the next event.
    streams: RefCell<Vec<(String, UnboundedSender<Vec<u8>>)>>,
    /// When an empty object last pulled because it was asked for an envelope.
    pulled_when_empty_at: RefCell<u64>,
}

impl DurableObject for EdgeConfig {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, streams: RefCell::default(), pulled_when_empty_at: RefCell::default() }
    }

    async fn fetch(&self, mut request: Request) -> Result<Response> {
        self.arm_pull().await?;
        if request.path() == "/events" {
            return self.open_stream(&request).await;
        }
        match request.method() {
            Method::Get => {
                // The isolate's copy is current: spare it a transfer and a compile.
                let have = self.position().await?.map(position_tag);
                if have.is_some() && request.headers().get("if-none-match")? == have {
                    return Ok(Response::empty()?.with_status(304));
                }
                let mut stored = self.stored().await?;
                if stored.is_none() && self.may_pull_when_empty() {
                    // A new object (a region added to REGIONS) fills itself at once, rather than
                    // at its first alarm.
                    if let Err(error) = self.pull().await {
                        worker::console_error!("pulling into an empty object: {error}");
                    }
                    stored = self.stored().await?;
                }
                match stored {
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
    /// A new event stream. It hears of every configuration stored from now on; and at once of
    /// the current one, unless `Last-Event-ID` says its client has that one already (a client
    /// that evaluated just before a change, or missed some, re-fetches once).
    async fn open_stream(&self, request: &Request) -> Result<Response> {
        let (sender, receiver) = unbounded();
        let key = request.headers().get("x-stream-key")?.unwrap_or_default();
        let seen = request.headers().get("last-event-id")?;
        if let Some(position) = self.position().await?
            && seen.as_deref().and_then(parse_position_tag) != Some(position)
        {
            // An unbounded channel takes a message while its receiver lives.
            let _ = sender.unbounded_send(refetch_event(position));
        }
        self.streams.borrow_mut().push((key, sender));
        Response::from_stream(receiver.map(Ok::<Vec<u8>, worker::Error>))
    }

    /// Tells every open stream of the configuration now stored, and ends those whose token it
    /// no longer has.
    fn announce(&self, config: &Config) {
        let event = refetch_event(config.position());
        self.streams.borrow_mut().retain(|(key, stream)| {
            config.opens_stream(key) && stream.unbounded_send(event.clone()).is_ok()
        });
    }

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
        self.announce(&config);
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

    /// At most every 5 seconds, so an unreachable control plane is not asked on every request.
    fn may_pull_when_empty(&self) -> bool {
        let now = Date::now().as_millis();
        let mut at = self.pulled_when_empty_at.borrow_mut();
        let due = now.saturating_sub(*at) >= 5_000;
        if due {
            *at = now;
        }
        due
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
