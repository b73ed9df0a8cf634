//! Usage is never lost and never counted twice (RELIABILITY B2). Traffic runs through two
//! proxies while the control plane is killed and restarted and one proxy is `SIGKILL`ed
//! mid-stream and restarted; afterwards the store holds exactly one record per request id a
//! client saw answered with 2xx — no more, no fewer. Then the spool's own promises: a torn
//! spool file is read up to the tear, and a full spool refuses live traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::json;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::otlp_receiver::{int, text};
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{ControlPlaneBuilder, live_stack};

const SEGMENT: &str = "65536";

fn proxy(dir: &std::path::Path, cp: &str, token: &str, listen: Option<&str>) -> Proxy {
    let mut builder =
        ProxyBuilder::new(dir, cp, token).env("SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES", SEGMENT);
    if let Some(addr) = listen {
        builder = builder.listen(addr);
    }
    builder.start()
}

/// Sends requests to `addr` until `stop`, alternating whole answers and streams, and logs the
/// request id of every response whose head said 2xx.
async fn client(
    start_after: Duration,
    addr: String,
    key: String,
    answered: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let http = Http::new();
    // Staggered starts, so that whenever the kill comes some streams are mid-body.
    tokio::time::sleep(start_after).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({
            "model": "paused",
            "stream": n.is_multiple_of(2),
            "messages": [{"role": "user", "content": format!("request {n} to {addr}")}],
        });
        let url = format!("http://{addr}/v1/chat/completions");
        match http.post_head(&url, &key, &body).await {
            Ok(response) => {
                if response.status().is_success() {
                    let id = response.headers()["x-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    answered.lock().unwrap().push(id);
                }
                // A body cut off by the kill still counts: its head said 2xx.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                        .await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn stored_ids(pool: &sqlx::SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT request_id FROM usage_records")
        .fetch_all(&sluice_e2e::usage_rows(pool).await)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answered_request_is_lost_or_counted_twice() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let acme = cp.seed_live_acme_with_paused_model(&upstream.base_url(), "sk-durability-test");
    let version = cp.config_version();
    let cp_addr = cp.addr.clone();
    let cp_url = cp.url();
    let http = Http::new();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = proxy(dirs[0].path(), &cp_url, &acme.token, None);
    let second = proxy(dirs[1].path(), &cp_url, &acme.token, None);
    for p in [&first, &second] {
        p.wait_for_version(&http, version).await;
    }

    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [&first, &second]
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.addr.clone(), 6))
        .enumerate()
        .map(|(i, addr)| {
            tokio::spawn(client(
                Duration::from_millis(113 * i as u64),
                addr,
                acme.key.clone(),
                answered.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let pace = Duration::from_millis(1500);
    tokio::time::sleep(pace).await;

    // The control plane dies; the proxies keep answering and spool.
    drop(cp.stop());
    tokio::time::sleep(pace).await;
    // One proxy dies mid-stream, with undelivered usage in its spool.
    let first_addr = first.addr.clone();
    let killed_output = first.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_LISTEN_ADDR", &cp_addr)
        .start();
    let first = proxy(dirs[0].path(), &cp_url, &acme.token, Some(&first_addr));
    tokio::time::sleep(pace).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let answered: BTreeSet<String> = answered.lock().unwrap().iter().cloned().collect();
    assert!(
        answered.len() > 50,
        "too little traffic to prove anything: {}",
        answered.len()
    );

    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stored = stored_ids(&pool).await;
    while stored.len() < answered.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = stored_ids(&pool).await;
    }
    // Anything still in flight has had time to land; nothing more may appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_ids(&pool).await;
    let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), stored_set.len(), "a request was stored twice");
    let lost: Vec<_> = answered.difference(&stored_set).collect();
    let unexpected: Vec<_> = stored_set.difference(&answered).collect();
    assert!(
        lost.is_empty() && unexpected.is_empty(),
        "{} answered, {} stored; lost {lost:?}; unexpected {unexpected:?}\nkilled proxy:\n{}\nrestarted proxy:\n{}",
        answered.len(),
        stored.len(),
        killed_output.text(),
        first.output.text()
    );
    assert!(
        first
            .metric(&http, "sluice_usage_records_recovered_total")
            .await
            > 0.0,
        "the restarted proxy delivered nothing from its spool: the kill proved nothing"
    );
    // The spool empties once all is acknowledged: nothing is kept longer than needed.
    drop(cp);
    drop(second);
}

async fn live_request(http: &Http, proxy: &Proxy, key: &str) -> sluice_e2e::proxy::HttpResponse {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    http.post(&proxy.url("/v1/chat/completions"), Some(key), &body)
        .await
        .unwrap()
}

async fn wait_for_records(pool: &sqlx::SqlitePool, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored_ids(pool).await.len();
        if stored >= at_least || Instant::now() > deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A spool at its bound refuses live traffic (it would go unmetered) and says so; once the
/// control plane is back and the spool drains, traffic is admitted again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_live_traffic_until_it_drains() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack("sk-spool-full");
    let cp_addr = cp.addr.clone();
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    // Only a request whose caller samples it is traced: the refusal below.
    let receiver = sluice_e2e::otlp_receiver::OtlpReceiver::start().await;
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES", SEGMENT)
        .env("SLUICE_PROXY_USAGE_SPOOL_MAX_BYTES", "196608")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url)
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_off")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    drop(cp.stop());

    let mut served = 0;
    let refusal = loop {
        let response = live_request(&http, &proxy, &acme.key).await;
        if response.status != 200 {
            break response;
        }
        served += 1;
        assert!(served < 5_000, "the spool bound never held");
    };
    assert_eq!(refusal.status, 503, "{}", refusal.text());
    let error = &refusal.json()["error"];
    assert_eq!(error["code"], "internal");
    assert_eq!(error["next_action"], "support");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("usage spool is full")
    );
    // DESIGN's last error row, "internal", on its span: status 503 and ERROR.
    let traced = http
        .send(
            "POST",
            &proxy.url("/v1/chat/completions"),
            Some(&acme.key),
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            bytes::Bytes::from(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(traced.status, 503);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:#?}");
    let span = &spans[0].1;
    assert_eq!(
        int(&span.attributes, "http.response.status_code"),
        Some(503)
    );
    assert_eq!(
        text(&span.attributes, "error.type").as_deref(),
        Some("internal")
    );
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(2),
        "a 5xx is an ERROR"
    );
    // The gauge follows within one flush interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.metric(&http, "sluice_usage_spool_full").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "sluice_usage_spool_full never rose"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_LISTEN_ADDR", &cp_addr)
        .start();
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    assert_eq!(wait_for_records(&pool, served).await, served);
    let deadline = Instant::now() + Duration::from_secs(15);
    while live_request(&http, &proxy, &acme.key).await.status != 200 {
        assert!(Instant::now() < deadline, "traffic never re-admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while proxy.metric(&http, "sluice_usage_spool_full").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "sluice_usage_spool_full never fell"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy
            .metric(&http, "sluice_usage_records_dropped_total")
            .await,
        0.0
    );
    drop(cp);
}

/// With `drop-oldest`, a full spool keeps serving and counts what it had to drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_serving_and_counts_the_loss() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack("sk-spool-drop");
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES", SEGMENT)
        .env("SLUICE_PROXY_USAGE_SPOOL_MAX_BYTES", "196608")
        .env("SLUICE_PROXY_USAGE_SPOOL_WHEN_FULL", "drop-oldest")
        .start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    drop(cp.stop());
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy
        .metric(&http, "sluice_usage_records_dropped_total")
        .await
        == 0.0
    {
        for _ in 0..100 {
            let response = live_request(&http, &proxy, &acme.key).await;
            assert_eq!(response.status, 200, "{}", response.text());
        }
        assert!(Instant::now() < deadline, "nothing was ever dropped");
    }
}

/// A spool file torn by a crash (cut at an arbitrary byte) is read up to the tear: the
/// proxy starts, reports the damage, and delivers every whole record before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_file_is_delivered_up_to_the_tear() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack("sk-spool-torn");
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    // Nothing is delivered before the kill.
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "600000")
        .start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    const SERVED: usize = 20;
    for _ in 0..SERVED {
        assert_eq!(live_request(&http, &proxy, &acme.key).await.status, 200);
    }
    drop(proxy.kill());

    let spool = dir.path().join("spool");
    let file = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "spool"))
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let used = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    // Cut inside the 15th entry: records are alike, so each takes used / SERVED bytes.
    let entry = used.div_ceil(SERVED) / 8 * 8;
    std::fs::write(&file, &bytes[..entry * 14 + entry / 2]).unwrap();

    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token).start();
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    assert_eq!(wait_for_records(&pool, 14).await, 14);
    assert_eq!(
        proxy
            .metric(&http, "sluice_usage_spool_damaged_total")
            .await,
        1.0
    );
    assert!(proxy.output.text().contains("torn or damaged"));
}
