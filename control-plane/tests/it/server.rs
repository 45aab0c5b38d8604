//! The service on a real listener.

use std::sync::Arc;

use control_plane::clock::SystemClock;
use control_plane::store::sqlite::SqliteStore;
use control_plane::{AppState, app};

#[tokio::test]
async fn health_and_readiness_answer_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("rollgate.db"), Arc::new(SystemClock)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app(AppState { store: Arc::new(store) })).into_future());

    let client = reqwest::Client::new();
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = client.get(format!("http://{address}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body);
    }
    let response = client
        .get(format!("http://{address}/api/v1/environments/production/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "no unauthenticated API exists yet");
}
