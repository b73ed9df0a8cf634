//! Rate limits across a fleet, tried as an operator and a client would: four proxies share one
//! virtual key's limit of 100 requests per 10 s window and are driven at twice that from a
//! window's start — the upstream sees at most the limit, every refusal is `429 rate_limited`
//! with `Retry-After` and OpenAI's rate-limit headers; a raised limit admits again in the same
//! window without a restart; a model's token limit counts the tokens the upstream reported;
//! a proxy whose control plane is gone serves unchecked once its lease expires, and counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use sluice_e2e::proxy::{Http, HttpResponse, Proxy, ProxyBuilder};
use sluice_e2e::{eventually, live_stack_with};

const LIMIT: usize = 100;
const WINDOW_S: u64 = 10;

fn request(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 500,
           "messages": [{"role": "user", "content": content}]})
}

fn header<'a>(response: &'a HttpResponse, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} on {} {}", response.status, response.text()))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Sleeps until `margin` after the next multiple of `window_s` seconds (UTC).
async fn until_window_start(window_s: u64, margin: Duration) {
    let window_us = window_s * 1_000_000;
    let now = now_us();
    let next = now - now % window_us + window_us;
    tokio::time::sleep(Duration::from_micros(next - now) + margin).await;
}

/// A limit of `requests` per hour on project acme/web. Hour-long windows: nothing in a test
/// may roll over, so an hour's last minute is waited out first.
async fn hourly_limit_on_web(cp: &sluice_e2e::ControlPlane, requests: &str) {
    if now_us() % 3_600_000_000 > 3_540_000_000 {
        until_window_start(3_600, Duration::from_millis(100)).await;
    }
    cp.ctl(&[
        "rate-limit",
        "create",
        "acme/web",
        "--requests",
        requests,
        "--window-seconds",
        "3600",
    ])
    .ok();
}

fn start_proxy(cp_url: &str, token: &str) -> (tempfile::TempDir, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), cp_url, token).start();
    (dir, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_proxies_admit_at_most_the_limit_when_driven_at_twice_it() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-rate-limits", &[], &[]);
    cp.ctl(&[
        "rate-limit",
        "create",
        "acme/web/app",
        "--requests",
        &LIMIT.to_string(),
        "--window-seconds",
        &WINDOW_S.to_string(),
    ])
    .ok();
    let http = Http::new();
    let proxies: Vec<(tempfile::TempDir, Proxy)> = (0..4)
        .map(|_| start_proxy(&cp.url(), &acme.token))
        .collect();
    for (_, proxy) in &proxies {
        proxy.wait_for_version(&http, cp.config_version()).await;
    }

    // Twice the limit, spread over the four proxies and over the first 80 % of one window.
    until_window_start(WINDOW_S, Duration::from_millis(100)).await;
    let before = upstream.requests_for("gpt-4o-mini");
    let sent = 2 * LIMIT;
    let spread = Duration::from_millis(WINDOW_S * 800) / sent as u32;
    let start = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..sent {
        tokio::time::sleep_until(start + spread * n as u32).await;
        let url = proxies[n % proxies.len()].1.url("/v1/chat/completions");
        let key = acme.key.clone();
        calls.spawn(async move {
            Http::new()
                .post(&url, Some(&key), &request("usage:30/20"))
                .await
                .unwrap()
        });
    }
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    while let Some(response) = calls.join_next().await {
        let response = response.unwrap();
        match response.status.as_u16() {
            200 => admitted.push(response),
            429 => refused.push(response),
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(WINDOW_S),
        "the load left its window"
    );
    let reached = upstream.requests_for("gpt-4o-mini") - before;
    eprintln!(
        "{sent} sent at 2× the limit: {} admitted, {} refused, {reached} reached the upstream",
        admitted.len(),
        refused.len()
    );
    // The stated bound: a window's allowances never sum past the limit.
    assert!(admitted.len() <= LIMIT, "{} admitted", admitted.len());
    assert_eq!(reached, admitted.len());
    // Leases leave little unused: nearly the whole limit was served.
    assert!(
        admitted.len() >= LIMIT * 9 / 10,
        "{} admitted",
        admitted.len()
    );
    for response in &admitted {
        assert_eq!(header(response, "x-ratelimit-limit-requests"), "100");
        let remaining: usize = header(response, "x-ratelimit-remaining-requests")
            .parse()
            .unwrap();
        assert!(remaining < LIMIT);
        assert!(header(response, "x-ratelimit-reset-requests").ends_with('s'));
    }
    for response in &refused {
        let body = response.json();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["next_action"], "retry");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("acme/web/app (10 s)"), "{body}");
        let wait: u64 = header(response, "retry-after").parse().unwrap();
        assert!((1..=WINDOW_S).contains(&wait), "Retry-After {wait}");
        assert_eq!(header(response, "x-ratelimit-limit-requests"), "100");
        let remaining = header(response, "x-ratelimit-remaining-requests");
        if message.contains("is reached") {
            // Refused because the fleet has nothing left: the window's end is the wait.
            assert_eq!(remaining, "0");
        }
        header(response, "x-ratelimit-reset-requests");
    }

    // What the operator sees: the window's grants within the limit, and the proxies holding them.
    let listed = cp.ctl(&["-o", "json", "rate-limit", "list", "acme"]).json();
    let row = &listed.as_array().unwrap()[0];
    assert_eq!(row["target"], "acme/web/app");
    assert_eq!(row["requests_per_window"], 100);
    assert_eq!(row["tokens_per_window"], "-");
    let mut counted = 0.0;
    for (_, proxy) in &proxies {
        counted += proxy
            .metric(&http, "sluice_errors_total{code=\"rate_limited\"}")
            .await;
    }
    assert_eq!(counted as usize, refused.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_limit_admits_again_and_tokens_count_what_the_upstream_reported() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-rate-raise", &[], &[]);
    hourly_limit_on_web(&cp, "5").await;
    let http = Http::new();
    let (_dir, proxy) = start_proxy(&cp.url(), &acme.token);
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/chat/completions");
    let call = async |content: &str| {
        http.post(&url, Some(&acme.key), &request(content))
            .await
            .unwrap()
    };
    for n in 0..5 {
        let response = call("usage:30/20").await;
        assert_eq!(response.status, 200, "{n}: {}", response.text());
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            (4 - n).to_string()
        );
    }
    let refused = call("usage:30/20").await;
    assert_eq!(refused.status, 429);
    // Over HTTP/2 (h2c) the same answer carries the same headers.
    let h2 = Http::h2c()
        .post(&url, Some(&acme.key), &request("usage:30/20"))
        .await
        .unwrap();
    assert_eq!(h2.status, 429);
    assert_eq!(header(&h2, "x-ratelimit-limit-requests"), "5");
    assert_eq!(header(&h2, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(wait <= 3_600);

    // Raised: admitted again at the next lease, in the same window, without a restart.
    cp.ctl(&["rate-limit", "update", "acme/web", "--requests", "10"])
        .ok();
    eventually("re-admitted after the raise", 10, async || {
        call("usage:30/20").await.status == 200
    })
    .await;
    let h2 = Http::h2c()
        .post(&url, Some(&acme.key), &request("usage:30/20"))
        .await
        .unwrap();
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(header(&h2, "x-ratelimit-limit-requests"), "10");
    header(&h2, "x-ratelimit-reset-requests");

    // A token limit on the model: each request reserves its prompt (a token per four bytes
    // of body) plus max_tokens, then settles to the 35 tokens the upstream reports. Were the
    // reservations kept, only 3 would fit in 2 000 tokens.
    cp.ctl(&[
        "rate-limit",
        "create",
        "acme",
        "--model",
        "gpt-4o-mini",
        "--tokens",
        "2000",
        "--window-seconds",
        "3600",
    ])
    .ok();
    cp.ctl(&["rate-limit", "update", "acme/web", "--requests", "1000"])
        .ok();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let body_len = request("usage:30/5").to_string().len() as u64;
    let reserved = body_len.div_ceil(4) + 500;
    let expected = (2_000 - reserved) / 35 + 1;
    let mut admitted = 0;
    let refusal = loop {
        let response = call("usage:30/5").await;
        if response.status != 200 {
            break response;
        }
        admitted += 1;
        assert!(admitted <= expected, "admitted past the token limit");
    };
    assert_eq!(admitted, expected, "{}", refusal.text());
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    assert!(
        refusal.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acme model gpt-4o-mini (3600 s)"),
        "{}",
        refusal.text()
    );
    assert_eq!(header(&refusal, "x-ratelimit-limit-tokens"), "2000");
    let remaining: u64 = header(&refusal, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert_eq!(remaining, 2_000 - 35 * admitted);
    // A request that could never fit a whole window is a request to fix, not to retry.
    let too_big = http
        .post(
            &url,
            Some(&acme.key),
            &json!({"model": "gpt-4o-mini", "max_tokens": 5000,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(too_big.status, 400, "{}", too_big.text());
    assert_eq!(too_big.json()["error"]["param"], "max_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_control_plane_a_proxy_admits_unchecked_and_counts_it() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-rate-open", &[], &[("SLUICE_LEASE_TTL_MS", "1500")]);
    hourly_limit_on_web(&cp, "2").await;
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_LEASE_WAIT_MS", "200")
        .start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/chat/completions");
    let call = async || {
        http.post(&url, Some(&acme.key), &request("usage:30/20"))
            .await
            .unwrap()
            .status
            .as_u16()
    };
    assert_eq!((call().await, call().await, call().await), (200, 200, 429));
    let unenforced = "sluice_rate_limits_unenforced_total";
    assert_eq!(proxy.metric(&http, unenforced).await, 0.0);

    // The control plane goes away: the spent lease still refuses until it expires; then,
    // with no lease to be had, the proxy serves unchecked rather than refuse everyone, and
    // says so.
    let _ = cp.stop();
    eventually(
        "admitted unchecked once the lease expired",
        15,
        async || call().await == 200,
    )
    .await;
    assert!(proxy.metric(&http, unenforced).await >= 1.0);
}
