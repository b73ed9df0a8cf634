//! Streams that do not end well, and bodies that are not what they claim: every case ends in
//! a typed answer and a usage record, never a crash or a hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::proxy::{Http, ProxyBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_are_metered_and_garbage_is_refused() {
    let upstream = MockOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_acme(
        &upstream.base_url(),
        Some("sk-streams-0001"),
        &["--timeout-ms", "800"],
    );
    cp.ctl(&[
        "model",
        "create",
        "acme/stalling",
        "--deployment",
        "openai:stall",
    ])
    .ok();
    cp.go_live("acme/web");
    let (key, token) = (acme.key, acme.token);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token).start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/chat/completions");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let streaming = |model: &str| {
        hyper::Request::post(&url)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())))
            .unwrap()
    };

    // The client hangs up after the first chunk.
    let response = client.request(streaming("gpt-4o-mini")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);

    // The upstream stalls after one chunk: the stream is cut at the idle timeout (800 ms).
    let started = Instant::now();
    let response = client.request(streaming("stalling")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut ended = false;
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
        match next {
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "a stalled upstream stream was never cut off");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut off after {:?}",
        started.elapsed()
    );

    // Both are metered, as estimates.
    let pool = sluice_e2e::store_of(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT model, source, input_tokens FROM usage_records")
                .fetch_all(&sluice_e2e::usage_rows(&pool).await)
                .await
                .unwrap();
        if rows.len() == 2 {
            assert!(
                rows.iter().all(|r| r.1 == "ESTIMATED" && r.2 > 0),
                "{rows:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage of broken streams never arrived: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Garbage in every shape gets a typed 4xx with a request id; the proxy stays up.
    let valid = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
        .to_string();
    let mut bodies: Vec<Vec<u8>> = (0..valid.len())
        .map(|cut| valid.as_bytes()[..cut].to_vec())
        .collect();
    bodies.push("[".repeat(10_000).into_bytes());
    bodies.push(format!("{{\"model\": 1{}}}", "0".repeat(1_000_000)).into_bytes());
    bodies.push(b"{\"model\": \"gpt-4o-mini\", \"messages\": \"\xff\xfe\"}".to_vec());
    bodies.push(br#"{"model": "a", "model": "b", "messages": [1]}"#.to_vec());
    bodies.push(br#"{"model": ["gpt-4o-mini"], "messages": [1]}"#.to_vec());
    bodies.push(br#"{"model": "gpt-4o-mini", "messages": null}"#.to_vec());
    bodies.push(br#"{"model": "gpt-4o-mini", "messages": [1], "stream": "true"}"#.to_vec());
    bodies.push(br#"null"#.to_vec());
    bodies.push(b"\x00\x01\x02".to_vec());
    for body in bodies {
        let response = http
            .send(
                "POST",
                &url,
                Some(&key),
                &[("content-type", "text/plain")],
                Bytes::from(body.clone()),
            )
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert!(
            response.status.is_client_error(),
            "{shown}: {} {}",
            response.status,
            response.text()
        );
        let error = response.json();
        assert!(
            error["error"]["code"].is_string() && error["error"]["request_id"].is_string(),
            "{shown}: {error}"
        );
    }
    let alive = http.post(&url, Some(&key), &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]})).await.unwrap();
    assert_eq!(alive.status, 200);
    assert_eq!(
        proxy.output.text().matches("panicked").count(),
        0,
        "{}",
        proxy.output.text()
    );
}
