//! A minimal Server-Sent Events reader over a live response, for the snapshot stream.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::Server;

/// Production's snapshot stream.
pub(crate) const STREAM: &str = "/api/v1/environments/production/stream";

/// What arrives on a stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    Snapshot { id: u64, document: Value },
    Comment,
}

pub(crate) struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Whether to parse each snapshot's JSON (`Frame::Snapshot::document`), or leave it null.
    documents: bool,
}

impl Events {
    /// Production's stream, opened with `token`, from `last_event_id` if given.
    pub(crate) async fn open(server: &Server, token: &str, last_event_id: Option<u64>) -> Self {
        Self::open_in(server, "production", token, last_event_id).await
    }

    /// `environment`'s stream, opened with `token`, from `last_event_id` if given.
    pub(crate) async fn open_in(
        server: &Server,
        environment: &str,
        token: &str,
        last_event_id: Option<u64>,
    ) -> Self {
        let path = format!("/api/v1/environments/{environment}/stream");
        let mut request = server.get(&path, Some(token));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: Vec::new(), documents: true }
    }

    /// Reads only the event ids: for a client that must keep up with thousands of versions.
    pub(crate) fn ids_only(mut self) -> Self {
        self.documents = false;
        self
    }

    /// The next frame; `None` when the server ends the stream. Fails the test if nothing comes
    /// within 10 s.
    pub(crate) async fn try_next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buffer.drain(..end + 2).collect()).unwrap();
                return Some(parse(&frame, self.documents));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a frame or the end within 10 s")
                .unwrap()?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next frame; fails the test if none comes within 10 s.
    pub(crate) async fn next(&mut self) -> Frame {
        self.try_next().await.expect("the stream stays open")
    }

    /// The next snapshot's id and document, skipping keep-alives.
    pub(crate) async fn next_snapshot(&mut self) -> (u64, Value) {
        loop {
            if let Frame::Snapshot { id, document } = self.next().await {
                if self.documents {
                    assert_eq!(document["version"], id, "the event id is the snapshot's version");
                }
                return (id, document);
            }
        }
    }

    /// The next snapshot's id, skipping keep-alives.
    pub(crate) async fn next_version(&mut self) -> u64 {
        self.next_snapshot().await.0
    }
}

fn parse(frame: &str, documents: bool) -> Frame {
    if frame.starts_with(':') {
        return Frame::Comment;
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in frame.lines() {
        match line.split_once(": ") {
            Some(("id", value)) => id = Some(value.parse().unwrap()),
            Some(("event", value)) => event = Some(value),
            Some(("data", value)) if documents => data = Some(serde_json::from_str(value).unwrap()),
            Some(("data", _)) => data = Some(Value::Null),
            _ if line.is_empty() => {}
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(event, Some("snapshot"));
    Frame::Snapshot { id: id.unwrap(), document: data.unwrap() }
}
