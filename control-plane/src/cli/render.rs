//! Text renderings of the API's answers. Styles are ANSI codes; `anstream` drops them when
//! stdout is not a terminal (or `NO_COLOR` is set).

use anstyle::{AnsiColor, Style};
use serde_json::Value;

use crate::model::criteria::Reading;

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const GREEN: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green)));
const YELLOW: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));
const RED: Style = Style::new().bold().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)));

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns under bold headers; widths ignore the styles' codes.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let visible = |cell: &str| anstream::adapter::strip_str(cell).to_string().chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - visible(cell))))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| paint(BOLD, h)).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    if out.lines().count() == 1 {
        out.push_str(&paint(DIM, "(none)\n"));
    }
    out
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `25% on (beta)`, `off to everyone`, `KILLED`.
fn exposure(state: &Value) -> String {
    let serve = &state["fallthrough"];
    let shown = if let Some(rollout) = serve.get("rollout") {
        let percent = rollout["percent"].as_u64().map(|p| p as f64 / 1000.0);
        let stage = rollout["stage"].as_str().map(|s| format!(" ({s})")).unwrap_or_default();
        match percent {
            Some(percent) => format!("{percent}% {}{stage}", text(&rollout["inside"])),
            None => format!("weighted split{stage}"),
        }
    } else {
        format!("{} to everyone", text(&serve["variant"]))
    };
    let rules = list(&state["rules"]).len();
    let shown = if rules > 0 { format!("{shown}, {rules} rule(s) first") } else { shown };
    if state["enabled"] == Value::Bool(false) {
        paint(RED, "KILLED") + " (was " + &shown + ")"
    } else {
        shown
    }
}

pub(super) fn flags(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|flag| {
            let variants: Vec<&str> = flag["variants"]
                .as_object()
                .map(|v| v.keys().map(String::as_str).collect())
                .unwrap_or_default();
            vec![
                text(&flag["key"]),
                text(&flag["type"]),
                variants.join(", "),
                text(&flag["owner"]),
                tags(flag),
                text(&flag["updated_at"]),
            ]
        })
        .collect();
    table(&["FLAG", "TYPE", "VARIANTS", "OWNER", "TAGS", "CHANGED"], rows)
}

fn tags(flag: &Value) -> String {
    let tags: Vec<&str> = list(&flag["tags"]).iter().filter_map(Value::as_str).collect();
    if tags.is_empty() { "-".into() } else { tags.join(", ") }
}

pub(super) fn flag(value: &Value) -> String {
    let mut out = format!(
        "{} {}  off: {}\n",
        paint(BOLD, &text(&value["key"])),
        text(&value["type"]),
        text(&value["off_variant"])
    );
    if let Some(description) = value["description"].as_str() {
        out.push_str(&format!("{description}\n"));
    }
    out.push_str(&format!(
        "owner: {}  tags: {}  created {}, changed {}\n\n",
        text(&value["owner"]),
        tags(value),
        text(&value["created_at"]),
        text(&value["updated_at"])
    ));
    let rows = value["environments"]
        .as_object()
        .map(|environments| {
            environments.iter().map(|(name, state)| vec![name.clone(), exposure(state)]).collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["ENVIRONMENT", "EXPOSURE"], rows));
    out
}

pub(super) fn state_change(value: &Value) -> String {
    format!(
        "{} in {}: {}  {}\n",
        paint(BOLD, &text(&value["flag"])),
        text(&value["environment"]),
        exposure(&value["state"]),
        paint(DIM, &format!("(snapshot version {})", text(&value["version"])))
    )
}

pub(super) fn audit(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|r| {
            let subject = r["flag"].as_str().or(r["segment"].as_str()).unwrap_or("-").to_owned();
            vec![
                text(&r["at"]),
                text(&r["actor"]),
                text(&r["action"]),
                text(&r["environment"]),
                subject,
                text(&r["reason"]),
            ]
        })
        .collect();
    table(&["AT", "ACTOR", "ACTION", "ENV", "FLAG/SEGMENT", "REASON"], rows)
}

pub(super) fn decisions(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|d| {
            let stage =
                crate::model::plan::stage_label(d["from_stage"].as_str(), d["to_stage"].as_str());
            let stage = if stage.is_empty() { "-".to_owned() } else { stage };
            vec![
                text(&d["at"]),
                text(&d["plan"]),
                stage,
                decision(&text(&d["decision"])),
                text(&d["decided_by"]),
                text(&d["rationale"]),
            ]
        })
        .collect();
    table(&["DATE", "PLAN", "STAGE", "DECISION", "DECIDED BY", "RATIONALE"], rows)
}

fn decision(word: &str) -> String {
    match word {
        "proceed" => paint(GREEN, word),
        "hold" => paint(YELLOW, word),
        _ => paint(RED, word),
    }
}

pub(super) fn edges(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|e| {
            let lag = match e["lag"].as_u64() {
                Some(0) => paint(GREEN, "0"),
                Some(lag) => paint(YELLOW, &lag.to_string()),
                None => paint(YELLOW, "never synced"),
            };
            vec![
                text(&e["name"]),
                text(&e["environment"]),
                text(&e["applied_version"]),
                lag,
                text(&e["acked_at"]),
                text(&e["last_error"]),
            ]
        })
        .collect();
    table(&["EDGE", "ENV", "APPLIED", "LAG", "ACKNOWLEDGED", "LAST ERROR"], rows)
}

pub(super) fn settings(value: &Value) -> String {
    format!(
        "config file  {}\nurl          {}\ntoken        {}\nenvironment  {}\n",
        text(&value["config_file"]),
        text(&value["url"]),
        text(&value["token"]),
        text(&value["environment"])
    )
}

/// A plan action's answer: the decision, then the plan.
pub(super) fn action(value: &Value) -> String {
    let d = &value["decision"];
    let (action, verdict) = (text(&d["action"]), text(&d["decision"]));
    let (done, usual) = match action.as_str() {
        "start" => ("Started", "proceed"),
        "advance" => ("Advanced", "proceed"),
        "hold" => ("Held", "hold"),
        "resume" => ("Resumed", "proceed"),
        "rollback" => ("Rolled back", "rollback"),
        "complete" => ("Completed", "proceed"),
        _ => (action.as_str(), verdict.as_str()),
    };
    // The decision only when it is not what the action says, e.g. an advance awaiting approvals.
    let unusual = if verdict == usual { String::new() } else { format!(" ({verdict})") };
    let mut out = format!(
        "{}{unusual} by {}: {}\n\n",
        paint(if verdict == "proceed" { GREEN } else { YELLOW }, done),
        text(&d["decided_by"]),
        text(&d["rationale"])
    );
    out.push_str(&plan(&value["plan"]));
    out
}

/// The stages with the current one marked, the exposure, and the readings.
pub(super) fn plan(value: &Value) -> String {
    let status = text(&value["status"]);
    let status = match status.as_str() {
        "running" => paint(GREEN, &status),
        "held" => paint(YELLOW, &status),
        "completed" => paint(BOLD, &status),
        _ => paint(RED, &status),
    };
    let mut out = format!(
        "plan {}  {} in {}  {status}  {}\n",
        text(&value["id"]),
        paint(BOLD, &text(&value["flag"])),
        text(&value["environment"]),
        paint(
            DIM,
            &format!(
                "{} → {}, {}",
                text(&value["variant"]),
                text(&value["control"]),
                if value["auto_advance"] == Value::Bool(true) {
                    "advances on its own"
                } else {
                    "advances by hand"
                }
            )
        ),
    );
    let current = value["stage"].as_u64().unwrap_or(0) as usize;
    let done = !matches!(value["status"].as_str(), Some("running" | "held"));
    let rows = list(&value["stages"])
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let marker = match index.cmp(&current) {
                std::cmp::Ordering::Less => paint(GREEN, "✓"),
                std::cmp::Ordering::Equal if !done => paint(BOLD, "▶"),
                std::cmp::Ordering::Equal => paint(GREEN, "✓"),
                std::cmp::Ordering::Greater => " ".into(),
            };
            let percent = stage["percent"].as_f64().unwrap_or(0.0);
            let segments: Vec<&str> =
                list(&stage["segments"]).iter().filter_map(Value::as_str).collect();
            let audience = if segments.is_empty() {
                format!("{percent}%")
            } else {
                format!("{} + {percent}%", segments.join(", "))
            };
            let hold = stage["hold_seconds"].as_u64().unwrap_or(0);
            vec![marker, text(&stage["name"]), audience, crate::plans::messages::duration(hold)]
        })
        .collect();
    out.push_str(&table(&["", "STAGE", "AUDIENCE", "HOLD"], rows));
    if let Some(until) = value["hold_until"].as_str() {
        out.push_str(&format!(
            "current stage since {}, hold until {until}\n",
            text(&value["stage_started_at"])
        ));
    }
    let readings = list(&value["readings"]);
    if !readings.is_empty() {
        let rows = readings
            .iter()
            .map(|r| {
                let (metric, per) = (
                    r["variant"]["metric"].as_u64().unwrap_or(0),
                    r["variant"]["per"].as_u64().unwrap_or(0),
                );
                let rate = if per == 0 {
                    "-".into()
                } else {
                    crate::model::criteria::percent(metric as f64 / per as f64)
                };
                // A sequential criterion's rise over control, or the sample ratio's share, with
                // its interval.
                let reading = serde_json::from_value::<Reading>((*r).clone()).ok();
                let rate = match reading.as_ref().and_then(Reading::interval) {
                    Some(interval) => format!("{rate}, {interval}"),
                    None => rate,
                };
                let verdict = match r["verdict"].as_str() {
                    Some("pass") => paint(GREEN, "pass"),
                    Some("fail") => paint(RED, &format!("FAIL {}", text(&r["detail"]))),
                    _ => paint(YELLOW, "insufficient data"),
                };
                vec![text(&r["criterion"]), rate, format!("{metric} of {per}"), verdict]
            })
            .collect();
        out.push_str(&table(&["CRITERION", "NOW", "COUNTS", "VERDICT"], rows));
    }
    out
}

/// An import's report, and what was done.
pub(super) fn import(value: &Value) -> String {
    let flags = list(&value["flags"]).len();
    let done = if value["imported"] == true {
        format!("imported {flags} flags into {}", text(&value["environment"]))
    } else {
        "dry run: nothing imported".to_owned()
    };
    format!("{}\n{done}\n", text(&value["report"]))
}

pub(super) fn environments(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|e| {
            let origins: Vec<String> = list(&e["allowed_origins"]).iter().map(text).collect();
            vec![text(&e["name"]), text(&e["version"]), origins.join(" ")]
        })
        .collect();
    table(&["ENVIRONMENT", "VERSION", "ALLOWED ORIGINS"], rows)
}

pub(super) fn segments(value: &Value) -> String {
    let count = |s: &Value, field: &str| list(&s[field]).len().to_string();
    let rows = list(value)
        .iter()
        .map(|s| {
            vec![
                text(&s["key"]),
                count(s, "included"),
                count(s, "excluded"),
                count(s, "conditions"),
            ]
        })
        .collect();
    table(&["SEGMENT", "INCLUDED", "EXCLUDED", "CONDITIONS"], rows)
}

pub(super) fn segment(value: &Value) -> String {
    let keys = |field: &str| {
        let keys: Vec<&str> = list(&value[field]).iter().filter_map(Value::as_str).collect();
        if keys.is_empty() { "-".to_owned() } else { keys.join(", ") }
    };
    let mut out = format!("{}\n", paint(BOLD, &text(&value["key"])));
    out.push_str(&format!("included: {}\nexcluded: {}\n", keys("included"), keys("excluded")));
    for condition in list(&value["conditions"]) {
        out.push_str(&format!(
            "condition: {} {} {}\n",
            text(&condition["attribute"]),
            text(&condition["op"]),
            text(&condition["values"])
        ));
    }
    out
}

pub(super) fn tokens(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|t| {
            vec![
                text(&t["name"]),
                text(&t["scope"]),
                text(&t["environment"]),
                text(&t["created_at"]),
            ]
        })
        .collect();
    table(&["TOKEN", "SCOPE", "ENVIRONMENT", "CREATED"], rows)
}

/// A new token: its secret, the only time it is shown.
pub(super) fn new_token(value: &Value) -> String {
    format!(
        "{}\n{}\n",
        text(&value["token"]),
        paint(
            DIM,
            &format!(
                "token `{}` ({}{}): shown once, keep it now",
                text(&value["name"]),
                text(&value["scope"]),
                value["environment"].as_str().map(|e| format!(", {e}")).unwrap_or_default()
            )
        )
    )
}

pub(super) fn webhooks(value: &Value) -> String {
    let rows = list(value)
        .iter()
        .map(|w| {
            vec![
                text(&w["name"]),
                text(&w["environment"]),
                text(&w["url"]),
                text(&w["pending"]),
                text(&w["failed"]),
                text(&w["last_error"]),
            ]
        })
        .collect();
    table(&["WEBHOOK", "ENVIRONMENT", "URL", "PENDING", "FAILED", "LAST ERROR"], rows)
}

pub(super) fn done(value: &Value) -> String {
    format!("{}\n", text(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_sequential_reading_shows_the_rise_and_its_interval() {
        let plan = json!({"flag": "checkout-v2", "environment": "production", "status": "running",
            "stage": 0, "stages": [{"name": "canary", "percent": 5}], "readings": [{
                "criterion": "errors/requests <= control + 0.5 points (95% sequential)",
                "variant": {"variant": "on", "metric": 700, "per": 40000},
                "control": {"variant": "off", "metric": 350, "per": 40000},
                "verdict": "insufficient",
                "difference": {"estimate": 0.00875, "low": 0.0031, "high": 0.0144,
                               "tolerated": 0.005, "confidence": 0.95}}, {
                "criterion": "sample ratio: on gets 5% of rollout_evaluations",
                "variant": {"variant": "on", "metric": 400, "per": 10000},
                "control": {"variant": "off", "metric": 9600, "per": 10000},
                "verdict": "fail", "detail": "`on` got 4% of the rollout's evaluations",
                "share": {"expected": 0.05, "estimate": 0.04, "low": 0.0306, "high": 0.0494,
                          "confidence": 0.999}}]});
        let shown = super::plan(&plan);
        assert!(shown.contains("1.75%, 0.88 points over control (0.31 to 1.44 points)"), "{shown}");
        assert!(shown.contains("4%, 3.06% to 4.94% at 99.9%"), "{shown}");
    }
}
