//! Edges: deployments of the edge worker that the control plane pushes configurations to.

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;
use crate::model::{Refusal, check_key};

/// An edge to register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEdge {
    pub name: String,
    /// Where the edge worker listens; pushes go to `{url}/rollgate/v1/push`.
    pub url: String,
    pub environment: String,
}

impl NewEdge {
    /// Checks the name; the URL loses any trailing `/` (`outbound::Targets` checks the URL).
    pub fn checked(mut self) -> Result<Self, Refusal> {
        check_key("edge", &self.name)?;
        self.url = self.url.trim_end_matches('/').to_owned();
        Ok(self)
    }
}

/// A registered edge and the last configuration it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EdgeRecord {
    pub name: String,
    pub url: String,
    pub environment: String,
    pub applied_version: Option<u64>,
    pub applied_readers_revision: Option<u64>,
    #[schema(value_type = Option<String>)]
    pub acked_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

impl EdgeRecord {
    /// A newly registered edge: nothing acknowledged yet.
    pub fn new(edge: NewEdge) -> Self {
        let NewEdge { name, url, environment } = edge;
        Self {
            name,
            url,
            environment,
            applied_version: None,
            applied_readers_revision: None,
            acked_at: None,
            last_error: None,
        }
    }

    /// What the audit log records of an edge.
    pub fn audited(&self) -> serde_json::Value {
        serde_json::json!({"name": self.name, "url": self.url, "environment": self.environment})
    }
}

/// How a push to an edge went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Acknowledged { version: u64, readers_revision: u64 },
    Failed(String),
}
