//! The OpenAPI description: it covers every API route with the methods the router serves, and
//! docs/openapi.json is the same document. `UPDATE_OPENAPI=1 cargo test` rewrites the copy.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{ADMIN, start};

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

/// Routes that are not part of the API: the dashboard's files and the description itself.
const NOT_API: [&str; 3] = ["/", "/dashboard/{file}", "/api/openapi.json"];

fn generated() -> String {
    serde_json::to_string_pretty(&control_plane::api::openapi::document()).unwrap() + "\n"
}

#[test]
fn docs_openapi_json_is_the_generated_description() {
    let generated = generated();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p control-plane --test it openapi`"
    );
}

#[tokio::test]
async fn the_description_covers_every_route_and_is_served() {
    let document: Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let described: BTreeSet<&str> =
        document["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let routed: BTreeSet<&str> =
        control_plane::route_paths().into_iter().filter(|path| !NOT_API.contains(path)).collect();
    assert_eq!(described, routed);

    // Each described method reaches a handler: the router answers neither 405 nor its own 404
    // (handlers' 404s are problems).
    let server = start().await;
    for (path, operations) in document["paths"].as_object().unwrap() {
        let concrete = path.replace("{environment}", "production").replace(['{', '}'], "");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            if path.ends_with("/stream") {
                continue; // it would not end
            }
            let response =
                server.send(method.clone(), &concrete, Some(ADMIN)).send().await.unwrap();
            let status = response.status();
            let problem = response
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "application/problem+json");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(status != StatusCode::NOT_FOUND || problem, "{method} {path} is not routed");
        }
    }
    let served: Value =
        server.get("/api/openapi.json", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, document);
}
