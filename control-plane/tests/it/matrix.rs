//! Every route against no token and each scope: 401 without a known token, 403 below the route's
//! scope, and past authorization otherwise. None of these requests changes anything.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN, READ, RELEASE, start};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Nothing,
    Read,
    Release,
    Admin,
    /// A read token bound to an environment: the plain OFREP paths evaluate in it.
    BoundRead,
}

/// Every route the service has. Bodies are `{}`, and keys name nothing that exists where a
/// request could change something, so an authorized call fails validation (400 or 404) instead.
const ROUTES: &[(&str, &str, Needs)] = &[
    ("GET", "/", Needs::Nothing),
    ("GET", "/dashboard/app.js", Needs::Nothing),
    ("GET", "/healthz", Needs::Nothing),
    ("GET", "/readyz", Needs::Nothing),
    ("GET", "/metrics", Needs::Nothing),
    ("GET", "/api/v1/environments/production/snapshot", Needs::Read),
    ("GET", "/api/v1/environments/production/edge-config", Needs::Read),
    ("GET", "/api/v1/environments/production/stream", Needs::Read),
    ("POST", "/ofrep/v1/evaluate/flags", Needs::BoundRead),
    ("POST", "/ofrep/v1/evaluate/flags/checkout-v2", Needs::BoundRead),
    ("GET", "/ofrep/v1/events", Needs::BoundRead),
    ("POST", "/api/v1/environments/production/ofrep/v1/evaluate/flags", Needs::Read),
    ("POST", "/api/v1/environments/production/ofrep/v1/evaluate/flags/checkout-v2", Needs::Read),
    ("GET", "/api/v1/flags", Needs::Release),
    ("POST", "/api/v1/flags", Needs::Release),
    ("GET", "/api/v1/flags/checkout-v2", Needs::Release),
    ("PUT", "/api/v1/flags/checkout-v2", Needs::Release),
    ("DELETE", "/api/v1/flags/nope", Needs::Release),
    ("GET", "/api/v1/segments", Needs::Release),
    ("POST", "/api/v1/segments", Needs::Release),
    ("GET", "/api/v1/segments/nope", Needs::Release),
    ("PUT", "/api/v1/segments/nope", Needs::Release),
    ("DELETE", "/api/v1/segments/nope", Needs::Release),
    ("PUT", "/api/v1/environments/production/flags/checkout-v2", Needs::Release),
    ("POST", "/api/v1/environments/production/import", Needs::Release),
    ("PUT", "/api/v1/environments/production/flags/checkout-v2/rollout", Needs::Release),
    ("POST", "/api/v1/environments/production/flags/checkout-v2/kill", Needs::Release),
    ("POST", "/api/v1/environments/production/flags/checkout-v2/unkill", Needs::Release),
    ("GET", "/api/v1/audit", Needs::Release),
    ("GET", "/api/v1/environments", Needs::Release),
    ("POST", "/api/v1/environments", Needs::Admin),
    ("GET", "/api/v1/edges", Needs::Release),
    ("POST", "/api/v1/edges", Needs::Admin),
    ("DELETE", "/api/v1/edges/nope", Needs::Admin),
    ("GET", "/api/v1/tokens", Needs::Admin),
    ("POST", "/api/v1/tokens", Needs::Admin),
    ("DELETE", "/api/v1/tokens/nope", Needs::Admin),
    ("POST", "/api/v1/environments/production/metrics", Needs::Read),
    ("GET", "/api/v1/environments/production/metrics?flag=checkout-v2", Needs::Release),
    ("GET", "/api/v1/plan-templates", Needs::Release),
    ("GET", "/api/v1/plans", Needs::Release),
    ("POST", "/api/v1/plans", Needs::Release),
    ("GET", "/api/v1/plans/404", Needs::Release),
    ("POST", "/api/v1/plans/404/advance", Needs::Release),
    ("POST", "/api/v1/plans/404/hold", Needs::Release),
    ("POST", "/api/v1/plans/404/resume", Needs::Release),
    ("POST", "/api/v1/plans/404/rollback", Needs::Release),
    ("POST", "/api/v1/plans/404/complete", Needs::Release),
    ("GET", "/api/v1/decisions", Needs::Release),
    ("GET", "/api/v1/webhooks", Needs::Release),
    ("POST", "/api/v1/webhooks", Needs::Admin),
    ("DELETE", "/api/v1/webhooks/nope", Needs::Admin),
];

#[tokio::test]
async fn every_route_by_every_caller() {
    let server = start().await;
    let before = server.observable_state().await;
    let callers = [
        (None, Needs::Nothing),
        (Some(READ), Needs::Read),
        (Some(RELEASE), Needs::Release),
        (Some(ADMIN), Needs::Admin),
    ];
    let mut checked = 0;
    for &(method, path, needs) in ROUTES {
        for (token, has) in callers {
            let method: Method = method.parse().unwrap();
            let response = server.send(method, path, token).json(&json!({})).send().await.unwrap();
            let status = response.status();
            let expected = match (needs, has) {
                (Needs::Nothing, _) => None,
                (_, Needs::Nothing) => Some(StatusCode::UNAUTHORIZED),
                // Only READ is bound to an environment.
                (Needs::BoundRead, has) if has != Needs::Read => Some(StatusCode::FORBIDDEN),
                (Needs::BoundRead, _) => None,
                (needs, has) if has < needs => Some(StatusCode::FORBIDDEN),
                _ => None,
            };
            match expected {
                Some(expected) => {
                    assert_eq!(status, expected, "{path} with {has:?}");
                    assert_eq!(response.headers()["content-type"], "application/problem+json");
                }
                None => assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status)
                        && !status.is_server_error(),
                    "{path} with {has:?}: {status}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 4);
    assert_eq!(server.observable_state().await, before, "no request changed anything");
}
