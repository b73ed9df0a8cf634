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

    // A chunked body (no length to refuse up front) over the limit: 413 once the limit is
    // crossed. Too many headers: 431.
    let mut chunked = TcpStream::connect(&proxy.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    chunked.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    for _ in 0..(9 * 16) {
        if chunked.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), chunked.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(status_line.contains("413"), "{status_line}");
    drop(chunked);
    let mut many = TcpStream::connect(&proxy.addr).await.unwrap();
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for n in 0..150 {
        request.push_str(&format!("X-Filler-{n}: 1\r\n"));
    }
    request.push_str("\r\n");
    many.write_all(request.as_bytes()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), many.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(status_line.contains("431"), "{status_line}");
    drop(many);

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
