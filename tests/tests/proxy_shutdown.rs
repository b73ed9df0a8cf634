//! A proxy stopped with SIGTERM finishes what it serves and delivers every usage record before
//! it exits: a graceful stop loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::proxy::{Http, ProxyBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_all_usage() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_acme("https://api.openai.com/v1", None, &[]);
    let (key, token) = (acme.key, acme.token);
    let proxy_dir = tempfile::tempdir().unwrap();
    // A flush interval far beyond the test: nothing is sent until the stop.
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "600000")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;

    const REQUESTS: usize = 40;
    for n in 0..REQUESTS {
        let body = json!({"model": "default", "messages": [{"role": "user", "content": format!("request {n}")}]});
        let response = http
            .post(&proxy.url("/v1/chat/completions"), Some(&key), &body)
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }
    let db = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        count().await,
        0,
        "usage left before the stop; the test proves nothing"
    );

    let (status, output) = proxy.terminate();
    assert!(status.success(), "exit {status}:\n{}", output.text());
    assert_eq!(
        count().await,
        REQUESTS as i64,
        "usage lost on a graceful stop:\n{}",
        output.text()
    );
}
