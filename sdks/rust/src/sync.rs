//! Following the control plane: its snapshot stream (docs/api.md, Stream), resumed with
//! `Last-Event-ID`, and between attempts a poll of the snapshot with `If-None-Match`, which
//! also serves where a proxy does not pass the stream through. Reconnections back off
//! exponentially with jitter. A snapshot is never older than the one served (edges keep the
//! same rule), and one flag-core refuses is never served.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use flag_core::Engine;
use flag_core::wire::Snapshot;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, IF_NONE_MATCH};
use reqwest::{Client, StatusCode};

use crate::Options;
use crate::shared::Shared;

/// A path segment, percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A snapshot's JSON, parsed once: compiled, and digested. A refusal is flag-core's, with the
/// path of the fault.
pub(crate) fn compile(json: &[u8]) -> Result<(Engine, Digest), flag_core::ConfigError> {
    let parsed = flag_core::json::unique_keys(json)
        .ok()
        .and_then(|()| serde_json::from_slice::<Snapshot>(json).ok());
    let Some(snapshot) = parsed else {
        // flag-core parses again, tracking the path, to say where it fails. (It makes the same
        // checks, so it fails too; were it not to, an empty digest names every flag changed.)
        return Engine::from_json(json).map(|engine| (engine, Digest::default()));
    };
    let digest = Digest::of(&snapshot);
    Ok((Engine::from_snapshot(snapshot)?, digest))
}

/// Runs until the provider is stopped; `served` digests the bootstrapped snapshot, if any.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    client: Client,
    options: Options,
    served: Option<Digest>,
) {
    let mut follower = Follower::new(shared.clone(), &options, served);
    let mut backoff = Backoff::new(options.max_backoff);
    loop {
        let streamed = tokio::select! {
            streamed = follower.stream(&client) => streamed,
            () = shared.stop.stopped() => return,
        };
        if streamed.opened {
            backoff.reset();
        }
        tracing::debug!(why = %streamed.ended, "rollgate: snapshot stream ended");
        let polled = tokio::select! {
            polled = follower.poll(&client) => polled,
            () = shared.stop.stopped() => return,
        };
        match polled {
            Ok(()) => shared.reachable(),
            Err(why) => shared.unreachable(format!("{}; {why}", streamed.ended)),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = shared.stop.stopped() => return,
        }
    }
}

struct Streamed {
    /// The stream was open (200) before it ended.
    opened: bool,
    ended: String,
}

struct Follower {
    shared: Arc<Shared>,
    options: Options,
    stream_url: String,
    snapshot_url: String,
    /// The snapshot served, digested, to tell which flags a new one changes.
    served: Option<Digest>,
}

impl Follower {
    fn new(shared: Arc<Shared>, options: &Options, served: Option<Digest>) -> Self {
        let base = format!("{}/api/v1/environments/{}", options.url, segment(&options.environment));
        Self {
            shared,
            options: options.clone(),
            stream_url: format!("{base}/stream"),
            snapshot_url: format!("{base}/snapshot"),
            served,
        }
    }

    fn version(&self) -> Option<u64> {
        self.shared.engine.load().as_ref().map(|engine| engine.version())
    }

    async fn stream(&mut self, client: &Client) -> Streamed {
        let mut request = client
            .get(&self.stream_url)
            .bearer_auth(&self.options.token)
            .header(ACCEPT, "text/event-stream");
        if let Some(version) = self.version() {
            request = request.header("Last-Event-ID", version.to_string());
        }
        // A connection that died silently must not hold the follower: the answer's head comes
        // within the idle timeout, or the attempt fails.
        let idle = self.options.stream_idle_timeout;
        let response = match tokio::time::timeout(idle, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => response,
            Ok(Ok(response)) => {
                let ended = format!("the stream answered {}", response.status());
                return Streamed { opened: false, ended };
            }
            Ok(Err(error)) => {
                let ended = format!("cannot open the stream: {error}");
                return Streamed { opened: false, ended };
            }
            Err(_) => {
                let ended = format!("no answer to opening the stream within {} s", idle.as_secs());
                return Streamed { opened: false, ended };
            }
        };
        // Connected: what is served is current, and whatever is newer comes next.
        self.shared.reachable();
        // The idle timeout applies to bytes, so the server's keep-alive comments count.
        let chunks = futures_util::stream::unfold(response, move |mut response| async move {
            match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(bytes))) => Some((Ok(bytes), response)),
                Ok(Ok(None)) => None,
                Ok(Err(error)) => Some((Err(error.to_string()), response)),
                Err(_) => Some((Err(format!("nothing for {} s", idle.as_secs())), response)),
            }
        });
        let mut events = std::pin::pin!(chunks.eventsource());
        loop {
            let ended = match events.next().await {
                None => "the control plane closed the stream".to_owned(),
                Some(Err(error)) => format!("the stream broke: {error}"),
                Some(Ok(event)) if event.event == "snapshot" => {
                    self.apply(event.data.as_bytes()).await;
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            return Streamed { opened: true, ended };
        }
    }

    async fn poll(&mut self, client: &Client) -> Result<(), String> {
        let mut request = client.get(&self.snapshot_url).bearer_auth(&self.options.token);
        if let Some(version) = self.version() {
            request = request.header(IF_NONE_MATCH, format!("\"{version}\""));
        }
        let response = request
            .timeout(self.options.stream_idle_timeout)
            .send()
            .await
            .map_err(|error| format!("cannot poll: {error}"))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(()),
            StatusCode::OK => {
                let body =
                    response.bytes().await.map_err(|error| format!("cannot poll: {error}"))?;
                self.apply(&body).await;
                Ok(())
            }
            status => Err(format!("the snapshot answered {status}")),
        }
    }

    /// Serves `json` if flag-core compiles it and it is newer than what is served.
    async fn apply(&mut self, json: &[u8]) {
        let (engine, digest) = match compile(json) {
            Ok(compiled) => compiled,
            Err(error) => {
                return self.shared.refused(format!("a snapshot flag-core refuses: {error}"));
            }
        };
        if engine.environment() != self.options.environment {
            let why = format!(
                "a snapshot of `{}`, not of `{}`",
                engine.environment(),
                self.options.environment
            );
            return self.shared.refused(why);
        }
        if self.version().is_some_and(|served| engine.version() <= served) {
            return;
        }
        let changed = self.served.as_ref().map(|served| served.changed(&digest));
        self.shared.install(engine, changed);
        self.served = Some(digest);
        if let Some(path) = &self.options.save_to
            && let Err(error) = save(path, json).await
        {
            tracing::warn!(%error, path = %path.display(), "rollgate: cannot save the snapshot");
        }
    }
}

/// Written beside under a name of its own (processes may share the file), flushed to disk, then
/// renamed over it: a crash or a power cut leaves the old file or the new one, never half.
async fn save(path: &std::path::Path, json: &[u8]) -> std::io::Result<()> {
    let (path, json) = (path.to_owned(), json.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".{}-{:016x}.partial", std::process::id(), rand::random::<u64>()));
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// What a snapshot's flags and segments were, in a few bytes each: enough to tell which flags a
/// newer one changes without keeping the whole snapshot (which can be larger than its engine).
#[derive(Default)]
pub(crate) struct Digest {
    flags: HashMap<String, FlagDigest>,
    segments: HashMap<String, u64>,
}

struct FlagDigest {
    hash: u64,
    segments: Vec<String>,
    prerequisites: Vec<String>,
}

impl Digest {
    pub(crate) fn of(snapshot: &Snapshot) -> Self {
        let flags = snapshot.flags.iter().map(|flag| {
            let segments =
                flag.rules.iter().flat_map(|rule| rule.segments.iter().cloned()).collect();
            let prerequisites = flag.prerequisites.iter().map(|p| p.flag.clone()).collect();
            (flag.key.clone(), FlagDigest { hash: hash(flag), segments, prerequisites })
        });
        let segments = snapshot.segments.iter().map(|segment| (segment.key.clone(), hash(segment)));
        Self { flags: flags.collect(), segments: segments.collect() }
    }

    /// Flags added, removed or changed since `self`, and flags whose answers follow them:
    /// through a changed segment they target, or a prerequisite that changed, all the way down.
    pub(crate) fn changed(&self, new: &Digest) -> Vec<String> {
        let changed_segments: HashSet<&String> = self
            .segments
            .keys()
            .chain(new.segments.keys())
            .filter(|key| self.segments.get(*key) != new.segments.get(*key))
            .collect();
        let mut changed: BTreeSet<&String> = self
            .flags
            .keys()
            .chain(new.flags.keys())
            .filter(|key| {
                self.flags.get(*key).map(|f| f.hash) != new.flags.get(*key).map(|f| f.hash)
            })
            .collect();
        for (key, flag) in &new.flags {
            if flag.segments.iter().any(|segment| changed_segments.contains(segment)) {
                changed.insert(key);
            }
        }
        loop {
            let before = changed.len();
            for (key, flag) in &new.flags {
                if flag.prerequisites.iter().any(|p| changed.contains(p)) {
                    changed.insert(key);
                }
            }
            if changed.len() == before {
                return changed.into_iter().cloned().collect();
            }
        }
    }
}

/// A hash of the item's JSON: equal items hash equal within this process.
fn hash(item: &impl serde::Serialize) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&serde_json::to_vec(item).unwrap_or_default(), &mut hasher);
    std::hash::Hasher::finish(&hasher)
}

/// From 250 ms, doubling up to `max`; each wait is drawn between half of it and all of it, so
/// many apps that lost the same control plane do not come back at the same instant.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Self { next: Self::FIRST, max }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::*;

    fn snapshot(value: Json) -> Snapshot {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn changes_reach_the_flags_that_follow_them() {
        let flag = |key: &str, extra: Json| {
            let mut flag = json!({"key": key, "type": "boolean", "variants": {"on": true, "off": false},
                "off_variant": "off", "fallthrough": {"variant": "off"}});
            flag.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            flag
        };
        let old = snapshot(json!({"schema": 1, "environment": "e", "version": 1,
            "segments": [{"key": "staff", "included": ["a"]}],
            "flags": [flag("a", json!({})), flag("b", json!({"rules": [{"segments": ["staff"], "serve": {"variant": "on"}}]})),
                      flag("c", json!({"prerequisites": [{"flag": "b", "variant": "on"}]})), flag("d", json!({})), flag("gone", json!({}))]}));
        let new = snapshot(json!({"schema": 1, "environment": "e", "version": 2,
            "segments": [{"key": "staff", "included": ["a", "b"]}],
            "flags": [flag("a", json!({})), flag("b", json!({"rules": [{"segments": ["staff"], "serve": {"variant": "on"}}]})),
                      flag("c", json!({"prerequisites": [{"flag": "b", "variant": "on"}]})), flag("d", json!({"enabled": false})), flag("new", json!({}))]}));
        let (old, new) = (Digest::of(&old), Digest::of(&new));
        assert_eq!(old.changed(&new), ["b", "c", "d", "gone", "new"]);
        assert!(new.changed(&new).is_empty());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_ceiling() {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        let ceilings = [250, 500, 1000, 2000, 2000, 2000].map(Duration::from_millis);
        for (wait, ceiling) in waits.iter().zip(ceilings) {
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{wait:?} within {ceiling:?}");
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(250));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("prod-eu_1.x"), "prod-eu_1.x");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
