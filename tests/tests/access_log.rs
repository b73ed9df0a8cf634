//! Logs that join traces: with `log_format = json` every line the proxy writes is one JSON
//! object; each model call leaves exactly one access line (a stream's at its end) with its
//! request id, key id, model, provider, status, error code, latency, tokens, cost and source,
//! and, when traced, the trace and span ids of its exported server span; no secret and no
//! prompt text in any line. `access_log = false` turns the lines off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use sluice_e2e::otlp_receiver::OtlpReceiver;
use sluice_e2e::{caught_up_proxy_with, live_stack};

const PROVIDER_KEY: &str = "sk-access-log-canary-provider-key";
const PROMPT: &str = "the secret recipe is canary-prompt-text";

fn access_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
        })
        .filter(|line| line["target"] == "sluice::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_call_leaves_one_json_access_line_joined_to_its_trace() {
    let receiver = OtlpReceiver::start().await;
    let stack = live_stack(PROVIDER_KEY);
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            ("SLUICE_PROXY_LOG_FORMAT", "json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": PROMPT}]})
    };
    let whole = http
        .post(&url, Some(&stack.acme.key), &chat(false))
        .await
        .unwrap();
    assert_eq!(whole.status, 200);
    let (status, frames) = http
        .post_streaming(&url, &stack.acme.key, &chat(true))
        .await;
    assert_eq!(status, 200);
    assert!(frames.len() > 1);
    let unknown = http
        .post(
            &url,
            Some(&stack.acme.key),
            &json!({"model": "no-such-model", "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let bad_key = http
        .post(&url, Some("sk-sluice-not-a-key"), &chat(false))
        .await
        .unwrap();
    assert_eq!(bad_key.status, 401);
    let request_id = |answer: &sluice_e2e::proxy::HttpResponse| {
        answer.headers["x-request-id"].to_str().unwrap().to_owned()
    };
    let spans = receiver.wait_for_spans(6, Duration::from_secs(10)).await;
    let (_, output) = proxy.terminate();
    let output = output.text();

    let lines = access_lines(&output);
    assert_eq!(lines.len(), 4, "one line per model call:\n{output}");
    let by_id = |id: &str| {
        let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "one line for {id}:\n{output}");
        found[0]
    };
    let served = by_id(&request_id(&whole));
    assert_eq!(served["status"], 200);
    assert_eq!(served["endpoint"], "/v1/chat/completions");
    assert_eq!(served["model"], "gpt-4o-mini");
    assert_eq!(served["provider"], "openai");
    assert_eq!(served["source"], "provider_reported");
    assert_eq!(served["attempts"], 1);
    assert!(served["input_tokens"].as_u64().unwrap() > 0);
    assert!(served["output_tokens"].as_u64().unwrap() > 0);
    assert!(served["cost_micros"].as_i64().unwrap() > 0);
    assert!(served["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(served.get("code").is_none());
    let key_id = served["key_id"].as_str().unwrap();
    assert!(!key_id.is_empty() && !stack.acme.key.contains(key_id));

    // The stream's line is written at its end, with what the stream reported.
    let streamed = lines
        .iter()
        .find(|l| l["status"] == 200 && l["request_id"] != served["request_id"])
        .unwrap();
    assert_eq!(streamed["source"], "provider_reported");
    assert!(streamed["output_tokens"].as_u64().unwrap() > 0);

    let refused = by_id(&request_id(&unknown));
    assert_eq!(refused["status"], 404);
    assert_eq!(refused["code"], "unsupported_model");
    assert_eq!(refused["key_id"], served["key_id"]);
    assert_eq!(refused["model"], "");
    assert!(refused.get("input_tokens").is_none(), "no record, no usage");
    let unknown_key = by_id(&request_id(&bad_key));
    assert_eq!(unknown_key["code"], "invalid_api_key");
    assert_eq!(unknown_key["key_id"], "");

    // Each line names its request's server span.
    for line in &lines {
        let trace_id = hex::decode(line["trace_id"].as_str().unwrap()).unwrap();
        let span_id = hex::decode(line["span_id"].as_str().unwrap()).unwrap();
        assert!(
            spans.iter().any(|(_, span)| span.trace_id == trace_id
                && span.span_id == span_id
                && span.kind == 2),
            "{line} names no exported server span"
        );
    }
    for secret in [
        PROVIDER_KEY,
        stack.acme.key.as_str(),
        PROMPT,
        "canary-prompt",
    ] {
        assert!(
            !output.contains(secret),
            "{secret} is in the proxy's output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_can_be_turned_off_or_sent_to_a_file_and_text_is_the_default_format() {
    let stack = live_stack(PROVIDER_KEY);
    let (_dir, quiet, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[("SLUICE_PROXY_ACCESS_LOG", "false")],
    )
    .await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let answer = http
        .post(
            &quiet.url("/v1/chat/completions"),
            Some(&stack.acme.key),
            &body,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let (_, output) = quiet.terminate();
    assert!(
        !output.text().contains("sluice::access"),
        "{}",
        output.text()
    );
    assert!(
        !http
            .get(&format!("{}/metrics", stack.cp.url()), None)
            .await
            .unwrap()
            .text()
            .is_empty()
    );

    let (_dir, talking, http) = caught_up_proxy_with(&stack.cp, &stack.acme.token, &[]).await;
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("access.log");
    let (_dir, to_file, _) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[("SLUICE_PROXY_ACCESS_LOG_FILE", file.to_str().unwrap())],
    )
    .await;
    for _ in 0..3 {
        let answer = http
            .post(
                &to_file.url("/v1/chat/completions"),
                Some(&stack.acme.key),
                &body,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let (_, output) = to_file.terminate();
    assert!(!output.text().contains("sluice::access"));
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written
            .lines()
            .filter(|l| l.contains(" INFO sluice::access: "))
            .count(),
        3,
        "{written}"
    );
    let answer = http
        .post(
            &talking.url("/v1/chat/completions"),
            Some(&stack.acme.key),
            &body,
        )
        .await
        .unwrap();
    let request_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    let metrics = http
        .get(&talking.url("/metrics"), None)
        .await
        .unwrap()
        .text();
    assert!(metrics.contains("\nsluice_access_log_lines_dropped_total 0\n"));
    let (_, output) = talking.terminate();
    let output = output.text();
    let line = output
        .lines()
        .find(|line| line.contains(" INFO sluice::access: "))
        .unwrap_or_else(|| panic!("no access line:\n{output}"));
    assert!(
        line.contains(&format!(
            "request_id={request_id} endpoint=/v1/chat/completions "
        )) && line.contains(" model=gpt-4o-mini provider=openai status=200 code=\"\" "),
        "{line}"
    );
}
