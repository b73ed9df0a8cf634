//! A proxy stopped with SIGTERM finishes what it serves, on every serving thread, and delivers
//! every usage record before it exits: a graceful stop loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::mock_openai::MockOpenAi;
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
    let pool = sluice_e2e::store_of(dir.path()).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&sluice_e2e::usage_rows(&pool).await)
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

/// With several serving threads, a SIGTERM lets the requests under way on every one of them
/// finish (the upstream is still answering when the signal lands) and their usage arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_serving_thread() {
    const WORKERS: usize = 3;
    const IN_FLIGHT: usize = 12;
    let upstream = MockOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_live_acme_with_paused_model(&upstream.base_url(), "sk-drain-test");
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_WORKERS", &WORKERS.to_string())
        .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "600000")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let serving_threads = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("sluice-serve-"))
        })
        .count();
    assert_eq!(serving_threads, WORKERS);

    // Each request in flight holds its own connection, so they spread over the threads.
    let url = proxy.url("/v1/chat/completions");
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|n| {
            let (http, url, key) = (Http::new(), url.clone(), acme.key.clone());
            tokio::spawn(async move {
                let body = json!({"model": "paused", "messages": [{"role": "user", "content": format!("in flight {n}")}]});
                http.post(&url, Some(&key), &body).await.unwrap()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.requests().len() < IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, output) = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .unwrap();
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status, 200, "{}", output.text());
    }
    assert!(status.success(), "exit {status}:\n{}", output.text());
    let pool = sluice_e2e::store_of(dir.path()).await;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
        .fetch_one(&sluice_e2e::usage_rows(&pool).await)
        .await
        .unwrap();
    assert_eq!(stored, IN_FLIGHT as i64, "{}", output.text());
}
