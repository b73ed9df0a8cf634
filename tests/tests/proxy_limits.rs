//! The proxy's connection-level limits with the real binary: h2c works beside HTTP/1.1; a
//! client that never starts its request, never finishes its headers or stalls its body is cut
//! off; at the connection cap the connection that has waited longest for a request makes room
//! for a newcomer, which is refused only when none waits; and one client address holds no
//! more than its share.

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
        .env("SLUICE_PROXY_FIRST_REQUEST_TIMEOUT_MS", "700")
        .env("SLUICE_PROXY_BODY_STALL_TIMEOUT_MS", "500")
        .env("SLUICE_PROXY_MAX_CONNECTIONS", "4")
        // Which connection waited longest is judged per serving thread: one makes it exact.
        .env("SLUICE_PROXY_WORKERS", "1")
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

    // A body that stops after 10 of its 1 000 bytes: 408 once it has stalled past its timeout.
    let mut stalled = TcpStream::connect(&proxy.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled body was never cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(answer.contains("\"next_action\":\"retry\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // A connection that never starts a request: closed at the first-request timeout.
    let mut silent = TcpStream::connect(&proxy.addr).await.unwrap();
    let started = Instant::now();
    let read = closed_within(&mut silent, Duration::from_secs(3))
        .await
        .expect("a silent connection was never closed");
    assert_eq!(read, 0);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(600)..Duration::from_millis(1700)).contains(&waited),
        "closed after {waited:?}"
    );
    drop(silent);
    wait_for_capacity(&http, &proxy.url("/healthz")).await;

    // The cap: four connections that only wait hold every slot. A fifth is served, and the
    // one that has waited longest is closed to make room.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&proxy.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut newcomer = TcpStream::connect(&proxy.addr).await.unwrap();
    newcomer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), newcomer.read_to_end(&mut answer))
        .await
        .expect("the newcomer was not answered")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    closed_within(&mut held[0], Duration::from_millis(300))
        .await
        .expect("the longest-waiting connection was not the one closed");
    for later in &mut held[1..] {
        assert!(
            closed_within(later, Duration::from_millis(50))
                .await
                .is_err(),
            "a connection that had waited less was closed"
        );
    }
    drop(held);
    wait_for_capacity(&http, &proxy.url("/healthz")).await;

    // Four connections in the middle of their heads hold every slot and none waits: a fifth
    // is closed at once, unanswered.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&proxy.addr).await.unwrap();
        stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
            .await
            .unwrap();
        busy.push(stream);
    }
    // Time for the four to be accepted and handed to serving threads, with room for a
    // machine busy with other work (CI), while their heads (500 ms) are still in time.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut over = TcpStream::connect(&proxy.addr).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let read = closed_within(&mut over, Duration::from_millis(300))
        .await
        .expect("the connection over the cap stayed open");
    assert_eq!(read, 0, "the connection over the cap was answered");
    drop(busy);
    wait_for_capacity(&http, &proxy.url("/healthz")).await;
    let metrics = http.get(&proxy.url("/metrics"), None).await.unwrap().text();
    assert!(counter(&metrics, "sluice_connections_shed_total") >= 1);
    assert!(
        counter(
            &metrics,
            "sluice_connections_refused_total{reason=\"full\"}"
        ) >= 1
    );
}

/// A counter's value in a Prometheus text page.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
}

/// Waits until the proxy answers again once held connections have gone.
async fn wait_for_capacity(http: &Http, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(response) = http.get(url, None).await {
            assert_eq!(response.status, 200);
            return;
        }
        assert!(Instant::now() < deadline, "capacity never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_holds_at_most_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_acme("https://api.openai.com/v1", None, &[]);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_MAX_CONNECTIONS_PER_CLIENT", "2")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let port: u16 = proxy.addr.rsplit(':').next().unwrap().parse().unwrap();
    let from = |client: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((client, 0)))
            .unwrap();
        socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    };
    let healthz = |mut stream: TcpStream| async move {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };

    let first = from([127, 0, 0, 2]).await;
    let _second = from([127, 0, 0, 2]).await;
    let third = healthz(from([127, 0, 0, 2]).await).await;
    assert_eq!(
        third, "",
        "a third connection from the same address was answered"
    );
    let other = healthz(from([127, 0, 0, 3]).await).await;
    assert!(other.starts_with("HTTP/1.1 200 "), "{other}");
    // Its share comes back as one of its connections closes.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let again = healthz(from([127, 0, 0, 2]).await).await;
        if again.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the share never came back: {again:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http.get(&proxy.url("/metrics"), None).await.unwrap().text();
    assert!(
        counter(
            &metrics,
            "sluice_connections_refused_total{reason=\"per_client\"}"
        ) >= 1
    );
}
