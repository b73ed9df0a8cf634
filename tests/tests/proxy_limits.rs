//! The proxy's connection-level limits with the real binary: h2c works beside HTTP/1.1, a
//! client that never finishes its headers is cut off, and connections over the cap are closed
//! at once while the others keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (Ok(bytes read)) or `within` passes (Err).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<usize, ()> {
    let mut total = 0;
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
            Err(_) => return Err(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_slow_clients_and_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_acme("https://api.openai.com/v1", None, &[]);
    let (key, token) = (acme.key, acme.token);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_HEADER_READ_TIMEOUT_MS", "500")
        .env("SLUICE_PROXY_MAX_CONNECTIONS", "4")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let chat = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});

    // h2c: the same answer over HTTP/2 with prior knowledge.
    let h2 = Http::h2c()
        .post(&proxy.url("/v1/chat/completions"), Some(&key), &chat)
        .await
        .unwrap();
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.json()["object"], "chat.completion");

    // Slowloris: half a request line, then silence. Cut off at the header-read timeout.
    let mut slow = TcpStream::connect(&proxy.addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    closed_within(&mut slow, Duration::from_secs(3))
        .await
        .expect("a slow client was never cut off");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "cut off after {:?}",
        started.elapsed()
    );
    drop(slow);

    // The cap: four idle connections hold every slot; a fifth is closed at once, unanswered.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&proxy.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(&proxy.addr).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let read = closed_within(&mut over, Duration::from_millis(300))
        .await
        .expect("the connection over the cap stayed open");
    assert_eq!(read, 0, "the connection over the cap was answered");
    drop(held);
    // Slots come back once the held connections go (the header timeout also frees idle ones).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(response) = http.get(&proxy.url("/healthz"), None).await {
            assert_eq!(response.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "capacity never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
