//! Every upstream timeout, with short settings, the real binaries and the mock speaking
//! OpenAI's wire format: connecting (a TLS handshake that never completes), the first byte (a
//! whole answer's headers, a stream's first event), the gap between chunks, and the request's
//! total (its deployment's, or the shorter one a request asks for with `x-sluice-timeout-ms`).
//! Each ends in `upstream_timeout` (next action `retry`) naming the setting — a 504 before the
//! answer starts, the family's error event in a stream — no request outlives its total, each
//! leaves its usage record, and no reservation stays behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::proxy::Http;
use sluice_e2e::{await_usage, caught_up_proxy, live_stack};

/// How late an expiry may be answered: a loaded two-core machine runs every test at once.
const SLACK: Duration = Duration::from_millis(900);

struct Case {
    model: &'static str,
    upstream_model: &'static str,
    flags: &'static [&'static str],
    stream: bool,
    /// `x-sluice-timeout-ms`, if the request asks for a total.
    asks: Option<&'static str>,
    /// The setting the error names, and when it should run out.
    setting: &'static str,
    after: Duration,
}

const fn case(
    model: &'static str,
    upstream_model: &'static str,
    flags: &'static [&'static str],
    stream: bool,
    setting: &'static str,
    after_ms: u64,
) -> Case {
    Case {
        model,
        upstream_model,
        flags,
        stream,
        asks: None,
        setting,
        after: Duration::from_millis(after_ms),
    }
}

const CASES: &[Case] = &[
    // The mock's `slow` answers after 3 s.
    case(
        "first-byte",
        "slow",
        &["--first-byte-timeout-ms", "300", "--max-attempts", "1"],
        false,
        "first_byte_ms",
        300,
    ),
    // `silent` sends a stream's headers and never an event.
    case(
        "first-event",
        "silent",
        &["--first-byte-timeout-ms", "300", "--max-attempts", "1"],
        true,
        "first_byte_ms",
        300,
    ),
    // `stall-body` sends half an answer; `stall` one event.
    case(
        "idle-whole",
        "stall-body",
        &["--idle-timeout-ms", "300", "--max-attempts", "1"],
        false,
        "idle_ms",
        300,
    ),
    case(
        "idle-stream",
        "stall",
        &["--idle-timeout-ms", "300"],
        true,
        "idle_ms",
        300,
    ),
    // Retried after its first byte times out, until the total runs out: 250 + 250, then
    // the total's 600 cuts the third attempt short.
    case(
        "total-whole",
        "slow",
        &[
            "--first-byte-timeout-ms",
            "250",
            "--total-timeout-ms",
            "600",
            "--backoff-base-ms",
            "1",
            "--backoff-max-ms",
            "1",
            "--attempts-per-key",
            "5",
            "--attempts-per-deployment",
            "5",
            "--max-attempts",
            "5",
        ],
        false,
        "total_ms",
        600,
    ),
    // The mock streams its answer over 750 ms.
    case(
        "total-stream",
        "gpt-4o-mini",
        &["--total-timeout-ms", "400"],
        true,
        "total_ms",
        400,
    ),
    Case {
        asks: Some("400"),
        ..case("asks-less", "slow", &[], false, "total_ms", 400)
    },
    Case {
        asks: Some("300"),
        ..case(
            "asks-less-stream",
            "gpt-4o-mini",
            &[],
            true,
            "total_ms",
            300,
        )
    },
    // A request cannot ask for more than its deployment gives.
    Case {
        asks: Some("60000"),
        ..case(
            "asks-more",
            "slow",
            &["--total-timeout-ms", "500"],
            false,
            "total_ms",
            500,
        )
    },
];

/// Prices that make every request reserve part of the budget.
const PRICES: [&str; 4] = ["--input-price", "150000", "--output-price", "600000"];

/// A listener that accepts connections and never says a word: a TLS handshake to it never
/// completes.
fn black_hole() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    addr
}

/// The code and message a failed answer carries: its error body, or a stream's last event.
fn error_of(stream: bool, status: http::StatusCode, text: &str) -> Value {
    if !stream {
        assert_eq!(status, 504, "{text}");
        return serde_json::from_str(text).unwrap();
    }
    assert_eq!(
        status, 200,
        "a stream's head goes out before its failure: {text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text
        .split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .last()
        .unwrap_or_default();
    serde_json::from_str(last.strip_prefix("data: ").unwrap_or(last)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_timeout_answers_in_time_with_its_record_and_no_reservation_left() {
    let stack = live_stack("sk-timeouts-test");
    let cp = &stack.cp;
    cp.ctl(&[
        "budget",
        "create",
        "acme/web",
        "--period",
        "day",
        "--limit-usd",
        "10",
        "--posture",
        "hard",
    ])
    .ok();
    for case in CASES {
        let mut args = vec![
            "model".to_owned(),
            "create".to_owned(),
            format!("acme/{}", case.model),
            "--deployment".to_owned(),
            format!("openai:{}", case.upstream_model),
        ];
        args.extend(
            case.flags
                .iter()
                .chain(&PRICES)
                .map(|flag| (*flag).to_owned()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cp.ctl(&args).ok();
    }
    let shown = cp.ctl(&["model", "get", "acme/first-byte"]).ok().to_owned();
    assert!(shown.contains("first_byte_ms=300"), "{shown}");
    let refused = cp.ctl(&[
        "model",
        "update",
        "acme/first-byte",
        "--connect-timeout-ms",
        "60001",
    ]);
    assert!(
        refused.err().contains("timeouts.connect_ms"),
        "{}",
        refused.err()
    );
    // A provider whose host accepts connections and never completes a TLS handshake.
    let hole = black_hole();
    cp.add_provider_model(
        "acme/unreachable",
        "openai",
        &format!("https://{hole}/v1"),
        &[("main", "sk-unreachable")],
        "acme/connect",
        "gpt-4o-mini",
    );
    cp.ctl(&[
        "provider",
        "update",
        "acme/unreachable",
        "--connect-timeout-ms",
        "300",
        "--max-attempts",
        "1",
    ])
    .ok();
    let mut priced = vec!["model", "update", "acme/connect"];
    priced.extend_from_slice(&PRICES);
    cp.ctl(&priced).ok();

    let (_dir, proxy, http) = caught_up_proxy(cp, &stack.acme.token).await;
    let url = proxy.url("/v1/chat/completions");
    let pool = sluice_e2e::store_of(stack.cp_dir.path()).await;
    let connect = Case {
        stream: false,
        ..case("connect", "", &[], false, "connect_ms", 300)
    };
    for case in CASES.iter().chain([&connect]) {
        let body = json!({"model": case.model, "stream": case.stream, "max_tokens": 100,
                          "messages": [{"role": "user", "content": "hi"}]});
        let mut headers = vec![];
        if let Some(asks) = case.asks {
            headers.push(("x-sluice-timeout-ms", asks));
        }
        let started = Instant::now();
        let answer = Http::new()
            .send(
                "POST",
                &url,
                Some(&stack.acme.key),
                &headers,
                body.to_string().into(),
            )
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", case.model));
        let took = started.elapsed();
        let error = error_of(case.stream, answer.status, &answer.text());
        let name = case.model;
        assert_eq!(
            error["error"]["code"], "upstream_timeout",
            "{name}: {error}"
        );
        assert_eq!(error["error"]["next_action"], "retry", "{name}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(case.setting), "{name}: {message}");
        assert!(
            took >= case.after && took < case.after + SLACK,
            "{name}: answered after {took:?}, its timeout is {:?}",
            case.after
        );
        let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        let (status, source, attempts): (i64, String, i64) =
            await_usage(&pool, "http_status, source, attempts", &id).await;
        assert_eq!((status, source.as_str()), (504, "ESTIMATED"), "{name}");
        if name == "total-whole" {
            // Two attempts cut at their first byte, the third by the total.
            assert_eq!(attempts, 3, "{name}");
        }
    }
    assert_eq!(stack.upstream.requests_for("slow"), 1 + 3 + 1 + 1);
    let reserved = proxy.metric(&http, "sluice_budget_reserved_micros").await;
    assert_eq!(reserved, 0.0, "reservations are released on every timeout");
}
