//! The upstream client against real sockets: address checks, connection reuse and hang-ups,
//! and HTTP/1.1 framing as hostile upstreams send it.
#![cfg(test)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_proto::config::v1 as pb;
use sluice_shared::sealing::{SealingKeyPair, SecretSealer};

use super::*;
use crate::routing::tables::RoutingTables;

/// What a test or its set-up returns: a failure is the test's failure, with its cause.
type Outcome<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A DNS answer that turned hostile after the provider was accepted (rebinding).
struct Rebound(HashMap<String, IpAddr>);

impl Resolve for Rebound {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        let found = self.0.get(&host).map(|ip| vec![SocketAddr::new(*ip, port)]);
        Box::pin(async move { found.ok_or_else(|| std::io::ErrorKind::NotFound.into()) })
    }
}

fn tables(base_url: &str, allow_private_network: bool) -> Outcome<RoutingTables> {
    let sealing = SealingKeyPair::generate();
    let sealer = SecretSealer::for_recipient(&sealing.public_bytes())?;
    let snapshot = pb::Snapshot {
        version: 1,
        generated_at_us: 1,
        sealing_public_key: sealer.sender_public().to_vec(),
        providers: vec![pb::ProviderConfig {
            id: "p1".into(),
            organization_id: "o1".into(),
            name: "local".into(),
            r#type: sluice_proto::common::v1::ProviderType::Vllm as i32,
            base_url: base_url.into(),
            timeout_ms: 2_000,
            allow_private_network,
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(RoutingTables::build(&snapshot, &sealing, &[])?)
}

fn deadlines(tables: &RoutingTables) -> Deadlines {
    Deadlines::new(
        tables.providers[0].timeouts,
        tokio::time::Instant::now(),
        None,
    )
}

#[tokio::test]
async fn a_provider_reaches_a_private_address_only_with_leave_whatever_its_name_resolves_to()
-> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counting.fetch_add(1, Ordering::SeqCst);
        }
    });
    let resolver = Arc::new(Rebound(HashMap::from([
        ("api.example.com".to_owned(), IpAddr::from([127, 0, 0, 1])),
        (
            "meta.example.com".to_owned(),
            IpAddr::from([169, 254, 169, 254]),
        ),
    ])));
    let client = UpstreamClient::with_resolver(Vec::new(), resolver);
    let call = |base: String, allow: bool| {
        let client = client.clone();
        async move {
            let tables = tables(&base, allow)?;
            let uri: http::Uri = format!("{base}/chat/completions").parse()?;
            Outcome::Ok(
                client
                    .post_json(
                        &tables.providers[0],
                        &uri,
                        None,
                        JsonPost {
                            accept: "application/json",
                            body: Bytes::new(),
                            trace: None,
                        },
                        &deadlines(&tables),
                    )
                    .await,
            )
        }
    };
    for base in [
        format!("http://api.example.com:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://0.0.0.0:{port}/v1"),
    ] {
        let refused = call(base.clone(), false).await?;
        assert!(
            matches!(refused, Err(UpstreamError::Refused(_))),
            "{base}: {refused:?}"
        );
    }
    let metadata = call(format!("http://meta.example.com:{port}/v1"), true).await?;
    assert!(
        matches!(metadata, Err(UpstreamError::Refused(_))),
        "{metadata:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // The same name, with leave: the connection is made (the listener hangs up at once, so
    // the call fails after connecting: a reset, not a connect error).
    let allowed = call(format!("http://api.example.com:{port}/v1"), true).await?;
    assert!(
        matches!(allowed, Err(UpstreamError::Reset(_))),
        "{allowed:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    Ok(())
}

/// What a hand-written HTTP/1.1 upstream sends for a request: the raw answer, and whether it
/// then hangs up (`Hangup::Now`), keeps the connection (`Open`) or stalls it (`Stall`).
#[derive(Clone, Copy, PartialEq)]
enum Hangup {
    Open,
    Now,
    Stall,
}

type Answerer = fn(usize) -> (&'static [u8], Hangup);

/// An upstream speaking HTTP/1.1 byte by byte, answering each request with `answer(n)` where
/// `n` counts connections from 1; returns its port and the count of connections it accepted.
async fn raw_upstream(answer: Answerer) -> Outcome<(u16, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let connection = counting.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(Some(0), |value| value.trim().parse::<usize>().ok());
                    let Some(length) = length else { return };
                    while buffer.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    buffer.drain(..head_end + length);
                    let (bytes, hangup) = answer(connection);
                    if socket.write_all(bytes).await.is_err() {
                        return;
                    }
                    match hangup {
                        Hangup::Open => {}
                        Hangup::Now => return,
                        Hangup::Stall => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok((port, accepted))
}

const SIZED: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"ok\"\r\n6\r\n:true}\r\n0\r\n\r\n";

struct Caller {
    client: UpstreamClient,
    tables: RoutingTables,
    uri: http::Uri,
    key: PoolKey,
}

impl Caller {
    fn new(port: u16) -> Outcome<Self> {
        let client = UpstreamClient::new();
        let base = format!("http://127.0.0.1:{port}/v1");
        let key = PoolKey {
            client: client.id,
            tls: false,
            allow_private_network: true,
            authority: format!("127.0.0.1:{port}").parse()?,
        };
        Ok(Self {
            client,
            tables: tables(&base, true)?,
            uri: format!("{base}/chat/completions").parse()?,
            key,
        })
    }

    async fn try_send(&self) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.client
            .post_json(
                &self.tables.providers[0],
                &self.uri,
                None,
                JsonPost {
                    accept: "application/json",
                    body: Bytes::from_static(b"{\"model\":\"m\"}"),
                    trace: None,
                },
                &deadlines(&self.tables),
            )
            .await
    }

    async fn send(&self) -> Outcome<Response<UpstreamBody>> {
        Ok(self.try_send().await?)
    }

    /// One call, its answer read to the end.
    async fn call(&self) -> Outcome<Bytes> {
        use http_body_util::BodyExt;
        Ok(self.send().await?.into_body().collect().await?.to_bytes())
    }
}

/// Two calls, each answer read whole, took two connections: the first was not kept.
async fn not_kept(port: u16, accepted: &AtomicUsize) -> Outcome {
    let caller = Caller::new(port)?;
    assert_eq!(caller.call().await?, "{\"ok\":true}");
    assert_eq!(pool::idle_count(&caller.key), 0);
    assert_eq!(caller.call().await?, "{\"ok\":true}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn an_answer_read_to_its_end_leaves_its_connection_to_the_next_request() -> Outcome {
    let (port, accepted) = raw_upstream(|_| (SIZED, Hangup::Open)).await?;
    let caller = Caller::new(port)?;
    for _ in 0..3 {
        assert_eq!(caller.call().await?, "{\"ok\":true}");
        assert_eq!(pool::idle_count(&caller.key), 1);
    }
    let (port, chunked_accepted) = raw_upstream(|_| (CHUNKED, Hangup::Open)).await?;
    let chunked = Caller::new(port)?;
    for _ in 0..3 {
        assert_eq!(chunked.call().await?, "{\"ok\":true}");
    }
    assert_eq!(pool::idle_count(&chunked.key), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(chunked_accepted.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() -> Outcome {
    let (port, accepted) = raw_upstream(|_| (SIZED, Hangup::Now)).await?;
    let caller = Caller::new(port)?;
    for round in 1..=3 {
        assert_eq!(caller.call().await?, "{\"ok\":true}");
        // Let the hang-up arrive while the connection sits idle.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), round);
    }
    Ok(())
}

#[tokio::test]
async fn connection_close_and_close_delimited_answers_are_not_pooled() -> Outcome {
    const CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
    const UNTIL_EOF: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ok\":true}";
    for answer in [CLOSE, UNTIL_EOF] {
        let (port, accepted) = if answer == CLOSE {
            raw_upstream(|_| (CLOSE, Hangup::Now)).await?
        } else {
            raw_upstream(|_| (UNTIL_EOF, Hangup::Now)).await?
        };
        not_kept(port, &accepted).await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_answer_abandoned_midway_closes_its_connection() -> Outcome {
    use http_body_util::BodyExt;
    const HALF: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"ok\"\r\n";
    let (port, accepted) = raw_upstream(|connection| match connection {
        1 => (HALF, Hangup::Stall),
        _ => (SIZED, Hangup::Open),
    })
    .await?;
    let caller = Caller::new(port)?;
    let mut body = caller.send().await?.into_body();
    let first = body
        .frame()
        .await
        .ok_or("the body ended before its first chunk")??
        .into_data()
        .map_err(|_| "the first frame holds no data")?;
    assert_eq!(first, "{\"ok\"");
    drop(body);
    assert_eq!(pool::idle_count(&caller.key), 0);
    assert_eq!(caller.call().await?, "{\"ok\":true}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn interim_answers_are_skipped_and_bodiless_answers_keep_the_connection() -> Outcome {
    const INTERIM: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
    const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    let (port, accepted) = raw_upstream(|_| (INTERIM, Hangup::Open)).await?;
    let caller = Caller::new(port)?;
    assert_eq!(caller.call().await?, "{\"ok\":true}");
    assert_eq!(caller.call().await?, "{\"ok\":true}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let (port, accepted) = raw_upstream(|_| (NO_CONTENT, Hangup::Open)).await?;
    let caller = Caller::new(port)?;
    let response = caller.send().await?;
    assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
    assert!(http_body::Body::is_end_stream(response.body()));
    drop(response);
    assert_eq!(caller.call().await?, "");
    assert_eq!(pool::idle_count(&caller.key), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_never_reused() -> Outcome {
    const TWO_LENGTHS: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-length: 12\r\n\r\n{\"ok\":true}";
    const NOT_A_NUMBER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: +11\r\n\r\n{\"ok\":true}";
    const BOTH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"ok\"\r\n6\r\n:true}\r\n0\r\n\r\n";
    for (answer, expected) in [
        (TWO_LENGTHS, "two different"),
        (NOT_A_NUMBER, "content-length"),
    ] {
        let (port, _) = if answer == TWO_LENGTHS {
            raw_upstream(|_| (TWO_LENGTHS, Hangup::Open)).await?
        } else {
            raw_upstream(|_| (NOT_A_NUMBER, Hangup::Open)).await?
        };
        let caller = Caller::new(port)?;
        let refused = caller.try_send().await;
        assert!(
            matches!(&refused, Err(UpstreamError::Reset(why)) if why.contains(expected)),
            "{refused:?}"
        );
    }
    // A transfer coding wins over a length, and the connection is not used again.
    let (port, accepted) = raw_upstream(|_| (BOTH, Hangup::Open)).await?;
    not_kept(port, &accepted).await?;
    Ok(())
}

#[tokio::test]
async fn a_head_larger_than_the_limit_is_refused() -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let header = format!("x-filler: {}\r\n", "a".repeat(1000));
        for _ in 0..80 {
            if socket.write_all(header.as_bytes()).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let caller = Caller::new(port)?;
    let refused = caller.try_send().await;
    assert!(
        matches!(&refused, Err(UpstreamError::Reset(why)) if why.contains("64 KiB")),
        "{refused:?}"
    );
    Ok(())
}
