//! How an isolate's configuration stays current: the fan-out design of docs/edge.md.
//!
//! - The envelope is held by one Durable Object per region (`regions`); the Worker that takes a
//!   push writes it to all of them, and installs it at once.
//! - An isolate never polls its object on its own: at most every `LOOK_INTERVAL_MS`, on a
//!   request and before answering it, it reads its location's Cache API entry (a stamp naming
//!   the newest configuration, and the envelope under that name). When the stamp is older than
//!   `REFRESH_INTERVAL_MS`, that isolate claims the refresh (it writes the stamp first, so the
//!   location's other isolates do not) and fetches from its regional object in the background,
//!   for every isolate of the location.
//! - Where the Cache API keeps nothing (a `workers.dev` route), each isolate asks its object no
//!   more often than `DIRECT_INTERVAL_MS`, as edges did before.

use std::cell::RefCell;
use std::rc::Rc;

use worker::{Cache, Context, Date, Env, Headers, Method, Request, RequestInit, Response, Result};

use crate::config::{Config, RefusalAnswer, RefusalKind, newer};
use crate::regions::{self, Region};

pub(crate) const LOOK_INTERVAL_MS: u64 = 50;
pub(crate) const REFRESH_INTERVAL_MS: u64 = 100;
pub(crate) const DIRECT_INTERVAL_MS: u64 = 1_000;
/// How long the location's cache keeps a stamp, and an envelope, nobody refreshes.
const STAMP_SECONDS: u32 = 60;
const ENVELOPE_SECONDS: u32 = 3_600;

/// The isolate's configuration and region, and when it last looked and refreshed.
#[derive(Default)]
struct Isolate {
    config: Option<Rc<Config>>,
    region: Option<Region>,
    looked_at: u64,
    refreshed_at: u64,
    /// The location's cache has shown a stamp: it keeps what is put in it.
    cache_works: bool,
    /// The configuration a re-fetch last named (`catch_up`).
    caught_up_to: Option<(u64, u64)>,
}

thread_local! {
    static ISOLATE: RefCell<Isolate> = RefCell::default();
}

pub(crate) fn current() -> Option<Rc<Config>> {
    ISOLATE.with(|isolate| isolate.borrow().config.clone())
}

/// Installs `config` unless the isolate already has one at least as new; says whether it did.
pub(crate) fn install(config: Config) -> bool {
    ISOLATE.with(|isolate| {
        let mut isolate = isolate.borrow_mut();
        let have = isolate.config.as_ref().map(|c| c.position());
        let newer = config.supersedes(have).is_ok();
        if newer {
            isolate.config = Some(Rc::new(config));
        }
        newer
    })
}

/// Whether `interval` has passed since `*at`; if so, `*at` becomes now.
fn due(at: impl Fn(&mut Isolate) -> &mut u64, interval: u64) -> bool {
    let now = Date::now().as_millis();
    ISOLATE.with(|isolate| {
        let mut isolate = isolate.borrow_mut();
        let at = at(&mut isolate);
        let due = now.saturating_sub(*at) >= interval;
        if due {
            *at = now;
        }
        due
    })
}

/// Learns the isolate's region on its first app request: `REGION` if set, else from where its
/// client is (`request.cf`: Cloudflare routes a client to a data center near it). Not on a
/// push, which comes from wherever the control plane is.
pub(crate) fn locate(env: &Env, request: &Request) -> Result<()> {
    if ISOLATE.with(|isolate| isolate.borrow().region.is_some()) {
        return Ok(());
    }
    let var = |name| env.var(name).ok().map(|value| value.to_string());
    let regions = regions::parse(var("REGIONS").as_deref()).map_err(worker::Error::RustError)?;
    let cf = request.cf();
    let continent = cf.and_then(|cf| cf.continent());
    let longitude = cf.and_then(|cf| cf.coordinates()).map(|(_, longitude)| f64::from(longitude));
    let region =
        regions::choose(&regions, var("REGION").as_deref(), continent.as_deref(), longitude)
            .clone();
    ISOLATE.with(|isolate| isolate.borrow_mut().region = Some(region));
    Ok(())
}

/// Whether this isolate has seen its location's cache keep a stamp.
pub(crate) fn location_cache_works() -> bool {
    ISOLATE.with(|isolate| isolate.borrow().cache_works)
}

/// The name of the object this isolate reads from.
pub(crate) fn region_name() -> String {
    ISOLATE
        .with(|isolate| isolate.borrow().region.as_ref().map(|r| r.object.clone()))
        .unwrap_or_default()
}

fn stub(env: &Env, region: &Region) -> Result<worker::Stub> {
    let namespace = env.durable_object("EDGE_CONFIG")?;
    match &region.hint {
        Some(hint) => namespace.get_by_name_with_location_hint(&region.object, hint),
        None => namespace.get_by_name(&region.object),
    }
}

/// This isolate's regional object: the one holding its event streams and its envelope.
pub(crate) fn regional_object(env: &Env) -> Result<worker::Stub> {
    let region = ISOLATE.with(|isolate| isolate.borrow().region.clone());
    let region = region.ok_or_else(|| worker::Error::RustError("no region yet".into()))?;
    stub(env, &region)
}

/// The configuration to serve: the isolate's, kept current by looking at the location's cache
/// (at most every `LOOK_INTERVAL_MS`); in a fresh isolate, the location's or the region's.
pub(crate) async fn configuration(env: &Env, context: &Context) -> Result<Option<Rc<Config>>> {
    if current().is_some() {
        if due(|isolate| &mut isolate.looked_at, LOOK_INTERVAL_MS)
            && let Err(error) = look(env, context).await
        {
            worker::console_error!("looking at the location's cache: {error}");
        }
        return Ok(current());
    }
    if let Err(error) = look(env, context).await {
        worker::console_error!("looking at the location's cache: {error}");
    }
    if current().is_none() {
        load_stored(env).await?;
    }
    Ok(current())
}

/// Installs the location's newest configuration if it is newer, and claims a refresh from the
/// regional object when the location's copy is stale.
async fn look(env: &Env, context: &Context) -> Result<()> {
    let cache = Cache::default();
    let stamp = match cache.get(key(env, "stamp")?, false).await? {
        Some(mut entry) => parse_stamp(&entry.text().await?),
        None => None,
    };
    // The stamp names a configuration this isolate could not take from the cache (evicted, or
    // unreadable): it goes to the regional object, however fresh the stamp.
    let mut missing = false;
    if let Some((position, _)) = stamp {
        ISOLATE.with(|isolate| isolate.borrow_mut().cache_works = true);
        if newer(position, current().map(|config| config.position())) {
            missing = true;
            if let Some(mut entry) = cache.get(envelope_key(env, position)?, false).await? {
                let envelope = entry.bytes().await?;
                match Config::from_envelope(&envelope, &environment(env)?) {
                    Ok(config) => {
                        install(config);
                        missing = false;
                    }
                    Err(refusal) => worker::console_error!("cached envelope: {}", refusal.detail()),
                }
            }
        }
    }
    // A fresh isolate loads from its object itself, on the request's path.
    let Some(config) = current() else { return Ok(()) };
    let now = Date::now().as_millis();
    let stale = missing
        || stamp
            .is_none_or(|(_, fetched_at)| now.saturating_sub(fetched_at) >= REFRESH_INTERVAL_MS);
    let cache_works = ISOLATE.with(|isolate| isolate.borrow().cache_works);
    let interval = if cache_works { REFRESH_INTERVAL_MS } else { DIRECT_INTERVAL_MS };
    if stale && due(|isolate| &mut isolate.refreshed_at, interval) {
        // The claim keeps the newest position the location knows of, so the stamp never goes
        // back; the location's other isolates leave the refresh to this one.
        let claim = match stamp {
            Some((position, _)) if newer(position, Some(config.position())) => position,
            _ => config.position(),
        };
        let env = env.clone();
        context.wait_until(async move {
            let refreshed = async {
                put_stamp(&env, claim, now).await?;
                load_stored(&env).await
            };
            if let Err(error) = refreshed.await {
                worker::console_error!("refreshing from the regional object: {error}");
            }
        });
    }
    Ok(())
}

/// Loads the regional object's envelope into the isolate if it is newer than the isolate's,
/// and shares it with the location.
pub(crate) async fn load_stored(env: &Env) -> Result<()> {
    let headers = Headers::new();
    let have = current().map(|config| config.position());
    if let Some(have) = have {
        headers.set("if-none-match", &position_tag(have))?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let request = Request::new_with_init("https://edge-config/envelope", &init)?;
    let mut response = regional_object(env)?.fetch_with_request(request).await?;
    if response.status_code() == 200 {
        let envelope = response.bytes().await?;
        match Config::from_envelope(&envelope, &environment(env)?) {
            Ok(config) => {
                let position = config.position();
                // Only what this isolate took: never an older one than it (or the stamp) has.
                if install(config) {
                    share(env, &envelope, position).await;
                }
            }
            Err(refusal) => worker::console_error!("stored envelope: {}", refusal.detail()),
        }
    }
    // A 304: the claim already stamped the location's copy as fresh.
    Ok(())
}

/// For a re-fetch that an event asked for: the configuration the event named
/// (`flagConfigEtag`), read from the regional object first if this isolate has not loaded it
/// yet, so the answer is never older than the event. Once per named configuration and isolate,
/// and only for one within reach, so made-up tags cannot send every request to the object.
pub(crate) async fn catch_up(
    env: &Env,
    config: Rc<Config>,
    named: (u64, u64),
) -> Result<Rc<Config>> {
    let (version, readers_revision) = config.position();
    let ahead = named.0 > version || named.1 > readers_revision;
    let within_reach = named.0 <= version + 1024 && named.1 <= readers_revision + 1024;
    let first_time = ISOLATE.with(|isolate| {
        let mut isolate = isolate.borrow_mut();
        let first = isolate.caught_up_to != Some(named);
        isolate.caught_up_to = Some(named);
        first
    });
    if !(ahead && within_reach && first_time) {
        return Ok(config);
    }
    load_stored(env).await?;
    Ok(current().unwrap_or(config))
}

/// Writes a pushed envelope to every regional object. `Ok` when each has it (stored, or a
/// newer one already); else the answer for the control plane, which pushes again.
pub(crate) async fn store_everywhere(
    env: &Env,
    envelope: &[u8],
) -> Result<std::result::Result<(), Response>> {
    let var = env.var("REGIONS").ok().map(|value| value.to_string());
    let regions = regions::parse(var.as_deref()).map_err(worker::Error::RustError)?;
    let writes = regions.iter().map(|region| async move {
        let mut init = RequestInit::new();
        init.with_method(Method::Put)
            .with_body(Some(worker::js_sys::Uint8Array::from(envelope).into()));
        let request = Request::new_with_init("https://edge-config/envelope", &init)?;
        stub(env, region)?.fetch_with_request(request).await
    });
    let answers = futures_util::future::join_all(writes).await;
    let mut stale = Vec::new();
    let mut failed = Vec::new();
    for (region, answer) in regions.iter().zip(answers) {
        match answer {
            Ok(response) if response.status_code() == 200 => {}
            Ok(mut response) => {
                let text = response.text().await.unwrap_or_default();
                match serde_json::from_str::<RefusalAnswer>(&text) {
                    Ok(refusal) if refusal.refusal == RefusalKind::Stale => stale.push(text),
                    // A refusal the Worker's own checks did not make is the object's to tell.
                    Ok(_) if regions.len() == 1 => {
                        let answer = Response::from_bytes(text.into_bytes())?
                            .with_status(response.status_code());
                        answer.headers().set("content-type", "application/problem+json")?;
                        return Ok(Err(answer));
                    }
                    _ => failed.push(format!("{} ({})", region.object, response.status_code())),
                }
            }
            Err(error) => failed.push(format!("{} ({error})", region.object)),
        }
    }
    if !failed.is_empty() {
        let detail = format!("not stored in every region: {}", failed.join(", "));
        let body = serde_json::json!({"type": "about:blank", "status": 503, "detail": detail});
        let answer = Response::from_bytes(body.to_string().into_bytes())?.with_status(503);
        answer.headers().set("content-type", "application/problem+json")?;
        return Ok(Err(answer));
    }
    // Stale everywhere: every region has this one or a newer one. The control plane counts
    // that as applied.
    if stale.len() == regions.len()
        && let Some(stale) = stale.pop()
    {
        let response = Response::from_bytes(stale.into_bytes())?.with_status(422);
        response.headers().set("content-type", "application/problem+json")?;
        return Ok(Err(response));
    }
    Ok(Ok(()))
}

/// Puts `envelope`, which this isolate just installed, in the location's cache, under its
/// position and in the stamp. Best effort: the location then refreshes from the object.
pub(crate) async fn share(env: &Env, envelope: &[u8], position: (u64, u64)) {
    let shared = async {
        let entry = Response::from_bytes(envelope.to_vec())?;
        entry.headers().set("cache-control", &format!("max-age={ENVELOPE_SECONDS}"))?;
        Cache::default().put(envelope_key(env, position)?, entry).await?;
        put_stamp(env, position, Date::now().as_millis()).await
    };
    if let Err(error) = shared.await {
        worker::console_error!("sharing with the location: {error}");
    }
}

async fn put_stamp(env: &Env, position: (u64, u64), fetched_at: u64) -> Result<()> {
    let body = format!("{}.{} {fetched_at}", position.0, position.1);
    let entry = Response::ok(body)?;
    entry.headers().set("cache-control", &format!("max-age={STAMP_SECONDS}"))?;
    Cache::default().put(key(env, "stamp")?, entry).await
}

/// `(position, fetched_at)` from a stamp's body.
fn parse_stamp(text: &str) -> Option<((u64, u64), u64)> {
    let (position, fetched_at) = text.split_once(' ')?;
    Some((parse_position_tag(position)?, fetched_at.parse().ok()?))
}

/// A cache key of the environment's, in the location's cache. The cache is shared by the
/// zone's Workers, so the keys are named after the push secret: only this edge (and edges of
/// the same secret, which take the same envelopes) can read or write them, and what they hold
/// was verified before it was put there. `LOCATION` partitions the keys where one cache stands
/// for several locations (several Workers in one Miniflare).
fn key(env: &Env, name: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    let secret = env.secret("PUSH_SECRET").map(|s| s.to_string()).unwrap_or_default();
    let mut named = Sha256::new();
    named.update(b"rollgate location cache\0");
    named.update(secret.as_bytes());
    let named = hex::encode(&named.finalize()[..16]);
    let location = env.var("LOCATION").map(|value| value.to_string()).unwrap_or_default();
    Ok(format!("https://rollgate-edge.invalid/{named}/{location}/{}/{name}", environment(env)?))
}

fn envelope_key(env: &Env, (version, readers_revision): (u64, u64)) -> Result<String> {
    key(env, &format!("envelope/{version}.{readers_revision}"))
}

/// A configuration's position as an entity tag, as the control plane's edge-config ETag.
pub(crate) fn position_tag((version, readers_revision): (u64, u64)) -> String {
    format!("\"{version}.{readers_revision}\"")
}

/// The position a tag (`"12.3"`, `12.3` or `W/"12.3"`) names.
pub(crate) fn parse_position_tag(tag: &str) -> Option<(u64, u64)> {
    let tag = tag.trim();
    let (version, readers_revision) =
        tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"').split_once('.')?;
    Some((version.parse().ok()?, readers_revision.parse().ok()?))
}

pub(crate) fn environment(env: &Env) -> Result<String> {
    Ok(env.var("ENVIRONMENT")?.to_string())
}
