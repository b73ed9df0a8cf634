//! The proxy's own HTTP/1.1 server over raw TCP, the way clients other than the SDKs speak it:
//! pipelined requests answered in order, a streamed answer in chunks followed by another
//! request on the same connection, `HEAD`, `Expect: 100-continue`, HTTP/1.0 clients (kept alive only
//! when they ask, a stream ended by the close), and idle connections closed after the idle
//! timeout while busy ones stay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::wire::Answer;
use sluice_e2e::{LiveStack, caught_up_proxy_with, live_stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection that reads answers one at a time, keeping what follows one.
struct Wire {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Wire {
    async fn connect(addr: &str) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buffered: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false once the proxy has closed the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0_u8; 16 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("the proxy went quiet")
            .unwrap_or(0);
        self.buffered.extend_from_slice(&chunk[..read]);
        read > 0
    }

    /// The next answer, its body decoded by its framing (a body without length or chunks
    /// ends where the connection does).
    async fn answer(&mut self) -> Answer {
        self.read_answer(false).await
    }

    /// The next answer's head alone: the answer to a `HEAD` request has no body.
    async fn answer_to_head(&mut self) -> Answer {
        self.read_answer(true).await
    }

    async fn read_answer(&mut self, head_only: bool) -> Answer {
        let end = loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await, "closed before an answer's head");
        };
        let head = String::from_utf8(self.buffered[..end].to_vec()).unwrap();
        self.buffered.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| line.split_once(':').unwrap())
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 100 || head_only {
            return answer;
        }
        if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().unwrap();
            while self.buffered.len() < length {
                assert!(self.fill().await, "closed inside a body");
            }
            answer.body = self.buffered.drain(..length).collect();
        } else if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = self.chunks().await;
        } else {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buffered);
        }
        answer
    }

    async fn chunks(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                assert!(self.fill().await, "closed inside a chunk line");
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.buffered[..line_end]).unwrap(), 16)
                    .unwrap();
            while self.buffered.len() < line_end + 2 + size + 2 {
                assert!(self.fill().await, "closed inside a chunk");
            }
            let chunk: Vec<u8> = self.buffered.drain(..line_end + 2 + size + 2).collect();
            assert_eq!(&chunk[line_end + 2 + size..], b"\r\n");
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[line_end + 2..line_end + 2 + size]);
        }
    }

    /// Whether the proxy closes the connection within `within`.
    async fn closes_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0_u8; 1024];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn post(key: &str, body: &Value, extra: &str) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http1_server_speaks_the_protocol_clients_use() {
    // The mock upstream and the control plane's folder live as long as the test.
    let LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack("sk-wire-0001");
    let key = acme.key;
    let (_proxy_dir, proxy, _) =
        caught_up_proxy_with(&cp, &acme.token, &[("SLUICE_PROXY_IDLE_TIMEOUT_MS", "600")]).await;
    let chat = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    let streamed = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    // Pipelined: three requests in one write, three answers in order, each with its id.
    let mut wire = Wire::connect(&proxy.addr).await;
    let mut three = post(&key, &chat, "");
    three.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    three.extend_from_slice(&post(&key, &chat, ""));
    wire.send(&three).await;
    let mut ids = Vec::new();
    for expected in ["chat.completion", "ok", "chat.completion"] {
        let answer = wire.answer().await;
        assert_eq!(answer.status, 200, "{answer:?}");
        ids.push(answer.header("x-request-id").unwrap().to_owned());
        assert!(answer.header("date").is_some_and(|d| d.ends_with("GMT")));
        if expected == "ok" {
            assert_eq!(answer.body, b"ok\n");
        } else {
            assert_eq!(answer.json()["object"], expected);
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // A stream goes out in chunks; the connection then carries the next request.
    wire.send(&post(&key, &streamed, "")).await;
    let answer = wire.answer().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
    );
    let events = String::from_utf8(answer.body).unwrap();
    assert!(events.contains("chat.completion.chunk"), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    wire.send(&post(&key, &chat, "")).await;
    assert_eq!(wire.answer().await.status, 200);

    // HEAD: the answer's head alone, so the next answer is read where it begins.
    wire.send(
        b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let headed = wire.answer_to_head().await;
    assert_eq!(headed.status, 405);
    assert!(headed.header("content-length").is_some_and(|n| n != "0"));
    assert_eq!(wire.answer().await.body, b"ok\n");

    // Expect: 100-continue: the interim answer comes before the body is sent.
    let request = post(&key, &chat, "Expect: 100-continue\r\n");
    let split = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    wire.send(&request[..split]).await;
    let interim = wire.answer().await;
    assert_eq!(interim.status, 100);
    wire.send(&request[split..]).await;
    assert_eq!(wire.answer().await.json()["object"], "chat.completion");

    // Idle past the idle timeout: closed. A connection kept busy stays open.
    assert!(wire.closes_within(Duration::from_secs(3)).await);
    let mut busy = Wire::connect(&proxy.addr).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        busy.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(busy.answer().await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // HTTP/1.0: closed after the answer unless the client asks to keep it.
    let mut old = Wire::connect(&proxy.addr).await;
    old.send(b"GET /healthz HTTP/1.0\r\n\r\n").await;
    let answer = old.answer().await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(old.closes_within(Duration::from_secs(2)).await);
    let mut kept = Wire::connect(&proxy.addr).await;
    for _ in 0..2 {
        kept.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let answer = kept.answer().await;
        assert_eq!(answer.header("connection"), Some("keep-alive"));
        assert_eq!(answer.body, b"ok\n");
    }
    // An HTTP/1.0 client cannot read chunks: its stream ends where the connection does.
    let body = streamed.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut old = Wire::connect(&proxy.addr).await;
    old.send(request.as_bytes()).await;
    let answer = old.answer().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), None);
    let events = String::from_utf8(answer.body).unwrap();
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    // A chunked request body is read whole.
    let body = chat.to_string();
    let (front, back) = body.split_at(10);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{front}\r\n{:x};ext=1\r\n{back}\r\n0\r\n\r\n",
        front.len(),
        back.len()
    );
    let mut wire = Wire::connect(&proxy.addr).await;
    wire.send(chunked.as_bytes()).await;
    assert_eq!(wire.answer().await.json()["object"], "chat.completion");
}
