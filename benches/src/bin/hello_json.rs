//! The calibration point for `benches/http/run`: a bare axum server answering `GET /` with a
//! small JSON document, on the same runtime settings as `rollgate serve`. This VM's throughput
//! drifts over the day; the control plane's figures are read against this one, measured in
//! the same run.
//!
//! Usage: hello_json <listen-address>

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18081".into());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"hello": "world"})) }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
