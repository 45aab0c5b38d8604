//! Browsers: client tokens see client-visible flags only and nothing of how they were decided;
//! allowed origins are set per environment, reach the edges' envelope, and drive CORS.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, READ, RELEASE, SNAPSHOT, Server, start};

const ORIGINS: &str = "/api/v1/environments/production/allowed-origins";
const BULK: &str = "/ofrep/v1/evaluate/flags";
const APP: &str = "https://app.example.com";

/// `banner` is marked for browsers and decided by a rule; `checkout-v2` is not marked.
async fn with_a_client_visible_flag() -> (Server, String) {
    let server = start().await;
    let banner = json!({"key": "banner", "type": "string", "variants": {"old": "Old", "new": "New"},
        "off_variant": "old", "client_visible": true});
    let (status, body) =
        server.call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(banner)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let state = json!({"enabled": true, "fallthrough": {"variant": "old"}, "reason": "staff first",
        "rules": [{"conditions": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}],
                   "serve": {"variant": "new"}}]});
    let path = "/api/v1/environments/production/flags/banner";
    let (status, body) = server.call(Method::PUT, path, Some(RELEASE), Some(state)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = server.token("web-page", "client", Some("production")).await;
    (server, page)
}

#[tokio::test]
async fn a_client_token_evaluates_client_visible_flags_only_and_reads_nothing_else() {
    let (server, page) = with_a_client_visible_flag().await;
    let context = json!({"context": {"targetingKey": "u1", "email": "ann@example.com"}});

    let (status, bulk) = server.call(Method::POST, BULK, Some(&page), Some(context.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bulk["flags"],
        json!([{"key": "banner", "value": "New", "variant": "new", "reason": "TARGETING_MATCH"}])
    );
    // A read token sees every flag, with its rule.
    let (_, server_bulk) = server.call(Method::POST, BULK, Some(READ), Some(context.clone())).await;
    let keys: Vec<&Value> =
        server_bulk["flags"].as_array().unwrap().iter().map(|f| &f["key"]).collect();
    assert_eq!(keys, ["banner", "checkout-v2"]);
    assert_eq!(server_bulk["flags"][0]["ruleIndex"], 0);

    // A flag not marked for clients does not exist for them.
    let path = "/ofrep/v1/evaluate/flags/checkout-v2";
    let (status, hidden) =
        server.call(Method::POST, path, Some(&page), Some(context.clone())).await;
    assert_eq!((status, &hidden["errorCode"]), (StatusCode::NOT_FOUND, &json!("FLAG_NOT_FOUND")));
    let path = "/api/v1/environments/production/ofrep/v1/evaluate/flags/checkout-v2";
    let (status, _) = server.call(Method::POST, path, Some(&page), Some(context.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let path = "/api/v1/environments/staging/ofrep/v1/evaluate/flags";
    let (status, _) = server.call(Method::POST, path, Some(&page), Some(context)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a client token is bound to its environment");

    // Nothing but OFREP: no snapshot (it holds the rules), no stream, no flags.
    for path in [SNAPSHOT, "/api/v1/environments/production/stream", "/api/v1/flags"] {
        let (status, _) = server.call(Method::GET, path, Some(&page), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn a_client_token_is_bound_to_an_environment() {
    let server = start().await;
    let (_, before) = server.call(Method::GET, "/api/v1/tokens", Some(ADMIN), None).await;
    let unbound = json!({"name": "page", "scope": "client"});
    let (status, problem) =
        server.call(Method::POST, "/api/v1/tokens", Some(ADMIN), Some(unbound)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("bound to one environment"), "{problem}");
    let (_, after) = server.call(Method::GET, "/api/v1/tokens", Some(ADMIN), None).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn allowed_origins_are_checked_audited_and_reach_the_edges() {
    let server = start().await;
    let envelope = async || -> Value {
        let path = "/api/v1/environments/production/edge-config";
        server.get(path, Some(READ)).send().await.unwrap().json().await.unwrap()
    };
    let before = envelope().await;
    assert!(before.get("allowed_origins").is_none());

    for (origins, why) in [
        (json!(["https://app.example.com/login"]), "scheme, host and port only"),
        (json!(["https://App.Example.com"]), "lower case"),
        (json!(["ftp://files.example.com"]), "not an http or https origin"),
        (json!(["*"]), "not an origin"),
        (json!(["app.example.com"]), "not an"),
    ] {
        let body = json!({"allowed_origins": origins});
        let (status, problem) = server.call(Method::PUT, ORIGINS, Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{origins}");
        assert!(problem["detail"].as_str().unwrap().contains(why), "{problem}");
    }
    let body = json!({"allowed_origins": [APP]});
    let (status, _) = server.call(Method::PUT, ORIGINS, Some(RELEASE), Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "origins are an admin's, as tokens are");
    let path = "/api/v1/environments/nowhere/allowed-origins";
    let (status, _) = server.call(Method::PUT, path, Some(ADMIN), Some(body.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(envelope().await, before, "nothing refused changed anything");

    let (status, environment) = server.call(Method::PUT, ORIGINS, Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(environment["allowed_origins"], json!([APP]));
    let (_, listed) = server.call(Method::GET, "/api/v1/environments", Some(RELEASE), None).await;
    let production = listed.as_array().unwrap().iter().find(|e| e["name"] == "production").unwrap();
    assert_eq!(production["allowed_origins"], json!([APP]));
    let after = envelope().await;
    assert_eq!(after["allowed_origins"], json!([APP]));
    assert!(after["readers_revision"].as_u64() > before["readers_revision"].as_u64());
    let (_, audit) = server.call(Method::GET, "/api/v1/audit", Some(ADMIN), None).await;
    let entry =
        audit.as_array().unwrap().iter().find(|e| e["action"] == "environment.allowed_origins");
    assert_eq!(entry.unwrap()["after"], json!({"allowed_origins": [APP]}));

    // A client token's digest reaches the edges too.
    let page = server.token("web-page", "client", Some("production")).await;
    let with_client = envelope().await;
    assert_eq!(with_client["clients"], json!([control_plane::auth::hash(&page)]));
    assert!(
        !with_client["readers"]
            .as_array()
            .unwrap()
            .contains(&json!(control_plane::auth::hash(&page)))
    );
}

#[tokio::test]
async fn cors_answers_allowed_origins_on_ofrep_paths_only_and_never_with_credentials() {
    let (server, page) = with_a_client_visible_flag().await;
    let body = json!({"allowed_origins": [APP]});
    server.call(Method::PUT, ORIGINS, Some(ADMIN), Some(body)).await;
    let url = |path: &str| format!("http://{}{path}", server.address);
    let preflight = |path: &str, origin: &str| {
        server
            .client
            .request(Method::OPTIONS, url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, if-none-match")
            .send()
    };
    let header = |response: &reqwest::Response, name: &str| {
        response.headers().get(name).map(|value| value.to_str().unwrap().to_owned())
    };
    let evaluate_from = |origin: &str| {
        server
            .client
            .post(url(BULK))
            .header("origin", origin)
            .bearer_auth(&page)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
    };

    let allowed = preflight(BULK, APP).await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(header(&allowed, "access-control-allow-origin").as_deref(), Some(APP));
    let headers = header(&allowed, "access-control-allow-headers").unwrap();
    assert!(headers.contains("authorization") && headers.contains("if-none-match"), "{headers}");
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);
    let path = "/api/v1/environments/production/ofrep/v1/evaluate/flags";
    let in_path = preflight(path, APP).await.unwrap();
    assert_eq!(header(&in_path, "access-control-allow-origin").as_deref(), Some(APP));

    for (path, origin) in [
        (BULK, "https://evil.example.net"),
        (BULK, "http://app.example.com"),
        ("/api/v1/flags", APP),
        ("/api/v1/tokens", APP),
    ] {
        let refused = preflight(path, origin).await.unwrap();
        assert_eq!(header(&refused, "access-control-allow-origin"), None, "{path} from {origin}");
    }

    let answer = evaluate_from(APP).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(header(&answer, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(header(&answer, "access-control-expose-headers").as_deref(), Some("etag"));
    assert!(header(&answer, "vary").unwrap().to_lowercase().contains("origin"));
    let stream_url = answer.json::<Value>().await.unwrap()["eventStreams"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();

    // An origin only staging allows passes a preflight, which names no environment; answers
    // for production go to production's origins only: by the path, the token or the stream.
    let staging_app = "https://staging.example.com";
    let body = json!({"allowed_origins": [staging_app]});
    let staging = "/api/v1/environments/staging/allowed-origins";
    server.call(Method::PUT, staging, Some(ADMIN), Some(body)).await;
    let preflighted = preflight(BULK, staging_app).await.unwrap();
    assert_eq!(header(&preflighted, "access-control-allow-origin").as_deref(), Some(staging_app));
    let in_path = preflight(path, staging_app).await.unwrap();
    assert_eq!(header(&in_path, "access-control-allow-origin"), None);
    let answer = evaluate_from(staging_app).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    for (origin, allowed) in [(APP, Some(APP)), (staging_app, None)] {
        let stream = server.client.get(&stream_url).header("origin", origin).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(header(&stream, "access-control-allow-origin").as_deref(), allowed, "{origin}");
    }
}
