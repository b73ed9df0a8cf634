//! `sluice-bench`: Sluice's overhead against a plain pass-through proxy, on this machine.
//!
//! Build everything in release mode and run it from there:
//!   cargo build --release --bins && target/release/sluice-bench
//!
//! Three processes are measured the same way: a mock upstream (`sluice-bench upstream`), the
//! floor — a minimal hyper pass-through proxy (`sluice-bench floor`) — and `sluice-proxy` on a
//! LIVE route (with `sluice-control-plane` beside it) whose provider sets retries and timeouts
//! and whose key and model carry rate limits. The load comes from this process over
//! loopback. CPU per request is the proxy process's run time over the run (its threads'
//! schedstat), divided by the requests served. A second part measures the way users do ([`nginx`]): nginx
//! as the floor, `oha` as the load at 32 and 64 connections in alternating rounds, every
//! process's CPU apart, and the proxy's heap allocations per request from its own metrics.
//! One more proxy exports a trace of every request over OTLP/HTTP to a receiver in this
//! process, and another writes its access log to a file; each runs at 64 connections in every
//! round, for the cost of tracing and of the log.
//! A third part loads `BENCH_VIRTUAL_KEYS` keys (100 000) and times an admin change reaching
//! all `BENCH_PROXIES` proxies (8).
//!
//! `BENCH_HOLD=1` starts the stack, prints its addresses, pids and virtual key, and keeps it
//! serving (for profiling by hand) instead of measuring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod nginx;

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_e2e::{Captured, ControlPlaneBuilder, spawn_listening};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}"#;
const REQUEST: &str = r#"{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":16}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("upstream") => runtime.block_on(upstream()),
        Some("floor") => {
            runtime.block_on(floor(args.get(2).cloned().expect("floor UPSTREAM_ADDR")))
        }
        Some("raw-floor") => runtime.block_on(raw_floor(
            args.get(2).cloned().expect("raw-floor UPSTREAM_ADDR"),
        )),
        _ => runtime.block_on(bench()),
    }
}

// === the mock upstream ===

async fn upstream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    eprintln!(
        "bench-upstream listening addr={}",
        listener.local_addr().unwrap()
    );
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let streaming = mentions(&body, b"\"stream\":true");
                // `max_tokens: 20` asks for twenty content events back to back (22 with the
                // usage event and `[DONE]`), as a fast model streams.
                let burst = mentions(&body, b"\"max_tokens\":20");
                Ok::<_, Infallible>(if streaming && burst {
                    sse_burst()
                } else if streaming {
                    sse()
                } else {
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(
                            Full::new(Bytes::from_static(COMPLETION.as_bytes()))
                                .map_err(|n| match n {})
                                .boxed(),
                        )
                        .unwrap()
                })
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn mentions(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|window| window == needle)
}

/// A first chunk at once, the rest 20 ms apart: time-to-first-chunk shows buffering.
fn sse() -> Response<BoxBody> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(8);
    tokio::spawn(async move {
        let chunk = |text: &str| {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
            )
        };
        let _ = sender
            .send(Ok(Frame::data(Bytes::from(chunk("Hello")))))
            .await;
        for word in [" from", " the", " bench"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = sender.send(Ok(Frame::data(Bytes::from(chunk(word))))).await;
        }
        let usage = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16}}\n\ndata: [DONE]\n\n";
        let _ = sender
            .send(Ok(Frame::data(Bytes::from_static(usage.as_bytes()))))
            .await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver)).boxed())
        .unwrap()
}

/// Twenty content events at once, then the usage event and `[DONE]`.
fn sse_burst() -> Response<BoxBody> {
    let mut text = String::new();
    for n in 0..20 {
        text.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{n} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    text.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":20,\"total_tokens\":32}}\n\ndata: [DONE]\n\n");
    let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = text
        .split_inclusive("\n\n")
        .map(|event| Ok(Frame::data(Bytes::from(event.to_owned()))))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(tokio_stream::iter(frames)).boxed())
        .unwrap()
}

// === the floor: a plain pass-through proxy ===

async fn floor(upstream: String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    eprintln!(
        "bench-floor listening addr={}",
        listener.local_addr().unwrap()
    );
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let upstream = Arc::new(upstream);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let (mut parts, body) = request.into_parts();
                    parts.uri = format!("http://{upstream}/v1/chat/completions")
                        .parse()
                        .unwrap();
                    parts.headers.remove(http::header::HOST);
                    let response = match client.request(Request::from_parts(parts, body)).await {
                        Ok(response) => response.map(|b| b.boxed()),
                        Err(_) => Response::builder()
                            .status(StatusCode::BAD_GATEWAY)
                            .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
                            .unwrap(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// === a second floor: no hyper ===

/// The least a Rust proxy on tokio can do per request: each client connection pinned to one
/// upstream connection of its own, heads read with httparse, bodies by `content-length`
/// only, bytes relayed as they came. Not a proxy anyone could run (no chunked bodies, no
/// pooling, no limits); it shows what hyper's machinery costs on this machine, next to nginx.
async fn raw_floor(upstream: String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    eprintln!(
        "bench-raw-floor listening addr={}",
        listener.local_addr().unwrap()
    );
    let upstream = Arc::new(upstream);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _ = raw_connection(stream, &upstream).await;
        });
    }
}

async fn raw_connection(mut client: tokio::net::TcpStream, upstream: &str) -> std::io::Result<()> {
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    let mut upstream = tokio::net::TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    let mut from_client = bytes::BytesMut::with_capacity(16 * 1024);
    let mut from_upstream = bytes::BytesMut::with_capacity(16 * 1024);
    loop {
        let Some(request) = read_message(&mut client, &mut from_client, true).await? else {
            return Ok(());
        };
        upstream.write_all(&from_client[..request]).await?;
        from_client.advance(request);
        let Some(response) = read_message(&mut upstream, &mut from_upstream, false).await? else {
            return Ok(());
        };
        client.write_all(&from_upstream[..response]).await?;
        from_upstream.advance(response);
    }
}

/// Reads until `buffer` starts with one whole message; its length, or `None` at the end.
async fn read_message(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut bytes::BytesMut,
    request: bool,
) -> std::io::Result<Option<usize>> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = if request {
            let mut head = httparse::Request::new(&mut headers);
            match head.parse(buffer).map_err(std::io::Error::other)? {
                httparse::Status::Complete(n) => Some((n, content_length(head.headers))),
                httparse::Status::Partial => None,
            }
        } else {
            let mut head = httparse::Response::new(&mut headers);
            match head.parse(buffer).map_err(std::io::Error::other)? {
                httparse::Status::Complete(n) => Some((n, content_length(head.headers))),
                httparse::Status::Partial => None,
            }
        };
        if let Some((head, body)) = parsed
            && buffer.len() >= head + body
        {
            return Ok(Some(head + body));
        }
        if stream.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

// === measurements ===

struct Spawned {
    child: Child,
    addr: String,
    _output: Captured,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_self(args: &[&str], marker: &str) -> Spawned {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, addr, output) = spawn_listening(command, marker);
    Spawned {
        child,
        addr,
        _output: output,
    }
}

/// The CPU a process has run on, to the nanosecond: the sum of its threads' run time in
/// /proc/PID/task/*/schedstat. `/proc/PID/stat` counts 10 ms ticks, coarser than what one
/// round of streams costs the control plane (a few ms), which read 0, 5 or 10 µs per stream
/// by chance. A thread that has exited takes its time with it: Sluice's and nginx's threads
/// live as long as their process; where schedstat is missing, the ticks are used.
fn cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let run_times: Vec<u64> = threads
        .filter_map(|thread| {
            let path = thread.ok()?.path().join("schedstat");
            std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    if run_times.is_empty() {
        return cpu_ticks(pid);
    }
    Duration::from_nanos(run_times.iter().sum())
}

/// User + system CPU of a process in clock ticks of 10 ms, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Clone, Copy)]
struct Run {
    served: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
    throughput: f64,
    cpu_per_request: Duration,
    /// The load generator's and the upstream's CPU per request (full-speed runs only): the
    /// same work on both sides, so it shows how far the proxies' own CPU moves throughput.
    shared_cpu_per_request: Duration,
}

async fn one(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: &str,
    body: &'static str,
) -> Result<(), ()> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.map_err(|_| ())?;
    let ok = response.status().is_success();
    response.into_body().collect().await.map_err(|_| ())?;
    if ok { Ok(()) } else { Err(()) }
}

/// Open loop: requests start on schedule whatever earlier ones are doing; latency counts from
/// the scheduled start, so a stall is not hidden (no coordinated omission).
async fn fixed_rate(url: &str, key: &str, pid: u32, rate: u64, duration: Duration) -> Run {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(2048)
        .build_http();
    let total = rate * duration.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval * n as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let (url, key) = (url.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let result = one(&client, &url, &key, REQUEST).await;
            (result, scheduled.elapsed())
        }));
    }
    collect(tasks, started, cpu_before, pid).await
}

/// Closed loop: `connections` workers send back to back for `duration`. `shared` are the
/// processes both sides use (this one and the upstream), whose CPU is reported apart.
async fn full_speed(
    url: &str,
    key: &str,
    pid: u32,
    shared: &[u32],
    connections: usize,
    duration: Duration,
) -> Run {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(2048)
        .build_http();
    let shared_cpu = || shared.iter().map(|&pid| cpu_time(pid)).sum::<Duration>();
    let shared_before = shared_cpu();
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let (url, key) = (url.to_owned(), key.to_owned());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while started.elapsed() < duration {
                let begun = Instant::now();
                let result = one(&client, &url, &key, REQUEST).await;
                results.push((result, begun.elapsed()));
            }
            results
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for worker in workers {
        for (result, latency) in worker.await.unwrap() {
            match result {
                Ok(()) => latencies.push(latency),
                Err(()) => failed += 1,
            }
        }
    }
    let mut run = summarize(
        latencies,
        failed,
        started.elapsed(),
        cpu_time(pid) - cpu_before,
    );
    run.shared_cpu_per_request = (shared_cpu() - shared_before) / run.served.max(1) as u32;
    run
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Result<(), ()>, Duration)>>,
    started: Instant,
    cpu_before: Duration,
    pid: u32,
) -> Run {
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            (Ok(()), latency) => latencies.push(latency),
            (Err(()), _) => failed += 1,
        }
    }
    summarize(
        latencies,
        failed,
        started.elapsed(),
        cpu_time(pid) - cpu_before,
    )
}

/// Each figure's median over the rounds; counts are summed.
fn median(runs: &[Run]) -> Run {
    let pick = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let seconds = |f: fn(&Run) -> Duration| {
        Duration::from_secs_f64(pick(runs.iter().map(|r| f(r).as_secs_f64()).collect()))
    };
    Run {
        served: runs.iter().map(|r| r.served).sum(),
        failed: runs.iter().map(|r| r.failed).sum(),
        p50: seconds(|r| r.p50),
        p99: seconds(|r| r.p99),
        throughput: pick(runs.iter().map(|r| r.throughput).collect()),
        cpu_per_request: seconds(|r| r.cpu_per_request),
        shared_cpu_per_request: seconds(|r| r.shared_cpu_per_request),
    }
}

fn summarize(mut latencies: Vec<Duration>, failed: usize, elapsed: Duration, cpu: Duration) -> Run {
    latencies.sort();
    let served = latencies.len();
    Run {
        served,
        failed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        throughput: served as f64 / elapsed.as_secs_f64(),
        cpu_per_request: cpu / served.max(1) as u32,
        shared_cpu_per_request: Duration::ZERO,
    }
}

/// Streams per side in each round.
const STREAMS: usize = 2000;

/// One round of 22-event streams: the median first chunk and end of each side, and CPU per
/// stream of nginx, the proxy and the control plane.
struct StreamRound {
    direct: (Duration, Duration),
    nginx: (Duration, Duration),
    sluice: (Duration, Duration),
    nginx_cpu: Duration,
    sluice_cpu: Duration,
    cp_cpu: Duration,
}

/// The median time to a 22-event stream's first chunk and to its end, over `samples` streams
/// one after another.
async fn stream_times(url: &str, key: &str, samples: usize) -> (Duration, Duration) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":20}"#;
    let (mut firsts, mut ends) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        let started = Instant::now();
        let request = Request::post(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let (first, events) = read_events(response, started).await;
        assert_eq!(events, 22, "{url} streamed {events} events, not 22");
        firsts.push(first);
        ends.push(started.elapsed());
    }
    firsts.sort();
    ends.sort();
    (percentile(&firsts, 0.5), percentile(&ends, 0.5))
}

/// Reads a streamed answer to its end: when its first chunk came and how many `data:` events
/// it held. A benchmark upstream that answers whole would otherwise pass for a stream.
async fn read_events(response: Response<Incoming>, started: Instant) -> (Duration, usize) {
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|value| value.to_str().ok()),
        Some("text/event-stream"),
        "not a stream: {:?}",
        response.status()
    );
    let mut body = response.into_body();
    let (mut first, mut text) = (None, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first.get_or_insert_with(|| started.elapsed());
            text.extend_from_slice(&data);
        }
    }
    let events = text
        .split(|&byte| byte == b'\n')
        .filter(|line| line.starts_with(b"data:"))
        .count();
    (first.expect("a stream with no data"), events)
}

async fn first_chunk(url: &str, key: &str, samples: usize) -> Duration {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body =
        r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello."}]}"#;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let request = Request::post(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let (first, events) = read_events(response, started).await;
        assert_eq!(events, 6, "{url} streamed {events} events, not 6");
        times.push(first);
    }
    times.sort();
    percentile(&times, 0.5)
}

/// On a CPU-bound box, full-speed throughput goes roughly as one over the CPU that all
/// processes spend per request, so the ratio of the two sides' totals predicts the throughput
/// ratio (to a few hundredths: idle moments blur it).
fn cpu_budget(floor: &Run, sluice: &Run, control_plane: Duration) {
    let floor_total = floor.shared_cpu_per_request + floor.cpu_per_request;
    let sluice_total = sluice.shared_cpu_per_request + sluice.cpu_per_request + control_plane;
    println!();
    println!("CPU per request at full speed, every process on the two cores (medians):");
    println!(
        "  floor side:  load generator + upstream {} + floor proxy {} = {}",
        us(floor.shared_cpu_per_request),
        us(floor.cpu_per_request),
        us(floor_total)
    );
    println!(
        "  Sluice side: load generator + upstream {} + sluice-proxy {} + control plane {} = {}",
        us(sluice.shared_cpu_per_request),
        us(sluice.cpu_per_request),
        us(control_plane),
        us(sluice_total)
    );
    println!(
        "  throughput ratio these totals predict: {:.2}; without the control plane's share: {:.2}",
        floor_total.as_secs_f64() / sluice_total.as_secs_f64(),
        floor_total.as_secs_f64() / (sluice_total - control_plane).as_secs_f64()
    );
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn bench() {
    let duration = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let keys: usize = std::env::var("BENCH_VIRTUAL_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let proxy_count: usize = std::env::var("BENCH_PROXIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(8);

    let upstream = spawn_self(&["upstream"], "bench-upstream listening");
    let floor = spawn_self(&["floor", &upstream.addr], "bench-floor listening");

    // Sluice: a control plane and its proxies (8 unless BENCH_PROXIES says otherwise) on a
    // LIVE route to the same upstream; the first one takes the load.
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_LOG", "warn,sluice_control_plane::server=info")
        .start();
    cp.ctl(&["org", "create", "bench"]).ok();
    cp.ctl(&[
        "provider",
        "create",
        "bench/up",
        "--type",
        "openai",
        "--base-url",
        &format!("http://{}/v1", upstream.addr),
        "--allow-private-network",
    ])
    .ok();
    cp.ctl_stdin(
        &["provider-key", "add", "bench/up/k"],
        "sk-bench-upstream-key",
    )
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "bench/bench",
        "--deployment",
        "up:bench-model",
        "--input-price",
        "150000",
        "--output-price",
        "600000",
    ])
    .ok();
    cp.ctl(&["project", "create", "bench/p", "--default-model", "bench"])
        .ok();
    let key = cp.virtual_key("bench/p/load", &[]);
    cp.ctl(&["project", "set-posture", "bench/p", "live"]).ok();
    // What a production route carries: retries and timeouts set on its provider, and rate
    // limits on its key and its model, so every request takes its rate leases (set high
    // enough never to refuse: the cost of checking them is what is measured).
    cp.ctl(&[
        "provider",
        "update",
        "bench/up",
        "--max-attempts",
        "3",
        "--attempts-per-key",
        "2",
        "--first-byte-timeout-ms",
        "30000",
        "--total-timeout-ms",
        "120000",
    ])
    .ok();
    for target in [&["bench/p/load"][..], &["bench", "--model", "bench"]] {
        let mut args = vec!["rate-limit", "create"];
        args.extend_from_slice(target);
        args.extend_from_slice(&["--requests", "1000000000", "--tokens", "1000000000000"]);
        cp.ctl(&args).ok();
    }
    let token = cp.data_plane_token("bench-proxies");
    let proxy_dirs: Vec<tempfile::TempDir> = (0..proxy_count)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let proxies: Vec<sluice_e2e::proxy::Proxy> = proxy_dirs
        .iter()
        .map(|dir| {
            // nginx runs with `access_log off`; so do these. One proxy below writes its access
            // log, as a production proxy does by default, to measure what that costs.
            let mut builder = sluice_e2e::proxy::ProxyBuilder::new(dir.path(), &cp.url(), &token)
                .env("SLUICE_PROXY_LOG", "warn,sluice_proxy=info")
                .env("SLUICE_PROXY_ACCESS_LOG", "false");
            // The test harness flushes usage every 100 ms; the benchmark runs the product's
            // defaults unless told otherwise, so the usage pipeline's settings can be compared.
            for (name, default) in [
                ("SLUICE_PROXY_USAGE_BATCH_SIZE", "5000"),
                ("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "250"),
            ] {
                let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
                builder = builder.env(name, &value);
            }
            builder.start()
        })
        .collect();
    let http = sluice_e2e::proxy::Http::new();
    let version = cp.ctl(&["-o", "json", "fleet"]).json()["config_version"]
        .as_u64()
        .unwrap();
    for proxy in &proxies {
        proxy.wait_for_version(&http, version).await;
    }
    // One more proxy, exporting a trace of every request (the default sampler,
    // `parentbased_always_on`) over OTLP/HTTP (protobuf) to a receiver in this process that
    // counts the spans where they lie, its access log off like the others': the cost of
    // tracing, beside the proxy without it. And one that writes its access log to a file (as
    // a production proxy does by default) and traces nothing: the cost of the log.
    let receiver = sluice_e2e::otlp_receiver::OtlpReceiver::start_counting().await;
    let traced_dir = tempfile::tempdir().unwrap();
    let traced = sluice_e2e::proxy::ProxyBuilder::new(traced_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_LOG", "warn,sluice_proxy=info")
        .env("SLUICE_PROXY_ACCESS_LOG", "false")
        .env("SLUICE_PROXY_USAGE_BATCH_SIZE", "5000")
        .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "250")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url)
        .start();
    let logged_dir = tempfile::tempdir().unwrap();
    let access_log = logged_dir.path().join("access.log");
    let logged = sluice_e2e::proxy::ProxyBuilder::new(logged_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_LOG", "warn,sluice_proxy=info")
        .env("SLUICE_PROXY_ACCESS_LOG_FILE", access_log.to_str().unwrap())
        .env("SLUICE_PROXY_USAGE_BATCH_SIZE", "5000")
        .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "250")
        .start();
    logged.wait_for_version(&http, version).await;
    traced.wait_for_version(&http, version).await;
    let sluice = &proxies[0];
    let floor_url = format!("http://{}/v1/chat/completions", floor.addr);
    let sluice_url = sluice.url("/v1/chat/completions");
    let floor_pid = floor.child.id();
    let sluice_pid = sluice.pid();
    // Serving its snapshot, before any request.
    let sluice_idle_rss = rss_mib(sluice_pid);
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling by hand: the stack stays up, serving, until this process is stopped.
        let raw = spawn_self(&["raw-floor", &upstream.addr], "bench-raw-floor listening");
        println!("floor {floor_url} pid {floor_pid}");
        println!(
            "raw-floor http://{}/v1/chat/completions pid {}",
            raw.addr,
            raw.child.id()
        );
        println!("sluice {sluice_url} pid {sluice_pid}");
        println!("control plane {} pid {}", cp.url(), cp.pid());
        println!("data-plane token {token}");
        println!("virtual key {key}");
        println!("body {REQUEST}");
        println!("otlp {}", receiver.http_url);
        std::future::pending::<()>().await;
    }

    // Warm both up.
    let shared = [std::process::id(), upstream.child.id()];
    full_speed(
        &floor_url,
        &key,
        floor_pid,
        &shared,
        8,
        Duration::from_secs(1),
    )
    .await;
    full_speed(
        &sluice_url,
        &key,
        sluice_pid,
        &shared,
        8,
        Duration::from_secs(1),
    )
    .await;

    println!(
        "Sluice benchmark — {} cores, loopback, {duration:?} per run",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    // Floor and Sluice alternate for several rounds and each figure is the median over the
    // rounds, so drift in this shared machine's speed hits both sides alike.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (mut floor_fixed, mut sluice_fixed, mut floor_full, mut sluice_full) =
        (vec![], vec![], vec![], vec![]);
    let mut cp_cpu = Duration::ZERO;
    let mut cp_full_speed = Vec::new();
    let mut throughput_ratios = Vec::new();
    for _ in 0..rounds {
        floor_fixed.push(fixed_rate(&floor_url, &key, floor_pid, rate, duration).await);
        let before = cpu_time(cp.pid());
        sluice_fixed.push(fixed_rate(&sluice_url, &key, sluice_pid, rate, duration).await);
        cp_cpu += cpu_time(cp.pid()) - before;
        let floor_run =
            full_speed(&floor_url, &key, floor_pid, &shared, connections, duration).await;
        let before = cpu_time(cp.pid());
        let sluice_run = full_speed(
            &sluice_url,
            &key,
            sluice_pid,
            &shared,
            connections,
            duration,
        )
        .await;
        let cp_spent = cpu_time(cp.pid()) - before;
        cp_cpu += cp_spent;
        cp_full_speed.push(cp_spent / sluice_run.served.max(1) as u32);
        throughput_ratios.push(sluice_run.throughput / floor_run.throughput);
        floor_full.push(floor_run);
        sluice_full.push(sluice_run);
    }
    let (floor_fixed, sluice_fixed) = (median(&floor_fixed), median(&sluice_fixed));
    let (floor_full, sluice_full) = (median(&floor_full), median(&sluice_full));
    let floor_ttfc = first_chunk(&floor_url, &key, 200).await;
    let sluice_ttfc = first_chunk(&sluice_url, &key, 200).await;

    println!("{rounds} alternating rounds; medians over the rounds");
    println!();
    println!("| measure | floor (plain hyper proxy) | Sluice (LIVE route) | Sluice / floor |");
    println!("|---|---|---|---|");
    println!(
        "| p50 latency at {rate} req/s | {} | {} | {:.2} |",
        ms(floor_fixed.p50),
        ms(sluice_fixed.p50),
        sluice_fixed.p50.as_secs_f64() / floor_fixed.p50.as_secs_f64()
    );
    println!(
        "| p99 latency at {rate} req/s | {} | {} | {:.2} |",
        ms(floor_fixed.p99),
        ms(sluice_fixed.p99),
        sluice_fixed.p99.as_secs_f64() / floor_fixed.p99.as_secs_f64()
    );
    println!(
        "| CPU per request at {rate} req/s | {} | {} | {:.2} |",
        us(floor_fixed.cpu_per_request),
        us(sluice_fixed.cpu_per_request),
        sluice_fixed.cpu_per_request.as_secs_f64() / floor_fixed.cpu_per_request.as_secs_f64()
    );
    println!(
        "| throughput, {connections} connections | {:.0} req/s | {:.0} req/s | {:.2} |",
        floor_full.throughput,
        sluice_full.throughput,
        sluice_full.throughput / floor_full.throughput
    );
    println!(
        "| p50 / p99 latency at full speed | {} / {} | {} / {} | {:.2} / {:.2} |",
        ms(floor_full.p50),
        ms(floor_full.p99),
        ms(sluice_full.p50),
        ms(sluice_full.p99),
        sluice_full.p50.as_secs_f64() / floor_full.p50.as_secs_f64(),
        sluice_full.p99.as_secs_f64() / floor_full.p99.as_secs_f64()
    );
    println!(
        "| CPU per request at full speed | {} | {} | {:.2} |",
        us(floor_full.cpu_per_request),
        us(sluice_full.cpu_per_request),
        sluice_full.cpu_per_request.as_secs_f64() / floor_full.cpu_per_request.as_secs_f64()
    );
    println!(
        "| stream time to first chunk (median) | {} | {} | +{} |",
        ms(floor_ttfc),
        ms(sluice_ttfc),
        ms(sluice_ttfc.saturating_sub(floor_ttfc))
    );
    println!(
        "| proxy RSS after load | {:.1} MiB | {:.1} MiB | |",
        rss_mib(floor_pid),
        rss_mib(sluice_pid)
    );
    let failures =
        floor_fixed.failed + sluice_fixed.failed + floor_full.failed + sluice_full.failed;
    println!(
        "| failed requests (all runs) | {} | {} | |",
        floor_fixed.failed + floor_full.failed,
        sluice_fixed.failed + sluice_full.failed
    );
    println!();
    println!(
        "served: floor {} + {}, Sluice {} + {}",
        floor_fixed.served, floor_full.served, sluice_fixed.served, sluice_full.served
    );
    println!(
        "full-speed throughput ratio per round: {}",
        throughput_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "control plane on the same 2 cores, committing the Sluice runs' usage: {} of CPU ({} per request)",
        ms(cp_cpu),
        us(cp_cpu / (sluice_fixed.served + sluice_full.served).max(1) as u32)
    );
    cp_full_speed.sort();
    cpu_budget(
        &floor_full,
        &sluice_full,
        cp_full_speed[cp_full_speed.len() / 2],
    );

    match nginx::Tools::find() {
        Ok(tools) => {
            let raw = spawn_self(&["raw-floor", &upstream.addr], "bench-raw-floor listening");
            against_nginx(
                &tools,
                &upstream.addr,
                (&raw.addr, raw.child.id()),
                &sluice_url,
                &sluice.url("/metrics"),
                &[sluice_pid],
                Traced {
                    url: &traced.url("/v1/chat/completions"),
                    metrics: &traced.url("/metrics"),
                    pid: traced.pid(),
                    receiver: &receiver,
                },
                (&logged.url("/v1/chat/completions"), logged.pid()),
                cp.pid(),
                &key,
                duration,
                rate,
                rounds,
                sluice_idle_rss,
            )
            .await
        }
        Err(missing) => println!("\n(no comparison with nginx: {missing})"),
    }

    // Config propagation with many virtual keys in the snapshot.
    let created_at = Instant::now();
    create_virtual_keys(&cp.url(), &cp.admin_token, keys).await;
    println!();
    println!(
        "created {keys} virtual keys through the admin API in {:.1} s",
        created_at.elapsed().as_secs_f64()
    );
    let version = cp.ctl(&["-o", "json", "fleet"]).json()["config_version"]
        .as_u64()
        .unwrap();
    for proxy in &proxies {
        proxy.wait_for_version(&http, version).await;
    }
    let mut samples = Vec::new();
    for n in 0..5 {
        let changed = Instant::now();
        cp.ctl(&[
            "org",
            "update",
            "bench",
            "--display-name",
            &format!("run {n}"),
        ])
        .ok();
        let version = version + 1 + n;
        for proxy in &proxies {
            loop {
                let held = http
                    .get(&proxy.url("/readyz"), None)
                    .await
                    .map(|r| r.json()["config_version"].as_u64().unwrap_or(0))
                    .unwrap_or(0);
                if held >= version {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        samples.push(changed.elapsed());
    }
    samples.sort();
    println!(
        "admin change → all {proxy_count} proxies serving it, {keys} virtual keys loaded: median {} (max {}; includes one sluicectl process start)",
        ms(percentile(&samples, 0.5)),
        ms(*samples.last().unwrap())
    );
    let mut rss = Vec::new();
    for proxy in &proxies {
        let heap = heap_allocated(&http, &proxy.url("/metrics")).await / (1024.0 * 1024.0);
        rss.push(format!(
            "{:.1} ({heap:.1} on the heap)",
            rss_mib(proxy.pid())
        ));
    }
    println!(
        "proxy RSS with {keys} virtual keys (MiB; the first took the load): {}",
        rss.join(", ")
    );
    if failures > 0 {
        println!("WARNING: {failures} requests failed");
    }
}

/// CPU of several processes together.
fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|pid| cpu_time(*pid)).sum()
}

/// What one side's full-speed oha run served and cost, per request.
#[derive(Clone, Copy, Default)]
struct Served {
    requests_per_second: f64,
    proxy_cpu: Duration,
    control_plane_cpu: Duration,
    allocations: f64,
}

fn median_of<T: Copy + PartialOrd>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

/// One of the proxy's metrics, read from its `/metrics`.
async fn proxy_metric(http: &sluice_e2e::proxy::Http, metrics_url: &str, name: &str) -> f64 {
    let text = http
        .get(metrics_url, None)
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The proxy's heap allocations so far (jemalloc's counters).
async fn heap_allocations(http: &sluice_e2e::proxy::Http, metrics_url: &str) -> f64 {
    proxy_metric(http, metrics_url, "sluice_heap_allocations_total").await
}

/// The proxy's heap bytes in use.
async fn heap_allocated(http: &sluice_e2e::proxy::Http, metrics_url: &str) -> f64 {
    proxy_metric(http, metrics_url, "sluice_heap_allocated_bytes").await
}

/// Where a side listens and which processes are its own.
struct Side<'a> {
    url: &'a str,
    pids: &'a [u32],
    /// The control plane beside Sluice's proxy, and the proxy's metrics.
    sluice: Option<(u32, &'a str)>,
}

/// Sluice against nginx with oha at 32 and 64 connections, in alternating rounds: throughput,
/// CPU per request of each process, heap allocations per request, latency added at a fixed
/// rate over calling the upstream directly, stream first chunk and completion, RSS.
#[allow(clippy::too_many_arguments)]
async fn against_nginx(
    tools: &nginx::Tools,
    upstream: &str,
    raw_floor: (&str, u32),
    sluice_url: &str,
    sluice_metrics: &str,
    sluice_pids: &[u32],
    traced: Traced<'_>,
    logged: (&str, u32),
    cp_pid: u32,
    key: &str,
    duration: Duration,
    rate: u64,
    rounds: usize,
    sluice_idle_rss: f64,
) {
    const CONNECTIONS: [usize; 2] = [32, 64];
    let nginx = nginx::Nginx::start(tools, upstream);
    let nginx_pids = nginx.pids();
    let nginx_idle_rss: f64 = nginx_pids.iter().map(|pid| rss_mib(*pid)).sum();
    let direct_url = format!("http://{upstream}/v1/chat/completions");
    let nginx_url = format!("http://{}/v1/chat/completions", nginx.addr);
    let http = sluice_e2e::proxy::Http::new();
    let run = |url: String, connections: usize, rate: Option<u64>| {
        let key = key.to_owned();
        let tools = tools.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                nginx::oha(&tools, &url, &key, REQUEST, connections, duration, rate)
            })
            .await
            .unwrap()
        }
    };
    let full_speed = async |side: &Side<'_>, connections: usize| {
        let before = cpu_of(side.pids);
        let cp_before = side.sluice.map(|(cp, _)| cpu_time(cp));
        let allocations_before = match side.sluice {
            Some((_, metrics)) => heap_allocations(&http, metrics).await,
            None => f64::NAN,
        };
        let load = run(side.url.to_owned(), connections, None).await;
        let served = load.served.max(1);
        let per = |cpu: Duration| cpu / served as u32;
        Served {
            requests_per_second: load.requests_per_second,
            proxy_cpu: per(cpu_of(side.pids) - before),
            control_plane_cpu: match (side.sluice, cp_before) {
                (Some((cp, _)), Some(before)) => per(cpu_time(cp) - before),
                _ => Duration::ZERO,
            },
            allocations: match side.sluice {
                Some((_, metrics)) => {
                    (heap_allocations(&http, metrics).await - allocations_before) / served as f64
                }
                None => f64::NAN,
            },
        }
    };
    let nginx_side = Side {
        url: &nginx_url,
        pids: &nginx_pids,
        sluice: None,
    };
    let sluice_side = Side {
        url: sluice_url,
        pids: sluice_pids,
        sluice: Some((cp_pid, sluice_metrics)),
    };
    let traced_pids = [traced.pid];
    let traced_side = Side {
        url: traced.url,
        pids: &traced_pids,
        sluice: Some((cp_pid, traced.metrics)),
    };
    let mut traced_full = Vec::new();
    let logged_pids = [logged.1];
    let logged_side = Side {
        url: logged.0,
        pids: &logged_pids,
        sluice: None,
    };
    let mut logged_full = Vec::new();
    let raw_url = format!("http://{}/v1/chat/completions", raw_floor.0);
    let raw_pids = [raw_floor.1];
    let raw_side = Side {
        url: &raw_url,
        pids: &raw_pids,
        sluice: None,
    };
    let mut raw_full = Vec::new();
    run(nginx_url.clone(), 8, None).await;
    run(sluice_url.to_owned(), 8, None).await;
    run(raw_url.clone(), 8, None).await;
    run(traced.url.to_owned(), 8, None).await;
    run(logged.0.to_owned(), 8, None).await;
    // [connections][round], each side alternating with the other inside a round.
    let mut nginx_full = vec![Vec::new(); CONNECTIONS.len()];
    let mut sluice_full = vec![Vec::new(); CONNECTIONS.len()];
    let (mut direct_fixed, mut nginx_fixed, mut sluice_fixed) = (vec![], vec![], vec![]);
    // Streams one at a time, in every round like the rest: one sample per side moved by
    // ±30 % between runs on these shared cores.
    let mut streams: Vec<StreamRound> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for (index, connections) in CONNECTIONS.into_iter().enumerate() {
            nginx_full[index].push(full_speed(&nginx_side, connections).await);
            sluice_full[index].push(full_speed(&sluice_side, connections).await);
        }
        raw_full.push(full_speed(&raw_side, 64).await);
        traced_full.push(full_speed(&traced_side, 64).await);
        logged_full.push(full_speed(&logged_side, 64).await);
        direct_fixed.push(run(direct_url.clone(), 64, Some(rate)).await);
        nginx_fixed.push(run(nginx_url.clone(), 64, Some(rate)).await);
        sluice_fixed.push(run(sluice_url.to_owned(), 64, Some(rate)).await);
        let direct = stream_times(&direct_url, key, STREAMS).await;
        let before = cpu_of(&nginx_pids);
        let nginx = stream_times(&nginx_url, key, STREAMS).await;
        let nginx_cpu = (cpu_of(&nginx_pids) - before) / STREAMS as u32;
        let (before, cp_before) = (cpu_of(sluice_pids), cpu_time(cp_pid));
        let sluice = stream_times(sluice_url, key, STREAMS).await;
        streams.push(StreamRound {
            direct,
            nginx,
            sluice,
            nginx_cpu,
            sluice_cpu: (cpu_of(sluice_pids) - before) / STREAMS as u32,
            cp_cpu: (cpu_time(cp_pid) - cp_before) / STREAMS as u32,
        });
    }
    let stream_median = |at: fn(&StreamRound) -> Duration| {
        median_of(&mut streams.iter().map(at).collect::<Vec<_>>())
    };
    let direct_stream = (stream_median(|r| r.direct.0), stream_median(|r| r.direct.1));
    let nginx_stream = (stream_median(|r| r.nginx.0), stream_median(|r| r.nginx.1));
    let sluice_stream = (stream_median(|r| r.sluice.0), stream_median(|r| r.sluice.1));
    let nginx_stream_cpu = stream_median(|r| r.nginx_cpu);
    let sluice_stream_cpu = stream_median(|r| r.sluice_cpu);
    let cp_stream_cpu = stream_median(|r| r.cp_cpu);
    let added_us =
        |side: Duration, direct: Duration| (side.as_secs_f64() - direct.as_secs_f64()) * 1e6;
    let nginx_rss: f64 = nginx_pids.iter().map(|pid| rss_mib(*pid)).sum();
    // The median of each latency over the rounds, added to the median direct call's.
    let latency = |runs: &[nginx::Load], at: fn(&nginx::Load) -> Duration| {
        median_of(&mut runs.iter().map(at).collect::<Vec<_>>())
    };
    let added = |runs: &[nginx::Load], at: fn(&nginx::Load) -> Duration| {
        added_us(latency(runs, at), latency(&direct_fixed, at))
    };

    println!();
    println!(
        "Against nginx ({} workers, keep-alive, proxy_buffering off), loaded by oha, {duration:?} per run, {rounds} alternating rounds, medians over the rounds:",
        nginx_pids.len().saturating_sub(1)
    );
    println!();
    println!("| measure | nginx | Sluice | Sluice / nginx |");
    println!("|---|---|---|---|");
    for (index, connections) in CONNECTIONS.into_iter().enumerate() {
        let (nginx_runs, sluice_runs) = (&nginx_full[index], &sluice_full[index]);
        let nginx_rps = median_of(
            &mut nginx_runs
                .iter()
                .map(|r| r.requests_per_second)
                .collect::<Vec<_>>(),
        );
        let sluice_rps = median_of(
            &mut sluice_runs
                .iter()
                .map(|r| r.requests_per_second)
                .collect::<Vec<_>>(),
        );
        let nginx_cpu = median_of(&mut nginx_runs.iter().map(|r| r.proxy_cpu).collect::<Vec<_>>());
        let proxy_cpu = median_of(&mut sluice_runs.iter().map(|r| r.proxy_cpu).collect::<Vec<_>>());
        let cp_cpu = median_of(
            &mut sluice_runs
                .iter()
                .map(|r| r.control_plane_cpu)
                .collect::<Vec<_>>(),
        );
        println!(
            "| throughput, {connections} connections | {nginx_rps:.0} req/s | {sluice_rps:.0} req/s | {:.2} |",
            sluice_rps / nginx_rps.max(1.0)
        );
        println!(
            "| CPU per request, {connections} connections | {} | {} proxy + {} control plane | {:.2} |",
            us(nginx_cpu),
            us(proxy_cpu),
            us(cp_cpu),
            (proxy_cpu + cp_cpu).as_secs_f64() / nginx_cpu.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "| p50 / p99 added at {rate} req/s, 64 connections (direct: {} / {}) | {:+.0} / {:+.0} µs | {:+.0} / {:+.0} µs | {:.2} (p50) |",
        ms(latency(&direct_fixed, |l| l.p50)),
        ms(latency(&direct_fixed, |l| l.p99)),
        added(&nginx_fixed, |l| l.p50),
        added(&nginx_fixed, |l| l.p99),
        added(&sluice_fixed, |l| l.p50),
        added(&sluice_fixed, |l| l.p99),
        added(&sluice_fixed, |l| l.p50) / added(&nginx_fixed, |l| l.p50).max(1.0),
    );
    println!(
        "| stream (22 events) first chunk / complete, added to direct ({} / {}) | {:+.0} / {:+.0} µs | {:+.0} / {:+.0} µs | |",
        ms(direct_stream.0),
        ms(direct_stream.1),
        added_us(nginx_stream.0, direct_stream.0),
        added_us(nginx_stream.1, direct_stream.1),
        added_us(sluice_stream.0, direct_stream.0),
        added_us(sluice_stream.1, direct_stream.1),
    );
    println!(
        "| CPU per stream (22 events) | {} | {} proxy + {} control plane | {:.2} |",
        us(nginx_stream_cpu),
        us(sluice_stream_cpu),
        us(cp_stream_cpu),
        (sluice_stream_cpu + cp_stream_cpu).as_secs_f64()
            / nginx_stream_cpu.as_secs_f64().max(1e-9)
    );
    let allocations = median_of(
        &mut sluice_full[CONNECTIONS.len() - 1]
            .iter()
            .map(|r| r.allocations)
            .collect::<Vec<_>>(),
    );
    println!("| heap allocations per request, 64 connections | | {allocations:.1} | |");
    println!(
        "| RSS idle → after load | {nginx_idle_rss:.1} → {nginx_rss:.1} MiB (all processes) | {sluice_idle_rss:.1} → {:.1} MiB (proxy) | |",
        sluice_pids.iter().map(|pid| rss_mib(*pid)).sum::<f64>()
    );
    println!();
    // Each round measures both sides back to back, so a round's ratio is free of the drift
    // in this machine's speed between rounds that the medians of each side carry.
    for (index, connections) in CONNECTIONS.into_iter().enumerate() {
        let (mut throughputs, mut cpus): (Vec<f64>, Vec<f64>) = nginx_full[index]
            .iter()
            .zip(&sluice_full[index])
            .map(|(n, s)| {
                (
                    s.requests_per_second / n.requests_per_second.max(1.0),
                    (s.proxy_cpu + s.control_plane_cpu).as_secs_f64()
                        / n.proxy_cpu.as_secs_f64().max(1e-9),
                )
            })
            .unzip();
        let ratios: Vec<String> = throughputs
            .iter()
            .zip(&cpus)
            .map(|(throughput, cpu)| format!("{throughput:.2} / {cpu:.2}"))
            .collect();
        println!(
            "per round at {connections} connections, throughput / CPU per request against nginx: {} (median round: {:.2} / {:.2})",
            ratios.join(", "),
            median_of(&mut throughputs),
            median_of(&mut cpus)
        );
    }
    let mut stream_ratios: Vec<f64> = streams
        .iter()
        .map(|r| (r.sluice_cpu + r.cp_cpu).as_secs_f64() / r.nginx_cpu.as_secs_f64().max(1e-9))
        .collect();
    let listed: Vec<String> = stream_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "per round, CPU per stream against nginx: {} (median round: {:.2})",
        listed.join(", "),
        median_of(&mut stream_ratios)
    );
    // What hyper's machinery costs here: the same relay without it (see `raw_floor`).
    let raw_rps = median_of(
        &mut raw_full
            .iter()
            .map(|r| r.requests_per_second)
            .collect::<Vec<_>>(),
    );
    let raw_cpu = median_of(&mut raw_full.iter().map(|r| r.proxy_cpu).collect::<Vec<_>>());
    let nginx_cpu = median_of(
        &mut nginx_full[1]
            .iter()
            .map(|r| r.proxy_cpu)
            .collect::<Vec<_>>(),
    );
    println!(
        "no-hyper floor (tokio + httparse, one upstream connection per client connection), 64 connections: {raw_rps:.0} req/s, {} per request ({:.2}× nginx)",
        us(raw_cpu),
        raw_cpu.as_secs_f64() / nginx_cpu.as_secs_f64().max(1e-9)
    );
    let median = |runs: &[Served], at: fn(&Served) -> f64| {
        median_of(&mut runs.iter().map(at).collect::<Vec<_>>())
    };
    let rps = |r: &Served| r.requests_per_second;
    let proxy_cpu = |r: &Served| r.proxy_cpu.as_secs_f64();
    let traced_rps = median(&traced_full, rps);
    let traced_proxy = median(&traced_full, proxy_cpu);
    let traced_cp = median(&traced_full, |r| r.control_plane_cpu.as_secs_f64());
    let untraced_proxy = median(&sluice_full[CONNECTIONS.len() - 1], proxy_cpu);
    let nginx_rps = median(&nginx_full[CONNECTIONS.len() - 1], rps);
    let exported = proxy_metric(&http, traced.metrics, "sluice_otel_spans_exported_total").await;
    let dropped = proxy_metric(&http, traced.metrics, "sluice_otel_spans_dropped_total").await
        + proxy_metric(
            &http,
            traced.metrics,
            "sluice_otel_spans_export_failed_total",
        )
        .await;
    let nginx_round_cpu: Vec<f64> = nginx_full[CONNECTIONS.len() - 1]
        .iter()
        .map(|r| r.proxy_cpu.as_secs_f64())
        .collect();
    let nginx_round_rps: Vec<f64> = nginx_full[CONNECTIONS.len() - 1]
        .iter()
        .map(|r| r.requests_per_second)
        .collect();
    let rounds_against_nginx = traced_full
        .iter()
        .enumerate()
        .map(|(round, r)| {
            format!(
                "{:.2} / {:.2}",
                r.requests_per_second / nginx_round_rps[round].max(1.0),
                (r.proxy_cpu + r.control_plane_cpu).as_secs_f64()
                    / nginx_round_cpu[round].max(1e-9)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "with OpenTelemetry on (every request traced, OTLP/HTTP to a receiver in this process), 64 connections: {traced_rps:.0} req/s ({:.2}× nginx), {:.1} µs proxy + {:.1} µs control plane per request ({:.2}× nginx; per round, throughput / CPU per request: {rounds_against_nginx}); tracing adds {:.1} µs per request to the proxy; spans exported {exported:.0}, dropped {dropped:.0}, received {}",
        traced_rps / nginx_rps.max(1.0),
        traced_proxy * 1e6,
        traced_cp * 1e6,
        (traced_proxy + traced_cp) / nginx_cpu.as_secs_f64().max(1e-9),
        (traced_proxy - untraced_proxy) * 1e6,
        traced.receiver.span_count(),
    );
    let logged_proxy = median(&logged_full, proxy_cpu);
    let logged_rps = median(&logged_full, rps);
    println!(
        "with the access log written to a file (no tracing), 64 connections: {logged_rps:.0} req/s ({:.2}× nginx), {:.1} µs proxy per request; the access log adds {:.1} µs per request to the proxy",
        logged_rps / nginx_rps.max(1.0),
        logged_proxy * 1e6,
        (logged_proxy - untraced_proxy) * 1e6,
    );
}

/// The proxy that traces every request, and the receiver its spans go to.
struct Traced<'a> {
    url: &'a str,
    metrics: &'a str,
    pid: u32,
    receiver: &'a sluice_e2e::otlp_receiver::OtlpReceiver,
}

async fn create_virtual_keys(url: &str, token: &str, count: usize) {
    use sluice_proto::admin::v1::CreateVirtualKeyRequest;
    use sluice_proto::admin::v1::admin_service_client::AdminServiceClient;
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut client = AdminServiceClient::new(channel.clone());
        let next = next.clone();
        let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let mut request = tonic::Request::new(CreateVirtualKeyRequest {
                    organization: "bench".into(),
                    project: "p".into(),
                    name: format!("key-{n}"),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
                client.create_virtual_key(request).await.unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
}
