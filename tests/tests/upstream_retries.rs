//! Riding out a flaky upstream, with the real binaries and the mock speaking OpenAI's wire
//! format: a request whose upstream fails once — 500, 503, 429 (its `retry-after-ms`
//! honoured) or a 200 whose body is cut JSON — ends in the exact answer, whole or streamed,
//! with the attempts counted at the mock, in the answer's headers and in the usage record; a
//! deployment that keeps failing is left for the next one; nothing is retried once the answer
//! has started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::mock_openai::{COMPLETION_TOKENS, PROMPT_TOKENS};
use sluice_e2e::proxy::HttpResponse;
use sluice_e2e::{await_usage, caught_up_proxy, live_stack, live_stack_with};

/// The mock's whole answer to a normal chat completion.
const ANSWER: &str = "Hello from the mock upstream";

/// Creates model `acme/{name}` served first by the mock's `failing` upstream model, then by
/// its healthy `gpt-4o-mini`, with `extra` flags.
fn model_with_fallback(cp: &sluice_e2e::ControlPlane, name: &str, failing: &str, extra: &[&str]) {
    let model = format!("acme/{name}");
    let first = format!("openai:{failing},priority=0");
    let mut args = vec![
        "model",
        "create",
        &model,
        "--deployment",
        &first,
        "--deployment",
        "openai:gpt-4o-mini,priority=1",
    ];
    args.extend_from_slice(extra);
    cp.ctl(&args).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_end_in_the_exact_answer_and_persistent_ones_fall_back() {
    let stack = live_stack("sk-retries-test");
    let cp = &stack.cp;
    let scenarios = ["500", "503", "429", "json"];
    for how in scenarios {
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/flaky-{how}"),
            "--deployment",
            &format!("openai:flaky-{how}-1"),
        ])
        .ok();
    }
    cp.ctl(&[
        "model",
        "create",
        "acme/flaky-stream",
        "--deployment",
        // Its own count of failures: the mock counts by the model's exact name.
        "openai:flaky-503-01",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/down",
        "--deployment",
        "openai:flaky-500-1000",
    ])
    .ok();
    model_with_fallback(cp, "fallback", "flaky-500-1000", &[]);
    cp.ctl(&[
        "model",
        "create",
        "acme/limited",
        "--deployment",
        "openai:fail-429",
        "--max-retry-after-ms",
        "1000",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/cut",
        "--deployment",
        "openai:cut-stream",
    ])
    .ok();
    let (_dir, proxy, http) = caught_up_proxy(cp, &stack.acme.token).await;
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let url = proxy.url("/v1/chat/completions");
    let key = Some(stack.acme.key.as_str());
    let header = |response: &HttpResponse, name: &str| {
        response
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let pool = sluice_e2e::store_of(stack.cp_dir.path()).await;

    for how in scenarios {
        let started = Instant::now();
        let answer = http
            .post(&url, key, &chat(&format!("flaky-{how}"), false))
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{how}: {}", answer.text());
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            ANSWER,
            "{how}"
        );
        assert_eq!(
            stack.upstream.requests_for(&format!("flaky-{how}-1")),
            2,
            "{how}: one failure, one retry"
        );
        assert_eq!(
            header(&answer, "x-sluice-attempts").as_deref(),
            Some("2"),
            "{how}"
        );
        assert_eq!(
            header(&answer, "x-sluice-served-by").as_deref(),
            Some(format!("openai:flaky-{how}-1").as_str())
        );
        // A backoff within its bound, or the 50 ms the 429 asked for.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{how}: {:?}",
            started.elapsed()
        );
        let id = header(&answer, "x-request-id").unwrap();
        let row: (i64, i64, String, i64, i64) = await_usage(
            &pool,
            "input_tokens, output_tokens, source, http_status, attempts",
            &id,
        )
        .await;
        assert_eq!(
            row,
            (
                PROMPT_TOKENS as i64,
                COMPLETION_TOKENS as i64,
                "PROVIDER_REPORTED".to_owned(),
                200,
                2
            ),
            "{how}"
        );
    }

    // A stream is retried the same way before its first byte.
    let streamed = http
        .post(&url, key, &chat("flaky-stream", true))
        .await
        .unwrap();
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert!(
        streamed.text().contains("data: [DONE]"),
        "{}",
        streamed.text()
    );
    assert_eq!(header(&streamed, "x-sluice-attempts").as_deref(), Some("2"));
    assert_eq!(stack.upstream.requests_for("flaky-503-01"), 2);

    // A deployment that keeps failing: its key's two attempts, then the error (with the
    // answer's next move); a fallback deployment serves instead where there is one.
    let down = http.post(&url, key, &chat("down", false)).await.unwrap();
    assert_eq!(down.status, 502, "{}", down.text());
    assert_eq!(down.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(down.json()["error"]["next_action"], "retry");
    assert_eq!(stack.upstream.requests_for("flaky-500-1000"), 2);
    let fallback = http
        .post(&url, key, &chat("fallback", false))
        .await
        .unwrap();
    assert_eq!(fallback.status, 200, "{}", fallback.text());
    assert_eq!(fallback.json()["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(header(&fallback, "x-sluice-attempts").as_deref(), Some("3"));
    assert_eq!(
        header(&fallback, "x-sluice-served-by").as_deref(),
        Some("openai:gpt-4o-mini")
    );
    assert_eq!(stack.upstream.requests_for("flaky-500-1000"), 4);

    // A wait longer than this model will sit out: the 429 is the answer at once, and says
    // how long the upstream asked for.
    let started = Instant::now();
    let limited = http.post(&url, key, &chat("limited", false)).await.unwrap();
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"]["code"], "upstream_rate_limited");
    assert_eq!(header(&limited, "retry-after").as_deref(), Some("2"));
    assert_eq!(header(&limited, "retry-after-ms").as_deref(), Some("2000"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stack.upstream.requests_for("fail-429"), 1);

    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_part_way_ends_in_the_error_event_sdks_raise_on() {
    let stack = live_stack_with("sk-stream-failures", &["--timeout-ms", "800"], &[]);
    let cp = &stack.cp;
    let cases = [
        ("cut-stream", "upstream_unavailable"),
        ("no-done", "upstream_invalid_response"),
        ("bad-event", "upstream_invalid_response"),
        ("stall", "upstream_timeout"),
    ];
    for (upstream_model, _) in cases {
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{upstream_model}"),
            "--deployment",
            &format!("openai:{upstream_model}"),
        ])
        .ok();
    }
    let (_dir, proxy, http) = caught_up_proxy(cp, &stack.acme.token).await;
    let url = proxy.url("/v1/chat/completions");
    let key = Some(stack.acme.key.as_str());
    let pool = sluice_e2e::store_of(stack.cp_dir.path()).await;
    for (model, code) in cases {
        let body = json!({"model": model, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
        // The body ends cleanly: the client reads the error, not a broken connection.
        let streamed = http.post(&url, key, &body).await.unwrap();
        assert_eq!(streamed.status, 200, "{model}");
        let text = streamed.text();
        let last = text
            .split("\n\n")
            .filter(|event| !event.trim().is_empty())
            .last()
            .unwrap_or_default();
        let error: serde_json::Value =
            serde_json::from_str(last.strip_prefix("data: ").unwrap_or(last)).unwrap();
        assert_eq!(error["error"]["code"], code, "{model}: {text}");
        assert_eq!(error["error"]["next_action"], "retry", "{model}");
        assert!(!text.contains("[DONE]"), "{model}: {text}");
        // Once the answer has started, nothing is retried.
        assert_eq!(stack.upstream.requests_for(model), 1, "{model}");
        let id = streamed.headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        // The record says how the answer ended, not the 200 its head went out with.
        let expected_status = match code {
            "upstream_timeout" => 504,
            _ => 502,
        };
        let (status, attempts): (i64, i64) = await_usage(&pool, "http_status, attempts", &id).await;
        assert_eq!((status, attempts), (expected_status, 1), "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_settings_of_providers_and_models_reach_the_proxy_and_apply() {
    let stack = live_stack("sk-retry-settings-test");
    let cp = &stack.cp;
    // A provider trying each key three times; one model limited to a single attempt.
    let provider = cp.ctl(&[
        "provider",
        "update",
        "acme/openai",
        "--attempts-per-key",
        "3",
    ]);
    assert!(
        provider.ok().contains("attempts_per_key=3"),
        "{}",
        provider.ok()
    );
    cp.ctl(&[
        "model",
        "create",
        "acme/twice",
        "--deployment",
        "openai:flaky-500-2",
    ])
    .ok();
    let once = cp.ctl(&[
        "model",
        "create",
        "acme/once",
        "--deployment",
        "openai:flaky-503-2",
        "--max-attempts",
        "1",
    ]);
    assert!(once.ok().contains("max_attempts=1"), "{}", once.ok());
    let refused = cp.ctl(&["model", "update", "acme/once", "--attempts-per-key", "0"]);
    assert!(
        refused.err().contains("retry.attempts_per_key"),
        "{}",
        refused.err()
    );
    let (_dir, proxy, http) = caught_up_proxy(cp, &stack.acme.token).await;
    let url = proxy.url("/v1/chat/completions");
    let key = Some(stack.acme.key.as_str());
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    // Two failures, then the answer: the provider's three attempts per key.
    let twice = http.post(&url, key, &chat("twice")).await.unwrap();
    assert_eq!(twice.status, 200, "{}", twice.text());
    assert_eq!(twice.headers["x-sluice-attempts"], "3");
    assert_eq!(stack.upstream.requests_for("flaky-500-2"), 3);
    // The model's single attempt: its first failure is the answer.
    let once = http.post(&url, key, &chat("once")).await.unwrap();
    assert_eq!(once.status, 502, "{}", once.text());
    assert_eq!(stack.upstream.requests_for("flaky-503-2"), 1);

    // Back to inheriting: the provider's three attempts get past its second failure.
    let reset = cp.ctl(&["model", "update", "acme/once", "--reset-retry"]);
    assert!(reset.ok().contains("inherited"), "{}", reset.ok());
    proxy.wait_for_version(&http, cp.config_version()).await;
    let again = http.post(&url, key, &chat("once")).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.headers["x-sluice-attempts"], "2");
    assert_eq!(stack.upstream.requests_for("flaky-503-2"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_full_outage_retries_stay_within_the_budget_and_the_fallback_serves() {
    let stack = live_stack("sk-retry-budget-test");
    let cp = &stack.cp;
    model_with_fallback(cp, "outage", "flaky-503-100000", &[]);
    // One serving thread, so that one budget sees every request; no floor, so that the bound
    // is the share alone; no ejection, which would spare the failing deployment sooner.
    let (_dir, proxy, http) = sluice_e2e::caught_up_proxy_with(
        cp,
        &stack.acme.token,
        &[
            ("SLUICE_PROXY_WORKERS", "1"),
            ("SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES", "100000"),
            ("SLUICE_PROXY_RETRY_BUDGET_PERCENT", "20"),
            ("SLUICE_PROXY_RETRY_BUDGET_MIN_PER_SECOND", "0"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let key = Some(stack.acme.key.as_str());
    let body = json!({"model": "outage", "messages": [{"role": "user", "content": "hi"}]});
    const REQUESTS: usize = 50;
    for n in 0..REQUESTS {
        let answer = http.post(&url, key, &body).await.unwrap();
        assert_eq!(answer.status, 200, "request {n}: {}", answer.text());
        assert_eq!(answer.json()["choices"][0]["message"]["content"], ANSWER);
    }
    // Each request tried the failing deployment once, plus at most a fifth of them again.
    let at_failing = stack.upstream.requests_for("flaky-503-100000");
    assert!(
        (REQUESTS..=REQUESTS + REQUESTS / 5).contains(&at_failing),
        "{at_failing} attempts at the failing deployment for {REQUESTS} requests"
    );
    assert!(at_failing > REQUESTS, "the budget allowed no retry at all");
    assert_eq!(stack.upstream.requests_for("gpt-4o-mini"), REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_is_ejected_probed_after_its_cooldown_and_restored() {
    let stack = live_stack("sk-ejection-test");
    let cp = &stack.cp;
    // Four failures, then answers. Each request tries it once, then the fallback.
    model_with_fallback(cp, "ejecting", "flaky-500-4", &["--attempts-per-key", "1"]);
    cp.ctl(&[
        "model",
        "create",
        "acme/alone",
        "--deployment",
        "openai:flaky-503-100000",
        "--attempts-per-key",
        "1",
    ])
    .ok();
    let (_dir, proxy, http) = sluice_e2e::caught_up_proxy_with(
        cp,
        &stack.acme.token,
        &[
            ("SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES", "3"),
            ("SLUICE_PROXY_EJECTION_COOLDOWN_MS", "1000"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let key = Some(stack.acme.key.as_str());
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let failing = || stack.upstream.requests_for("flaky-500-4");
    let ask = |expected_attempts: Option<&'static str>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http.post(&url, key, &chat("ejecting")).await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                answer
                    .headers
                    .get("x-sluice-attempts")
                    .map(|v| v.to_str().unwrap()),
                expected_attempts
            );
        }
    };
    let ejected = || async {
        let ready = http.get(&proxy.url("/readyz"), None).await.unwrap().json();
        ready["ejected_deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deployment"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<String>>()
    };

    // Three failures in a row (each request served by the fallback) eject it.
    for _ in 0..3 {
        ask(Some("2")).await;
    }
    assert_eq!(failing(), 3);
    assert_eq!(ejected().await, vec!["openai:flaky-500-4".to_owned()]);
    assert_eq!(
        proxy.metric(&http, "sluice_upstream_ejections_total").await,
        1.0
    );
    // Ejected: requests go straight to the fallback.
    for _ in 0..3 {
        ask(None).await;
    }
    assert_eq!(failing(), 3);

    // After the cooldown one request probes it; the probe fails, and it is out for longer.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ask(Some("2")).await;
    assert_eq!(failing(), 4);
    assert_eq!(
        proxy.metric(&http, "sluice_upstream_ejections_total").await,
        2.0
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ask(None).await;
    assert_eq!(failing(), 4, "the second cooldown is twice the first");

    // The next probe succeeds: it is restored and serves again, first in its priority.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ask(None).await;
    ask(None).await;
    assert_eq!(failing(), 6);
    assert!(ejected().await.is_empty());

    // A model's only deployment is never taken away: below half healthy, all are used.
    for _ in 0..6 {
        let answer = http.post(&url, key, &chat("alone")).await.unwrap();
        assert_eq!(answer.status, 502);
    }
    assert_eq!(stack.upstream.requests_for("flaky-503-100000"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_report_what_they_leave_out_to_the_fleet() {
    let stack = live_stack("sk-fleet-report-test");
    let cp = &stack.cp;
    model_with_fallback(
        cp,
        "failing",
        "flaky-500-100000",
        &["--attempts-per-key", "1"],
    );
    let (_dir, proxy, http) = sluice_e2e::caught_up_proxy_with(
        cp,
        &stack.acme.token,
        &[("SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES", "3")],
    )
    .await;
    let body = json!({"model": "failing", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let answer = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&stack.acme.key),
                &body,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = cp.ctl(&["-o", "json", "fleet"]).json();
        let left_out = fleet["proxies"][0]["left_out"].to_string();
        if left_out.contains("deployment openai:flaky-500-100000 until ") {
            break;
        }
        assert!(Instant::now() < deadline, "never reported: {fleet}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_retry_info_is_waited_out_before_the_retry() {
    let family = sluice_e2e::family_stack(
        "google",
        "AIza-retry-info-test",
        "gemini-flaky",
        "flaky-429-1",
    )
    .await;
    let started = Instant::now();
    let answer = family
        .http
        .post(
            &family.proxy.url("/v1/chat/completions"),
            Some(&family.stack.acme.key),
            &json!({"model": "gemini-flaky", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-sluice-attempts"], "2");
    // The 1 s the 429's RetryInfo asked for, not a backoff of at most 100 ms.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
