//! The CLI's side of the HTTP API: where the server is, the token, and failures turned into
//! messages that say what to do next, each with its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the server is and who we are, from flags, then environment variables, then the config
/// file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub url: Option<String>,
    pub token: Option<String>,
    /// The environment commands act on when `--env` is not given.
    pub environment: Option<String>,
}

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

impl Settings {
    /// `$ROLLGATE_CONFIG`, else `$XDG_CONFIG_HOME/rollgate/config.toml`, else
    /// `~/.config/rollgate/config.toml`.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("ROLLGATE_CONFIG") {
            return Some(path.into());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
        Some(base.join("rollgate").join("config.toml"))
    }

    /// The config file's settings; none if there is no file.
    pub fn load() -> Result<Self, Failure> {
        let Some(path) = Self::path() else { return Ok(Self::default()) };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|error| {
                Failure::usage(format!("{} is not a valid config file: {error}", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(Failure::usage(format!("reading {}: {error}", path.display()))),
        }
    }

    /// Writes the config file, readable by its owner only (it holds a token).
    pub fn save(&self) -> Result<PathBuf, Failure> {
        let path = Self::path()
            .ok_or_else(|| Failure::usage("no config path: set ROLLGATE_CONFIG or HOME".into()))?;
        let io =
            |error: std::io::Error| Failure::usage(format!("writing {}: {error}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = toml::to_string(self).map_err(|e| Failure::usage(e.to_string()))?;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        Ok(path)
    }

    /// `self` with `over`'s values where it has them.
    pub fn overridden_by(self, over: Settings) -> Self {
        Self {
            url: over.url.or(self.url),
            token: over.token.or(self.token),
            environment: over.environment.or(self.environment),
        }
    }
}

/// Why a command failed, and the process's exit code for it.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

/// Exit codes, as docs/cli.md lists them.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const DENIED: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const REFUSED: u8 = 6;
}

impl Failure {
    pub fn usage(message: String) -> Self {
        Self { code: exit::USAGE, message }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

/// An API client for one server and token.
pub struct Client {
    http: reqwest::Client,
    pub url: String,
    token: Option<String>,
}

impl Client {
    pub fn new(settings: &Settings) -> Result<Self, Failure> {
        let url = settings.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
        let url = url.trim_end_matches('/').to_owned();
        if reqwest::Url::parse(&url).is_err() {
            return Err(Failure::usage(format!("`{url}` is not a URL, e.g. {DEFAULT_URL}")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .user_agent(concat!("rollgate-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure { code: exit::FAILED, message: e.to_string() })?;
        Ok(Self { http, url, token: settings.token.clone() })
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `body` (if any) and returns the JSON answer, or a failure that says what to do.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        self.json(&self.text(method, path, body).await?)
    }

    /// GETs `path`: the JSON answer and its ETag, to send back as `If-Match`.
    pub async fn get_with_etag(&self, path: &str) -> Result<(Value, String), Failure> {
        let (text, etag) = self.exchange(Method::GET, path, None, None).await?;
        Ok((self.json(&text)?, etag))
    }

    /// Sends `body` only if the resource is still at `etag` (`If-Match`): a change made by
    /// someone else in between gets 412, and is reported rather than overwritten.
    pub async fn call_if_match(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        etag: &str,
    ) -> Result<Value, Failure> {
        Ok(self.send_with_etag(method, path, body, Some(etag)).await?.0)
    }

    /// Sends `body`, with `If-Match: if_match` if given; the JSON answer and its ETag (the
    /// resource's new revision, or `*` if the answer has none).
    pub async fn send_with_etag(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Value, String), Failure> {
        let (text, etag) = self.exchange(method, path, Some(body), if_match).await?;
        Ok((self.json(&text)?, etag))
    }

    /// Like `call`, returning the body as text (for CSV).
    pub async fn text(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, Failure> {
        Ok(self.exchange(method, path, body, None).await?.0)
    }

    /// One request: a successful answer's body and ETag (`*` if none), or a failure that says
    /// what to do.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(String, String), Failure> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header(reqwest::header::IF_MATCH, etag);
        }
        let response = request.send().await.map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("*")
            .to_owned();
        let text = response.text().await.map_err(|error| self.unreachable(&error))?;
        if status.is_success() { Ok((text, etag)) } else { Err(self.refused(status, &text)) }
    }

    /// An answer's body as JSON; an empty one is `null`.
    fn json(&self, text: &str) -> Result<Value, Failure> {
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text).map_err(|error| Failure {
            code: exit::FAILED,
            message: format!(
                "the server's answer is not JSON ({error}); is {} a Rollgate control plane?",
                self.url
            ),
        })
    }

    pub fn unreachable(&self, error: &reqwest::Error) -> Failure {
        // The innermost cause says it best, e.g. "Connection refused (os error 111)".
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        Failure {
            code: exit::UNREACHABLE,
            message: format!(
                "cannot reach the control plane at {}: {cause}\n\
                 Is `rollgate serve` running there? Point the CLI elsewhere with --url, \
                 ROLLGATE_URL or `rollgate config set --url <url>`.",
                self.url
            ),
        }
    }

    /// A failure from the server's problem document.
    pub fn refused(&self, status: StatusCode, body: &str) -> Failure {
        let problem: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let detail = problem["detail"].as_str().unwrap_or(body).trim().to_owned();
        let path = problem["path"].as_str().filter(|p| !p.is_empty());
        let detail = match path {
            Some(path) => format!("{detail} (at `{path}`)"),
            None => detail,
        };
        let (code, hint) = match status {
            StatusCode::UNAUTHORIZED => (
                exit::DENIED,
                if self.token.is_some() {
                    "The token is unknown or was deleted: set a valid one with --token, ROLLGATE_TOKEN or `rollgate config set --token <token>`."
                } else {
                    "No token is set: give one with --token, ROLLGATE_TOKEN or `rollgate config set --token <token>`."
                },
            ),
            StatusCode::FORBIDDEN => {
                (exit::DENIED, "Ask an admin for a token with the scope this needs.")
            }
            StatusCode::NOT_FOUND => (exit::NOT_FOUND, what_exists(&detail)),
            StatusCode::PRECONDITION_FAILED => {
                (exit::REFUSED, "It changed meanwhile: look again, then retry.")
            }
            status if status.is_client_error() => (exit::REFUSED, ""),
            _ => (exit::FAILED, "The server failed; its log says why."),
        };
        let mut message =
            format!("{} {}: {detail}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        if !hint.is_empty() {
            message.push('\n');
            message.push_str(hint);
        }
        Failure { code, message }
    }
}

/// For a 404, the command that lists what does exist of the kind the server did not find.
fn what_exists(detail: &str) -> &'static str {
    if detail.starts_with("environment `") {
        "`rollgate environments list` shows the environments."
    } else if detail.starts_with("segment `") {
        "`rollgate segments list` shows the segments."
    } else if detail.starts_with("token `") {
        "`rollgate tokens list` shows the tokens."
    } else if detail.starts_with("webhook `") {
        "`rollgate webhooks list` shows the webhooks."
    } else if detail.starts_with("edge `") {
        "`rollgate edges list` shows the edges."
    } else if detail.contains("plan") {
        "`rollgate plan status <flag>` shows a flag's plan."
    } else {
        "`rollgate flags list` shows the flags."
    }
}
