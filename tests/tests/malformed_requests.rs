//! Hostile bytes on the proxy's port, over raw TCP: malformed request lines, methods, targets
//! and versions, header names and values with controls, too many or too large headers,
//! contradictory framing, a TLS hello on the plaintext port — and hundreds of random mutations
//! of real requests. Every answer the proxy sends, whatever refused the request, carries
//! `x-request-id`, and every refusal is a JSON error in the shape of the endpoint it was for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::wire::Answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a fresh connection and reads what comes back until the proxy closes or
/// goes quiet; the first answer in it, if any.
async fn send(addr: &str, bytes: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if stream.write_all(bytes).await.is_err() {
        return None;
    }
    let mut received = Vec::new();
    let mut buffer = [0_u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                received.extend_from_slice(&buffer[..n]);
                if whole(&received) {
                    break;
                }
            }
        }
    }
    parse_answer(&received)
}

/// Whether `received` holds a whole answer with a `Content-Length` body.
fn whole(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|length| length.trim().parse::<usize>().ok())
        .is_some_and(|length| received.len() >= end + 4 + length)
}

fn parse_answer(received: &[u8]) -> Option<Answer> {
    if received.is_empty() {
        return None;
    }
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(received)
            )
        });
    let head = String::from_utf8_lossy(&received[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1."), "{status_line}");
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &received[end + 4..];
    let body = match headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        Some(length) => rest[..length.min(rest.len())].to_vec(),
        None => rest.to_vec(),
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Every answer carries a request id; a refusal is a JSON error.
fn assert_ours(what: &str, answer: &Answer) {
    assert!(
        answer
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "{what}: answered {} without x-request-id: {answer:?}",
        answer.status
    );
    if answer.status >= 400 {
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
            panic!(
                "{what}: {} with a body that is not JSON: {:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )
        });
        assert!(body["error"].is_object(), "{what}: {body}");
    }
}

/// A small deterministic generator, so a failing mutation can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TEMPLATES: &[&str] = &[
    "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer sk-sluice-x\r\nContent-Type: application/json\r\nContent-Length: 61\r\n\r\n{\"model\":\"default\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
    "GET /v1/models HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer sk-sluice-x\r\n\r\n",
    "POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nx-api-key: sk-sluice-x\r\nanthropic-version: 2023-06-01\r\nContent-Length: 2\r\n\r\n{}",
    "POST /v1beta/models/gemini:generateContent HTTP/1.1\r\nHost: proxy\r\nx-goog-api-key: k\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "GET /healthz HTTP/1.0\r\n\r\n",
];

/// Bytes that break HTTP/1 heads most often.
const NASTY: &[u8] = b"\x00\x01\x7f\r\n \t:;,\"\\/?#%@\x80\xff{}";

fn mutate(template: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = template.to_vec();
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    for _ in 0..=rng.below(3) {
        let at = rng.below(head_end.max(1));
        let nasty = NASTY[rng.below(NASTY.len())];
        match rng.below(6) {
            0 => bytes.insert(at, nasty),
            1 => bytes[at] = nasty,
            2 => {
                bytes.remove(at);
            }
            3 => {
                let header = [
                    &b"Content-Length: 9\r\n"[..],
                    b"Transfer-Encoding: chunked\r\n",
                    b"Transfer-Encoding: gzip\r\n",
                    b"Content-Length: -4\r\n",
                ][rng.below(4)];
                let line = bytes[..head_end]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                bytes.splice(line..line, header.iter().copied());
            }
            4 => {
                let filler = vec![b'a' + (rng.below(26) as u8); 1 + rng.below(70_000)];
                bytes.splice(at..at, filler);
            }
            _ => bytes[at] = bytes[at].wrapping_add(rng.below(255) as u8 + 1),
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_hostile_bytes_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let acme = cp.seed_acme("https://api.openai.com/v1", None, &[]);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_LOG", "debug")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let addr = proxy.addr.clone();

    let many: String = (0..150).map(|n| format!("X-Filler-{n}: 1\r\n")).collect();
    let huge_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let huge_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000));
    let fixed: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GE T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "openai"),
        (b"G@T /v1/models HTTP/1.1\r\n\r\n".to_vec(), 400, "openai"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400, "openai"),
        (b"GET /v1/mo\x01dels HTTP/1.1\r\n\r\n".to_vec(), 400, "openai"),
        // UTF-8 in a path is read as it is (and is no route).
        (b"GET /v1/\xc3\xa9 HTTP/1.1\r\n\r\n".to_vec(), 404, "openai"),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 400, "openai"),
        (b"GET / FOO/1.1\r\n\r\n".to_vec(), 400, "openai"),
        (b"GET /v1/models HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(), 400, "openai"),
        (b"GET /v1/models HTTP/1.1\r\nX-A: b\x01c\r\n\r\n".to_vec(), 400, "openai"),
        (b"POST /v1/messages HTTP/1.1\r\nX-A: \x00\r\n\r\n".to_vec(), 400, "anthropic"),
        (
            b"POST /v1beta/models/g:generateContent HTTP/1.1\r\nX-A: \x7f\r\n\r\n".to_vec(),
            400,
            "gemini",
        ),
        (b"GET / HTTP/1.1\r\nNocolon\r\n\r\n".to_vec(), 400, "openai"),
        (format!("GET / HTTP/1.1\r\n{many}\r\n").into_bytes(), 431, "openai"),
        (huge_target.into_bytes(), 431, "openai"),
        (huge_header.into_bytes(), 431, "openai"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(), 400, "openai"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400, "openai"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400, "openai"),
        (b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400, "openai"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            "openai",
        ),
        // A good request, then a bad one on the same connection: the good one is answered first.
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9.9\r\n\r\n".to_vec(),
            200,
            "openai",
        ),
    ];
    for (bytes, status, shape) in &fixed {
        let what = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        let answer = send(&addr, bytes)
            .await
            .unwrap_or_else(|| panic!("{what:?}: no answer\n{}", proxy.output.text()));
        assert_eq!(answer.status, *status, "{what:?}: {answer:?}");
        assert_ours(&what, &answer);
        if answer.status >= 400 {
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            match *shape {
                "anthropic" => assert_eq!(body["type"], "error", "{what:?}: {body}"),
                "gemini" => assert!(body["error"]["status"].is_string(), "{what:?}: {body}"),
                _ => assert!(body["error"]["code"].is_string(), "{what:?}: {body}"),
            }
            if matches!(answer.status, 400 | 431) {
                assert_eq!(answer.header("connection"), Some("close"), "{what:?}");
            }
        }
    }

    // Random mutations of real requests, many at a time.
    let mut rng = XorShift(0x5eed_1ce5_u64 ^ u64::from(std::process::id()));
    let cases: Vec<Vec<u8>> = (0..600)
        .map(|n| mutate(TEMPLATES[n % TEMPLATES.len()].as_bytes(), &mut rng))
        .collect();
    let mut answered = 0;
    for batch in cases.chunks(100) {
        let sent: Vec<_> = batch
            .iter()
            .map(|bytes| {
                let (addr, bytes) = (addr.clone(), bytes.clone());
                tokio::spawn(async move { (send(&addr, &bytes).await, bytes) })
            })
            .collect();
        for task in sent {
            let (answer, bytes) = task.await.unwrap();
            if let Some(answer) = answer {
                answered += 1;
                assert_ours(&format!("{:?}", String::from_utf8_lossy(&bytes)), &answer);
            }
        }
    }
    assert!(
        answered > 450,
        "only {answered} of 600 mutations were answered"
    );
    // Still serving.
    let health = http.get(&proxy.url("/healthz"), None).await.unwrap();
    assert_eq!(health.status, 200);
}
