//! The communication plan's messages (docs/rollout-plans.md, "Notifications"), rendered from a
//! plan as Slack-compatible webhook payloads: `text` for notifications and plain receivers,
//! `blocks` for Slack, and `rollgate` with the same facts as data.

use serde_json::json;

use crate::model::criteria::{Reading, Verdict, percent};
use crate::model::plan::{Notification, Plan, Stage};

pub const STARTED: &str = "plan.started";
pub const ADVANCED: &str = "plan.advanced";
pub const HELD: &str = "plan.held";
pub const ISSUE: &str = "plan.issue_detected";
pub const ROLLED_BACK: &str = "plan.rolled_back";
pub const COMPLETED: &str = "plan.completed";

/// 🚀 when a plan starts: its timeline and guardrails.
pub fn started(plan: &Plan, by: &str, rationale: &str) -> Notification {
    let mut timeline = Vec::new();
    let mut offset = 0;
    let mut previous: Option<&Stage> = None;
    for stage in &plan.stages {
        let when = if offset == 0 { "Now".to_owned() } else { format!("+{}", duration(offset)) };
        // A stage is left only when its criteria pass.
        let judged = previous.is_some_and(|p| !p.guardrails.is_empty() || !p.leading.is_empty());
        let healthy = if judged { " if metrics healthy" } else { "" };
        timeline.push(format!("- {when}: {}{healthy}", audience(plan, stage)));
        offset += stage.hold_seconds;
        previous = Some(stage);
    }
    let guardrails = guardrail_list(plan.current());
    let text = format!(
        "🚀 `{flag}` {kind} Rollout Starting in {env}\n\n\
         We're beginning a gradual rollout of `{flag}`: `{variant}` for the audience below, `{control}` for everyone else.\n\n\
         Timeline:\n{timeline}\n\n\
         Guardrails: {guardrails}\n\
         Started by {by}: {rationale}",
        flag = plan.flag,
        kind = kind(plan),
        env = plan.environment,
        variant = plan.variant,
        control = plan.control,
        timeline = timeline.join("\n"),
    );
    notification(STARTED, plan, text, by, rationale, &[])
}

/// 📈 when a stage is entered.
pub fn advanced(
    plan: &Plan,
    from: &Stage,
    by: &str,
    rationale: &str,
    readings: &[Reading],
) -> Notification {
    let text = format!(
        "📈 `{flag}` Rollout Expanded in {env}\n\n\
         Now: {now} (was {was})\n\
         Decided by {by}: {rationale}\n\
         Metrics: {metrics}",
        flag = plan.flag,
        env = plan.environment,
        now = audience(plan, plan.current()),
        was = audience(plan, from),
        metrics = metric_summary(readings),
    );
    notification(ADVANCED, plan, text, by, rationale, readings)
}

/// ⏸️ when a plan stops advancing on its own.
pub fn held(plan: &Plan, by: &str, rationale: &str) -> Notification {
    let text = format!(
        "⏸️ `{flag}` Rollout Held in {env}\n\n\
         Holding at {at}; guardrails still apply.\n\
         Held by {by}: {rationale}",
        flag = plan.flag,
        env = plan.environment,
        at = audience(plan, plan.current()),
    );
    notification(HELD, plan, text, by, rationale, &[])
}

/// What a plan does about an issue it detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mitigation {
    /// A guardrail breached: the flag is killed.
    Kill,
    /// The sample ratio is off: the plan holds where it is.
    Hold,
}

/// ⚠️ when a guardrail breaches, or the sample ratio is off.
pub fn issue_detected(
    plan: &Plan,
    issue: &str,
    mitigation: Mitigation,
    readings: &[Reading],
) -> Notification {
    let (variant, control) = (&plan.variant, &plan.control);
    let at = audience(plan, plan.current());
    let (impact, status, eta, workaround) = match mitigation {
        Mitigation::Kill => (
            format!("users served `{variant}` at {at}"),
            "Mitigating: the flag is being killed automatically".to_owned(),
            format!("edges serve `{control}` within a second"),
            format!("none needed; everyone gets `{control}`"),
        ),
        Mitigation::Hold => (
            format!(
                "the guardrails' comparison of `{variant}` with `{control}` cannot be trusted; users keep what they are served at {at}"
            ),
            "Investigating: the plan is held and does not advance until someone resumes it".into(),
            "when the cause is found: a broken bucketing, a `bucket_by` value many units share, or an app that misreports its counts".into(),
            "none needed; nothing changed for users".into(),
        ),
    };
    let text = format!(
        "⚠️ Release Issue Detected\n\n\
         Issue: `{flag}` in {env}: {issue}\n\
         Impact: {impact}\n\
         Status: {status}\n\
         ETA: {eta}\n\n\
         Workaround: {workaround}\n\
         Metrics: {metrics}",
        flag = plan.flag,
        env = plan.environment,
        metrics = metric_summary(readings),
    );
    notification(ISSUE, plan, text, "guardrail", issue, readings)
}

/// 🔄 when a plan rolls back, to an earlier stage or to a kill.
pub fn rolled_back(plan: &Plan, killed: bool, by: &str, rationale: &str) -> Notification {
    let impact = if killed {
        format!("everyone gets `{}`; the flag is killed", plan.control)
    } else {
        format!("back to {}", audience(plan, plan.current()))
    };
    let text = format!(
        "🔄 Rollback Initiated\n\n\
         Due to {rationale}, we're rolling back `{flag}` in {env}.\n\
         Impact: {impact}\n\
         Decided by: {by}\n\
         Next steps: find the cause, fix it, and start a new plan",
        flag = plan.flag,
        env = plan.environment,
    );
    notification(ROLLED_BACK, plan, text, by, rationale, &[])
}

/// ✅ when a plan completes.
pub fn completed(plan: &Plan, by: &str, rationale: &str, readings: &[Reading]) -> Notification {
    let stages: Vec<&str> = plan.stages.iter().map(|stage| stage.name.as_str()).collect();
    let text = format!(
        "✅ `{flag}` Successfully Deployed in {env}\n\n\
         All systems operational. `{variant}` is served to {at}.\n\
         Stages passed: {stages}\n\
         Metrics: {metrics}\n\
         Completed by {by}: {rationale}",
        flag = plan.flag,
        env = plan.environment,
        variant = plan.variant,
        at = audience(plan, plan.current()),
        stages = stages.join(" → "),
        metrics = metric_summary(readings),
    );
    notification(COMPLETED, plan, text, by, rationale, readings)
}

fn notification(
    event: &'static str,
    plan: &Plan,
    text: String,
    by: &str,
    rationale: &str,
    readings: &[Reading],
) -> Notification {
    let payload = json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        "rollgate": {
            "event": event,
            "plan": plan.id,
            "flag": plan.flag,
            "environment": plan.environment,
            "status": plan.status,
            "stage": plan.current().name,
            "percent": plan.current().percent,
            "decided_by": by,
            "rationale": rationale,
            "metrics": readings,
        },
    });
    Notification { event, payload }
}

/// `25% (expanded)`, `segment staff (internal)`, `segments staff, alpha and 10% (beta)`.
pub fn audience(plan: &Plan, stage: &Stage) -> String {
    let index = plan.stages.iter().position(|s| s.name == stage.name).unwrap_or(0);
    let segments = plan.segments_at(index);
    let share = stage.percent;
    let who = match (segments.as_slice(), stage.percent.thousandths()) {
        ([], _) => format!("{share} of traffic"),
        ([one], 0) => format!("segment {one}"),
        (many, 0) => format!("segments {}", many.join(", ")),
        ([one], _) => format!("segment {one} and {share} of the rest"),
        (many, _) => format!("segments {} and {share} of the rest", many.join(", ")),
    };
    format!("{who} ({})", stage.name)
}

fn kind(plan: &Plan) -> &'static str {
    match plan.template.as_deref() {
        Some(super::templates::CANARY) => "Canary",
        _ => "Staged",
    }
}

fn guardrail_list(stage: &Stage) -> String {
    if stage.guardrails.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = stage.guardrails.iter().map(|g| g.describe()).collect();
    list.join("; ")
}

/// `errors/requests <= 2%: 0.4% (8 of 2000), pass`; a sequential criterion's reading adds the
/// rise over control with its interval, the sample-ratio check's the share's interval.
pub fn metric_summary(readings: &[Reading]) -> String {
    if readings.is_empty() {
        return "none configured".into();
    }
    let parts: Vec<String> = readings
        .iter()
        .map(|reading| {
            let verdict = match reading.verdict {
                Verdict::Pass => "pass".to_owned(),
                Verdict::Fail => format!("FAIL ({})", reading.detail.as_deref().unwrap_or("")),
                Verdict::Insufficient => "insufficient data".to_owned(),
            };
            let rate = &reading.variant;
            let interval = reading.interval().map(|i| format!(", {i}")).unwrap_or_default();
            format!(
                "{}: {} ({} of {}){interval}, {verdict}",
                reading.criterion,
                percent(rate.value()),
                rate.metric,
                rate.per
            )
        })
        .collect();
    parts.join("; ")
}

/// `1h`, `3d`, `1d 6h`, `1h 30m`, `2s`.
pub fn duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if hours > 0 {
        parts.push(format!("{hours}h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes}m"));
    }
    // Seconds only matter in holds shorter than a minute (tests, drills).
    if parts.is_empty() {
        parts.push(format!("{seconds}s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan::Status;
    use crate::model::time::Timestamp;
    use crate::plans::templates;

    fn canary() -> Plan {
        let stages = templates::expand(templates::CANARY, &Default::default()).unwrap();
        Plan {
            id: 7,
            flag: "checkout-v2".into(),
            environment: "production".into(),
            template: Some(templates::CANARY.into()),
            variant: "on".into(),
            control: "off".into(),
            auto_advance: true,
            stages,
            status: Status::Running,
            stage: 0,
            stage_started_at: Timestamp::parse("2026-11-22T10:00:00.000Z").unwrap(),
            approvals: Vec::new(),
            installed_rule: None,
            sample_ratio_check: true,
            resumed_at: None,
            created_by: "ana".into(),
            created_at: Timestamp::parse("2026-11-22T10:00:00.000Z").unwrap(),
        }
    }

    #[test]
    fn the_canary_start_message_carries_the_timeline() {
        let message = started(&canary(), "ana", "checkout v2 is ready");
        let text = message.payload["text"].as_str().unwrap();
        assert_eq!(message.event, STARTED);
        assert!(
            text.starts_with("🚀 `checkout-v2` Canary Rollout Starting in production"),
            "{text}"
        );
        for line in [
            "- Now: 5% of traffic (canary)",
            "- +1h: 5% of traffic (assessed) if metrics healthy",
            "- +1d: 25% of traffic (expanded) if metrics healthy",
            "- +3d: 100% of traffic (ga) if metrics healthy",
            "Guardrails: errors/requests <= control + 0.5 points (95% sequential)",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!(message.payload["blocks"][0]["text"]["text"], text);
        assert_eq!(message.payload["rollgate"]["plan"], 7);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(3600), "1h");
        assert_eq!(duration(86_400 + 6 * 3600), "1d 6h");
        assert_eq!(duration(5400), "1h 30m");
        assert_eq!(duration(2), "2s");
        assert_eq!(duration(0), "0s");
    }
}
