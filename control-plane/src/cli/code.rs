//! Flags as code: `rollgate export` writes flags, segments and each environment's states as
//! YAML; `rollgate apply` makes a control plane match such a file, through the API, each change
//! audited and sent with `If-Match`, so a concurrent edit is reported rather than overwritten.
//! Apply creates and changes; it never archives what the file leaves out.

use std::collections::BTreeMap;

use flag_core::wire::Segment;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::client::{Client, Failure, exit};
use crate::cli::segment;
use crate::model::flag::FlagState;

/// The file's format version.
const VERSION: u32 = 1;

/// What `export` writes and `apply` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FlagsFile {
    /// 1.
    pub(super) version: u32,
    #[serde(default)]
    pub(super) segments: Vec<Segment>,
    #[serde(default)]
    pub(super) flags: Vec<FileFlag>,
}

/// A flag's definition, metadata and state in each environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFlag {
    pub(super) key: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) variants: BTreeMap<String, Value>,
    pub(super) off_variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) salt: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) owner: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tags: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) client_visible: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) environments: BTreeMap<String, FlagState>,
}

impl FileFlag {
    /// The definition as `POST` and `PUT /api/v1/flags` take it: the flag without its states.
    fn definition(&self) -> FileFlag {
        FileFlag { environments: BTreeMap::new(), ..self.clone() }
    }
}

/// A control plane's flags, segments and states, as a file.
pub(super) async fn export(client: &Client) -> Result<FlagsFile, Failure> {
    let segments = client.call(Method::GET, "/api/v1/segments", None).await?;
    let flags = client.call(Method::GET, "/api/v1/flags", None).await?;
    let mut file = FlagsFile { version: VERSION, segments: from_answer(segments)?, flags: vec![] };
    for record in into_list(flags) {
        file.flags.push(file_flag(record)?);
    }
    Ok(file)
}

pub(super) fn to_yaml(file: &FlagsFile) -> String {
    format!(
        "# Rollgate flags, segments and states: `rollgate apply -f <this file>`.\n{}",
        yaml(file)
    )
}

/// YAML in the JSON API's shapes: an enum such as `{"variant": "off"}` is a one-key mapping,
/// not a YAML tag (`!variant off`), so the file reads like the API's documents.
fn yaml<T: Serialize>(value: &T) -> String {
    fn untagged(value: yaml_serde::Value) -> yaml_serde::Value {
        use yaml_serde::Value::{Mapping, Sequence, Tagged};
        match value {
            Tagged(tagged) => {
                let tag = tagged.tag.to_string().trim_start_matches('!').to_owned();
                let mut mapping = yaml_serde::Mapping::new();
                mapping.insert(tag.into(), untagged(tagged.value));
                Mapping(mapping)
            }
            Sequence(items) => Sequence(items.into_iter().map(untagged).collect()),
            Mapping(mapping) => {
                Mapping(mapping.into_iter().map(|(key, value)| (key, untagged(value))).collect())
            }
            other => other,
        }
    }
    let value = yaml_serde::to_value(value).expect("serializes as YAML");
    yaml_serde::to_string(&untagged(value)).expect("serializes as YAML")
}

pub(super) fn from_yaml(text: &str, name: &str) -> Result<FlagsFile, Failure> {
    // Through JSON's data model, so enums are read as the API writes them.
    let json: Value =
        yaml_serde::from_str(text).map_err(|error| Failure::usage(format!("{name}: {error}")))?;
    let file: FlagsFile =
        serde_json::from_value(json).map_err(|error| Failure::usage(format!("{name}: {error}")))?;
    if file.version != VERSION {
        return Err(Failure::usage(format!(
            "{name}: version {} is not one this rollgate reads (it reads {VERSION})",
            file.version
        )));
    }
    Ok(file)
}

/// One change `apply` makes, in the order it makes them.
#[derive(Debug)]
enum Change {
    CreateEnvironment(String),
    CreateSegment(Segment),
    UpdateSegment { before: Segment, after: Segment },
    CreateFlag(FileFlag),
    UpdateFlag { before: FileFlag, after: FileFlag },
    SetState { flag: String, environment: String, before: Option<FlagState>, after: FlagState },
}

impl Change {
    /// `+ flag banner`, and a unified diff of what changes.
    fn describe(&self) -> String {
        let (title, before, after) = match self {
            Self::CreateEnvironment(name) => {
                (format!("+ environment {name}"), String::new(), String::new())
            }
            Self::CreateSegment(after) => {
                (format!("+ segment {}", after.key), String::new(), yaml(after))
            }
            Self::UpdateSegment { before, after } => {
                (format!("~ segment {}", after.key), yaml(before), yaml(after))
            }
            Self::CreateFlag(after) => {
                (format!("+ flag {}", after.key), String::new(), yaml(&after.definition()))
            }
            Self::UpdateFlag { before, after } => (
                format!("~ flag {}", after.key),
                yaml(&before.definition()),
                yaml(&after.definition()),
            ),
            Self::SetState { flag, environment, before, after } => (
                format!("~ flag {flag} in {environment}"),
                before.as_ref().map(yaml).unwrap_or_default(),
                yaml(after),
            ),
        };
        if before.is_empty() && after.is_empty() {
            return format!("{title}\n");
        }
        let diff = similar::TextDiff::from_lines(&before, &after);
        let mut shown = diff.unified_diff();
        shown.context_radius(3).header("now", "file");
        format!("{title}\n{shown}")
    }
}

/// What applying `file` would change, given the control plane's current `current`.
fn plan(current: &FlagsFile, environments: &[String], file: &FlagsFile) -> Vec<Change> {
    let mut changes = Vec::new();
    let wanted: std::collections::BTreeSet<&String> =
        file.flags.iter().flat_map(|flag| flag.environments.keys()).collect();
    for environment in wanted {
        if !environments.contains(environment) {
            changes.push(Change::CreateEnvironment(environment.clone()));
        }
    }
    let same =
        |a: &Segment, b: &Segment| serde_json::to_value(a).ok() == serde_json::to_value(b).ok();
    for after in &file.segments {
        match current.segments.iter().find(|s| s.key == after.key) {
            None => changes.push(Change::CreateSegment(after.clone())),
            Some(before) if !same(before, after) => {
                changes.push(Change::UpdateSegment { before: before.clone(), after: after.clone() })
            }
            Some(_) => {}
        }
    }
    let mut states = Vec::new();
    for after in &file.flags {
        let before = current.flags.iter().find(|f| f.key == after.key);
        match before {
            None => changes.push(Change::CreateFlag(after.clone())),
            Some(before) if before.definition() != after.definition() => {
                changes.push(Change::UpdateFlag { before: before.clone(), after: after.clone() })
            }
            Some(_) => {}
        }
        for (environment, state) in &after.environments {
            let was = before.and_then(|before| before.environments.get(environment));
            // A new flag starts in every environment serving its off variant.
            let was = was.cloned().or_else(|| {
                before.is_none().then(|| FlagState {
                    enabled: true,
                    prerequisites: vec![],
                    rules: vec![],
                    fallthrough: flag_core::wire::Serve::Variant(after.off_variant.clone()),
                })
            });
            if was.as_ref() != Some(state) {
                states.push(Change::SetState {
                    flag: after.key.clone(),
                    environment: environment.clone(),
                    before: was,
                    after: state.clone(),
                });
            }
        }
    }
    // States last: a state's prerequisites may name flags the file creates.
    changes.extend(states);
    changes
}

/// Prints what applying `file` would change; with `dry_run` only that, else it applies each
/// change with `reason`, in order, and stops at the first refusal.
pub(super) async fn apply(
    client: &Client,
    file: &FlagsFile,
    reason: &str,
    dry_run: bool,
) -> Result<String, Failure> {
    // What the file touches, as it is now, with the revisions every write will name.
    let segments: Vec<Segment> =
        from_answer(client.call(Method::GET, "/api/v1/segments", None).await?)?;
    let mut current = FlagsFile { version: VERSION, segments: Vec::new(), flags: Vec::new() };
    let mut revisions: BTreeMap<String, String> = BTreeMap::new();
    for wanted in &file.segments {
        if segments.iter().any(|s| s.key == wanted.key) {
            let path = format!("/api/v1/segments/{}", segment(&wanted.key));
            let (found, revision) = client.get_with_etag(&path).await?;
            current.segments.push(from_answer(found)?);
            revisions.insert(format!("segment {}", wanted.key), revision);
        }
    }
    for wanted in &file.flags {
        let path = format!("/api/v1/flags/{}", segment(&wanted.key));
        match client.get_with_etag(&path).await {
            Ok((record, revision)) => {
                current.flags.push(file_flag(record)?);
                revisions.insert(format!("flag {}", wanted.key), revision);
            }
            Err(failure) if failure.code == exit::NOT_FOUND => {}
            Err(failure) => return Err(failure),
        }
    }
    let environments: Vec<String> =
        into_list(client.call(Method::GET, "/api/v1/environments", None).await?)
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
    let changes = plan(&current, &environments, file);
    let mut out = String::new();
    if changes.is_empty() {
        out.push_str("Nothing to change: the control plane matches the file.\n");
        return Ok(out);
    }
    for change in &changes {
        out.push_str(&change.describe());
    }
    if dry_run {
        out.push_str(&format!("{} change(s); nothing applied (--dry-run).\n", changes.len()));
        return Ok(out);
    }
    // If-Match on every write: the revision read above, then as this apply's own last write
    // left it. Anyone else's change in between is refused with 412, not overwritten.
    for change in &changes {
        let applied = apply_one(client, change, reason, &mut revisions).await;
        if let Err(mut failure) = applied {
            failure.message = format!(
                "{out}applying `{}`: {}\nChanges before it were applied; run `rollgate apply` again to see what is left.",
                change.describe().lines().next().unwrap_or_default(),
                failure.message
            );
            return Err(failure);
        }
    }
    out.push_str(&format!("{} change(s) applied.\n", changes.len()));
    Ok(out)
}

async fn apply_one(
    client: &Client,
    change: &Change,
    reason: &str,
    revisions: &mut BTreeMap<String, String>,
) -> Result<(), Failure> {
    match change {
        Change::CreateEnvironment(name) => {
            client.call(Method::POST, "/api/v1/environments", Some(&json!({"name": name}))).await?;
        }
        Change::CreateSegment(after) => {
            let body = serde_json::to_value(after).expect("a segment serializes");
            client.call(Method::POST, "/api/v1/segments", Some(&body)).await?;
        }
        Change::UpdateSegment { after, .. } => {
            let path = format!("/api/v1/segments/{}", segment(&after.key));
            let revision = &revisions[&format!("segment {}", after.key)];
            let body = serde_json::to_value(after).expect("a segment serializes");
            client.send_with_etag(Method::PUT, &path, &body, Some(revision)).await?;
        }
        Change::CreateFlag(after) => {
            let definition = serde_json::to_value(after.definition()).expect("serializes");
            let (_, etag) =
                client.send_with_etag(Method::POST, "/api/v1/flags", &definition, None).await?;
            revisions.insert(format!("flag {}", after.key), etag);
        }
        Change::UpdateFlag { after, .. } => {
            let path = format!("/api/v1/flags/{}", segment(&after.key));
            let key = format!("flag {}", after.key);
            let definition = serde_json::to_value(after.definition()).expect("serializes");
            let (_, etag) = client
                .send_with_etag(Method::PUT, &path, &definition, Some(&revisions[&key]))
                .await?;
            revisions.insert(key, etag);
        }
        Change::SetState { flag, environment, after, .. } => {
            let path =
                format!("/api/v1/environments/{}/flags/{}", segment(environment), segment(flag));
            let key = format!("flag {flag}");
            let mut body = serde_json::to_value(after).expect("a state serializes");
            body["reason"] = json!(reason);
            let (_, etag) =
                client.send_with_etag(Method::PUT, &path, &body, Some(&revisions[&key])).await?;
            revisions.insert(key, etag);
        }
    }
    Ok(())
}

/// A flag record as the API answers it, without its times (a file holds none).
fn file_flag(mut record: Value) -> Result<FileFlag, Failure> {
    if let Some(fields) = record.as_object_mut() {
        fields.remove("created_at");
        fields.remove("updated_at");
    }
    from_answer(record)
}

fn into_list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(list) => list,
        _ => Vec::new(),
    }
}

fn from_answer<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|error| Failure {
        code: exit::FAILED,
        message: format!("the server's answer is not what this rollgate reads: {error}"),
    })
}
