//! HARD budgets enforced by proxies with leases (RELIABILITY B3): several proxies spend one
//! budget concurrently and stop within the documented bound, every proxy then refuses with
//! `budget_exceeded`, and raising the budget re-admits traffic without a restart; cancelled
//! streams, upstream timeouts and 5xx never cause a phantom refusal and leave no reservation
//! behind; a killed proxy's leases come back after their TTL; without its control plane a
//! proxy spends only what it holds, then fails closed saying why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{ControlPlane, eventually, live_stack_with};

/// 30 prompt and 500 completion tokens of gpt-4o-mini: 30 × 0.15 + 500 × 0.60 = 304.5 → 305
/// µ$ each. `max_tokens` 500 makes each reservation cover it.
fn request(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 500,
           "messages": [{"role": "user", "content": "usage:30/500"}]})
}

fn budget_row(cp: &ControlPlane, target: &str) -> Value {
    let list = cp.ctl(&["-o", "json", "budget", "list", "acme"]).json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == target)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {target}: {list}"))
}

fn micros(usd: &Value) -> i64 {
    let text = usd.as_str().unwrap();
    let (whole, fraction) = text.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 1_000_000 + fraction.parse::<i64>().unwrap()
}

async fn metric(http: &Http, proxy: &Proxy, name: &str) -> f64 {
    let text = http.get(&proxy.url("/metrics"), None).await.unwrap().text();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn start_proxy(cp: &ControlPlane, token: &str) -> (tempfile::TempDir, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), token).start();
    (dir, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_stop_at_a_hard_budget_and_resume_when_it_is_raised() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-hard-budget", &[], &[]);
    const LIMIT: i64 = 30_000;
    cp.hard_budget("acme/web", "0.03");
    let http = Http::new();
    let proxies: Vec<(tempfile::TempDir, Proxy)> =
        (0..4).map(|_| start_proxy(&cp, &acme.token)).collect();
    for (_, proxy) in &proxies {
        proxy.wait_for_version(&http, cp.config_version()).await;
    }

    // Four proxies, three clients each, until every client has been refused.
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = proxies
        .iter()
        .flat_map(|(_, p)| std::iter::repeat_n(p.url("/v1/chat/completions"), 3))
        .map(|url| {
            let key = acme.key.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let http = Http::new();
                loop {
                    let response = http
                        .post(&url, Some(&key), &request("gpt-4o-mini", false))
                        .await
                        .unwrap();
                    match response.status.as_u16() {
                        200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => return response.json(),
                        other => panic!("unexpected {other}: {}", response.text()),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        let refusal = client.await.unwrap();
        assert_eq!(refusal["error"]["code"], "budget_exceeded", "{refusal}");
        assert_eq!(refusal["error"]["next_action"], "fix");
    }
    let answered = answered.load(Ordering::Relaxed) as i64;
    // Every proxy refuses now.
    for (_, proxy) in &proxies {
        let response = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&acme.key),
                &request("gpt-4o-mini", false),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 429, "{}", response.text());
        assert!(
            response.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("acme/web (total)")
        );
    }
    // The spend, once delivered, stays within the limit: each request reserved its largest
    // cost before it was forwarded, so the bound here is the limit itself.
    eventually("all usage delivered", 15, async || {
        budget_row(&cp, "acme/web")["requests"].as_i64() == Some(answered)
    })
    .await;
    let row = budget_row(&cp, "acme/web");
    let spent = micros(&row["spent_usd"]);
    assert_eq!(spent, answered * 305);
    assert!(spent <= LIMIT, "overshoot: spent {spent} of {LIMIT}");
    // Nearly all of it was usable (leases held back at most a few requests' worth).
    assert!(
        spent >= LIMIT - 4 * 2 * 306,
        "spent only {spent} of {LIMIT}"
    );
    for (_, proxy) in &proxies {
        assert_eq!(
            metric(&http, proxy, "sluice_budget_reserved_micros").await,
            0.0
        );
    }

    // Raised: every proxy admits again, without a restart.
    cp.ctl(&[
        "budget",
        "update",
        "acme/web",
        "--period",
        "total",
        "--limit-usd",
        "1",
    ])
    .ok();
    for (_, proxy) in &proxies {
        eventually("re-admitted after the raise", 10, async || {
            http.post(
                &proxy.url("/v1/chat/completions"),
                Some(&acme.key),
                &request("gpt-4o-mini", false),
            )
            .await
            .is_ok_and(|r| r.status == 200)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_cancellations_never_cause_phantom_refusals() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-phantoms", &["--timeout-ms", "500"], &[]);
    for (name, slug) in [("slowpoke", "slow"), ("broken", "fail-500")] {
        let deployment = format!("openai:{slug}");
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{name}"),
            "--deployment",
            &deployment,
        ])
        .ok();
    }
    // 100 requests of 305 µ$ is half of it.
    cp.ctl(&[
        "budget",
        "create",
        "acme/web",
        "--period",
        "month",
        "--limit-usd",
        "0.061",
        "--posture",
        "hard",
    ])
    .ok();
    let http = Http::new();
    let (_dir, proxy) = start_proxy(&cp, &acme.token);
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..100 {
        let response = http
            .post(&url, Some(&acme.key), &request("gpt-4o-mini", false))
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }

    // The mix, concurrently: cancelled streams, upstream timeouts, upstream 5xx, and normal
    // requests between them. None may be refused for budget.
    let refused = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..60 {
        let (url, key, refused) = (url.clone(), acme.key.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let http = Http::new();
            let (model, stream) = match n % 4 {
                0 => ("gpt-4o-mini", true),
                1 => ("slowpoke", false),
                2 => ("broken", false),
                _ => ("gpt-4o-mini", false),
            };
            let body = request(model, stream);
            if stream {
                // Read the first chunk, then hang up.
                let response = http.post_head(&url, &key, &body).await.unwrap();
                if response.status() == 429 {
                    refused.store(true, Ordering::Relaxed);
                }
                let mut body = response.into_body();
                let _ = body.frame().await;
                return;
            }
            let response = http.post(&url, Some(&key), &body).await.unwrap();
            if response.status == 429 {
                refused.store(true, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        !refused.load(Ordering::Relaxed),
        "a phantom budget_exceeded"
    );
    // Quiescent: nothing stays reserved.
    eventually("reservations released", 10, async || {
        metric(&http, &proxy, "sluice_budget_reserved_micros").await == 0.0
    })
    .await;
    // And the budget is still spendable.
    let response = http
        .post(&url, Some(&acme.key), &request("gpt-4o-mini", false))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_return_after_their_ttl_and_fail_closed_without_the_control_plane() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-leases", &[], &[("SLUICE_LEASE_TTL_MS", "2000")]);
    cp.ctl(&[
        "budget",
        "create",
        "acme/web",
        "--period",
        "day",
        "--limit-usd",
        "0.1",
        "--posture",
        "hard",
    ])
    .ok();
    cp.ctl(&[
        "budget",
        "create",
        "acme",
        "--period",
        "day",
        "--limit-usd",
        "0.1",
        "--posture",
        "soft",
    ])
    .ok();
    let http = Http::new();
    let (_dir, doomed) = start_proxy(&cp, &acme.token);
    doomed.wait_for_version(&http, cp.config_version()).await;
    let response = http
        .post(
            &doomed.url("/v1/chat/completions"),
            Some(&acme.key),
            &request("gpt-4o-mini", false),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let row = budget_row(&cp, "acme/web");
    assert_eq!(row["leases"], 1, "{row}");
    assert!(micros(&row["leased_usd"]) > 0, "{row}");

    // Killed while holding its lease: the lease lapses after the TTL and its room returns.
    drop(doomed.kill());
    eventually("the dead proxy's lease reclaimed", 10, async || {
        let row = budget_row(&cp, "acme/web");
        row["leases"] == 0 && micros(&row["leased_usd"]) == 0
    })
    .await;

    // A proxy cut off from its control plane spends what it holds, then refuses, saying why.
    let (_dir, cut_off) = start_proxy(&cp, &acme.token);
    cut_off.wait_for_version(&http, cp.config_version()).await;
    let url = cut_off.url("/v1/chat/completions");
    let response = http
        .post(&url, Some(&acme.key), &request("gpt-4o-mini", false))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    drop(cp.stop());
    let refusal = loop {
        let response = http
            .post(&url, Some(&acme.key), &request("gpt-4o-mini", false))
            .await
            .unwrap();
        if response.status != 200 {
            break response;
        }
    };
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    let message = refusal.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("control plane is unreachable"),
        "{message}"
    );
    let _ = cp_dir;
}

/// Output limits an attacker picks to break the reservation arithmetic (2^31 … 2^64−1, past
/// u64, negative, fractional, exponent, a string, zero) or to hide from it (`null`), on every
/// field that sets one: under a spent HARD budget each is refused — `invalid_request` naming
/// the field, or `budget_exceeded` — and none reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_limit_slips_a_request_past_a_spent_budget() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-hostile-limits", &[], &[]);
    cp.add_provider_model(
        "acme/google",
        "google",
        &format!("http://{}", upstream.addr),
        &[("main", "AIza-hostile-limits")],
        "acme/gemini",
        "gemini-2.5-flash",
    );
    cp.hard_budget("acme/web", "0.0001");
    let http = Http::new();
    let (_dir, proxy) = start_proxy(&cp, &acme.token);
    proxy.wait_for_version(&http, cp.config_version()).await;
    let chat = proxy.url("/v1/chat/completions");
    // Reserved as 100 output tokens (fits $0.0001), reported as 500: the budget is spent.
    let spend = json!({"model": "gpt-4o-mini", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "usage:30/500"}]});
    let spent = http.post(&chat, Some(&acme.key), &spend).await.unwrap();
    assert_eq!(spent.status, 200, "{}", spent.text());
    let upstream_calls = upstream.requests().len();

    let hostile = [
        json!(2_147_483_648_u64),
        json!(9_007_199_254_740_992_u64),
        json!(4_611_686_018_427_387_904_u64),
        json!(i64::MAX),
        json!(u64::MAX),
        serde_json::from_str::<Value>("18446744073709551616").unwrap(),
        json!(-1),
        json!(-9_223_372_036_854_775_807_i64),
        json!(1.5),
        json!(100.0),
        serde_json::from_str::<Value>("1e3").unwrap(),
        json!("100"),
        json!(0),
        Value::Null,
        json!(1),
    ];
    let chat_body = |field: &str, value: &Value| {
        let mut body =
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        body[field] = value.clone();
        body
    };
    for value in &hostile {
        let mut cases = vec![
            ("max_tokens", chat.clone(), chat_body("max_tokens", value)),
            (
                "max_completion_tokens",
                chat.clone(),
                chat_body("max_completion_tokens", value),
            ),
            (
                "max_output_tokens",
                proxy.url("/v1/responses"),
                json!({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": value}),
            ),
            (
                "generationConfig.maxOutputTokens",
                proxy.url("/v1beta/models/gemini:generateContent"),
                json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                       "generationConfig": {"maxOutputTokens": value}}),
            ),
        ];
        for (field, url, body) in cases.drain(..) {
            let response = http.post(&url, Some(&acme.key), &body).await.unwrap();
            let answer = response.json();
            let error = answer["error"].clone();
            match response.status.as_u16() {
                400 => {
                    // OpenAI's shape says it in `code`, Google's in `sluice_code`.
                    let code = error["sluice_code"].as_str().or(error["code"].as_str());
                    assert_eq!(code, Some("invalid_request"), "{field}={value}: {answer}");
                    let named = error["param"] == field
                        || error["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains(field);
                    assert!(
                        named,
                        "{field}={value}: the refusal names no field: {answer}"
                    );
                }
                429 => assert!(
                    answer.to_string().contains("budget"),
                    "{field}={value}: {answer}"
                ),
                other => panic!("{field}={value} was answered {other}: {answer}"),
            }
            // A fair limit, or none, meets the spent budget itself.
            if value.is_null() || value == &json!(1) {
                assert_eq!(response.status, 429, "{field}={value}: {answer}");
            }
            // Numbers no model can produce are refused as requests, not left to the budget.
            if value.as_u64().is_some_and(|v| v > 1 << 30) || value.as_i64().is_some_and(|v| v < 1)
            {
                assert_eq!(response.status, 400, "{field}={value}: {answer}");
            }
        }
    }
    assert_eq!(
        upstream.requests().len(),
        upstream_calls,
        "a hostile output limit reached the upstream"
    );
}
