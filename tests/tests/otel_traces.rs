//! OpenTelemetry traces end to end: the real proxy exports to a real OTLP receiver (the
//! collector's own gRPC service and HTTP endpoint, decoded with the official types). A request
//! makes a server span (HTTP server conventions) joined to the caller's `traceparent`, and a
//! client span per upstream attempt (GenAI conventions); an unsampled parent is honoured; no
//! key ever reaches the collector; and a collector that is down or slow costs traffic nothing.
//! The control plane traces its admin RPCs, config pushes and usage batches to the same
//! receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use sluice_e2e::otlp_receiver::{OtlpReceiver, count_spans, double, int, text, texts};
use sluice_e2e::proxy::{Http, Proxy};
use sluice_e2e::{caught_up_proxy_with, contains_bytes, live_stack};

const PROVIDER_KEY: &str = "sk-canary-otel-provider-key-1f2e3d";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A whole chat request for the stack's model.
fn chat_json() -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

fn chat_body() -> Bytes {
    Bytes::from(chat_json().to_string())
}

/// Asks the stack's model once, as an OpenAI SDK would (the key as a bearer token), for a 200.
async fn chat_ok(http: &Http, proxy: &Proxy, key: &str) {
    let bearer = format!("Bearer {key}");
    http.post_ok(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", &bearer)],
        &chat_json(),
    )
    .await;
}

fn span_named<'a>(spans: &'a [(String, Span)], name: &str, trace: &[u8]) -> &'a Span {
    spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.name == name && span.trace_id == trace)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_collector_joined_to_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let stack = live_stack(PROVIDER_KEY);
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_url),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-token=otel%20token",
            ),
            ("OTEL_SERVICE_NAME", "edge-proxy"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let whole = http
        .send(
            "POST",
            &url,
            Some(&stack.acme.key),
            &[("traceparent", &traceparent), ("tracestate", "vendor=7")],
            Bytes::from(
                json!({"model": "gpt-4o-mini", "max_tokens": 20, "temperature": 0.25, "top_p": 0.5,
                       "seed": 7, "stop": ["\n\n", "END"], "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(whole.status, 200, "{}", whole.text());
    let request_id = whole.headers["x-request-id"].to_str().unwrap().to_owned();
    let (status, _) = http
        .post_streaming(
            &url,
            &stack.acme.key,
            &json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);

    let spans = receiver.wait_for_spans(4, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert!(spans.iter().all(|(service, _)| service == "edge-proxy"));
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let server = span_named(&spans, "POST /v1/chat/completions", &trace_id);
    assert_eq!(server.kind, 2, "a server span");
    assert_eq!(server.parent_span_id, hex::decode(PARENT_ID).unwrap());
    assert_eq!(server.trace_state, "vendor=7");
    assert!(server.start_time_unix_nano < server.end_time_unix_nano);
    let attributes = &server.attributes;
    assert_eq!(
        text(attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(int(attributes, "http.response.status_code"), Some(200));
    assert_eq!(text(attributes, "sluice.request_id"), Some(request_id));
    assert_eq!(
        text(attributes, "sluice.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        text(attributes, "sluice.usage.source").as_deref(),
        Some("provider_reported")
    );
    assert!(text(attributes, "sluice.project.id").is_some());
    assert!(text(attributes, "sluice.virtual_key.id").is_some());
    assert!(int(attributes, "sluice.cost_micros").unwrap() > 0);
    assert_eq!(int(attributes, "sluice.attempts"), Some(1));
    let overhead: i64 = whole.headers["x-sluice-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(int(attributes, "sluice.overhead_us"), Some(overhead));

    let client = span_named(&spans, "chat gpt-4o-mini", &trace_id);
    assert_eq!(client.kind, 3, "a client span");
    assert_eq!(client.parent_span_id, server.span_id);
    let attributes = &client.attributes;
    assert_eq!(
        text(attributes, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        text(attributes, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        text(attributes, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(int(attributes, "gen_ai.request.max_tokens"), Some(20));
    assert_eq!(double(attributes, "gen_ai.request.temperature"), Some(0.25));
    assert_eq!(double(attributes, "gen_ai.request.top_p"), Some(0.5));
    assert_eq!(int(attributes, "gen_ai.request.seed"), Some(7));
    assert_eq!(
        texts(attributes, "gen_ai.request.stop_sequences"),
        Some(vec!["\n\n".to_owned(), "END".to_owned()])
    );
    // What the answer said of itself.
    assert_eq!(
        text(attributes, "gen_ai.response.id").as_deref(),
        Some("chatcmpl-mock0001")
    );
    assert!(
        !text(attributes, "gen_ai.response.model")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        texts(attributes, "gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert!(int(attributes, "gen_ai.usage.input_tokens").unwrap() > 0);
    assert!(int(attributes, "gen_ai.usage.output_tokens").unwrap() > 0);
    assert_eq!(
        text(attributes, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        int(attributes, "server.port"),
        Some(i64::from(stack.upstream.addr.port()))
    );
    assert_eq!(int(attributes, "http.response.status_code"), Some(200));
    assert!(client.status.is_none());
    // The upstream heard of the trace, with the attempt's span as its parent.
    let sent = &stack.upstream.requests()[0].headers;
    assert_eq!(
        sent["traceparent"].to_str().unwrap(),
        format!("00-{TRACE_ID}-{}-01", hex::encode(&client.span_id))
    );
    assert_eq!(sent["tracestate"].to_str().unwrap(), "vendor=7");
    // A provider set not to hear of traces hears of none.
    stack
        .cp
        .ctl(&[
            "provider",
            "update",
            "acme/openai",
            "--trace-context",
            "false",
        ])
        .ok();
    let shown = stack
        .cp
        .ctl(&["-o", "json", "provider", "get", "acme/openai"])
        .json();
    assert_eq!(shown["trace_context"], false, "{shown}");
    proxy
        .wait_for_version(&http, stack.cp.config_version())
        .await;
    let asked_before = stack.upstream.requests().len();
    let quiet = http
        .send(
            "POST",
            &url,
            Some(&stack.acme.key),
            &[("traceparent", &traceparent)],
            chat_body(),
        )
        .await
        .unwrap();
    assert_eq!(quiet.status, 200);
    let sent = &stack.upstream.requests()[asked_before].headers;
    assert!(!sent.contains_key("traceparent") && !sent.contains_key("tracestate"));

    // The stream started a trace of its own, and its attempt lasted as long as it did.
    let (_, stream_server) = spans
        .iter()
        .find(|(_, span)| span.kind == 2 && span.trace_id != trace_id)
        .expect("the stream's server span");
    assert!(stream_server.parent_span_id.is_empty(), "a root span");
    let (_, stream_client) = spans
        .iter()
        .find(|(_, span)| span.parent_span_id == stream_server.span_id)
        .expect("the stream's attempt");
    assert_eq!(
        stream_client.end_time_unix_nano,
        stream_server.end_time_unix_nano
    );
    let streamed = &stream_client.attributes;
    assert_eq!(
        text(streamed, "gen_ai.response.id").as_deref(),
        Some("chatcmpl-mock0001")
    );
    assert_eq!(
        texts(streamed, "gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert!(text(streamed, "gen_ai.request.temperature").is_none());

    assert!(
        receiver
            .last_headers()
            .contains(&("x-collector-token".to_owned(), "otel token".to_owned())),
        "{:?}",
        receiver.last_headers()
    );
    let exported = receiver.bytes();
    for secret in [PROVIDER_KEY, stack.acme.key.as_str(), "otel token"] {
        assert!(
            !contains_bytes(&exported, secret.as_bytes()),
            "{secret} was exported"
        );
    }
    assert!(!proxy.output.text().contains("otel token"));
    // Counted once the collector's answer is back, a moment after it has the spans.
    let deadline = Instant::now() + Duration::from_secs(5);
    let exported = loop {
        let exported = proxy
            .metric(&http, "sluice_otel_spans_exported_total")
            .await;
        if exported >= 6.0 || Instant::now() > deadline {
            break exported;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exported, 6.0, "the four spans, and the quiet request's two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_honours_an_unsampled_parent() {
    let receiver = OtlpReceiver::start().await;
    let stack = live_stack(PROVIDER_KEY);
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let body = chat_body();
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    for traceparent in [Some(unsampled.as_str()), None] {
        let headers: Vec<(&str, &str)> = traceparent
            .map(|t| ("traceparent", t))
            .into_iter()
            .collect();
        let answer = http
            .send("POST", &url, Some(&stack.acme.key), &headers, body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    // A failing request is traced too, its error on the span.
    let refused = http
        .send("POST", &url, Some("sk-sluice-not-a-key"), &[], body.clone())
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    let spans = receiver.wait_for_spans(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans_now = receiver.spans();
    assert_eq!(spans_now.len(), spans.len(), "nothing more arrives");
    assert_eq!(spans.len(), 3, "{spans:#?}");
    // The benchmark's receiver counts spans without decoding them: the count agrees.
    assert_eq!(count_spans(&receiver.bytes()), Some(3));
    let trace_id = hex::decode(TRACE_ID).unwrap();
    assert!(
        spans
            .iter()
            .all(|(service, span)| span.trace_id != trace_id && service == "sluice-proxy"),
        "the unsampled parent's request is not exported"
    );
    let refused_span = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| int(&span.attributes, "http.response.status_code") == Some(401))
        .expect("the refused request's span");
    assert_eq!(
        text(&refused_span.attributes, "error.type").as_deref(),
        Some("invalid_api_key")
    );
    // An unsampled request records nothing, and passes its caller's context on as it came.
    let passed_on = &stack.upstream.requests()[0].headers;
    assert_eq!(passed_on["traceparent"].to_str().unwrap(), unsampled);
    // A request without one, sampled, sends its attempt's own.
    let own = stack.upstream.requests()[1].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(own.ends_with("-01") && !own.contains(TRACE_ID), "{own}");
    assert!(
        refused_span.status.is_none(),
        "a 4xx is the client's error, not the server's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_slow_costs_traffic_nothing() {
    let receiver = OtlpReceiver::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let stack = live_stack(PROVIDER_KEY);
    let body = chat_body();
    receiver.slow_down(Duration::from_secs(3));
    for endpoint in [closed.as_str(), receiver.grpc_url.as_str()] {
        let (_dir, proxy, http) = caught_up_proxy_with(
            &stack.cp,
            &stack.acme.token,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "200"),
                ("OTEL_BSP_SCHEDULE_DELAY", "20"),
            ],
        )
        .await;
        let url = proxy.url("/v1/chat/completions");
        let mut slowest = Duration::ZERO;
        for _ in 0..40 {
            let started = Instant::now();
            let answer = http
                .send("POST", &url, Some(&stack.acme.key), &[], body.clone())
                .await
                .unwrap();
            assert_eq!(answer.status, 200, "{endpoint}: {}", answer.text());
            slowest = slowest.max(started.elapsed());
        }
        assert!(
            slowest < Duration::from_secs(1),
            "{endpoint}: a request took {slowest:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy
            .metric(&http, "sluice_otel_spans_export_failed_total")
            .await
            == 0.0
        {
            assert!(
                Instant::now() < deadline,
                "{endpoint}: no failed export counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxied_answer_says_the_gateways_own_time() {
    let stack = live_stack(PROVIDER_KEY);
    stack.cp.add_paused_model();
    let (_dir, proxy, http) = caught_up_proxy_with(&stack.cp, &stack.acme.token, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    let started = Instant::now();
    let answer = http
        .post(
            &url,
            Some(&stack.acme.key),
            &json!({"model": "paused", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    let total = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let overhead: u64 = answer.headers["x-sluice-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let pause = sluice_e2e::mock_openai::PAUSE;
    assert!(
        total >= pause,
        "the upstream took {pause:?}; the answer {total:?}"
    );
    assert!(
        Duration::from_micros(overhead) < pause / 2,
        "the upstream's {pause:?} is left out of the overhead: {overhead} µs"
    );
    // A stream says it too, in its head; an answer Sluice made itself (an error) does not.
    let stream = http
        .send(
            "POST",
            &url,
            Some(&stack.acme.key),
            &[],
            Bytes::from(
                json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(stream.status, 200);
    assert!(stream.headers.contains_key("x-sluice-overhead-us"));
    let refused = http
        .post(
            &url,
            Some("sk-sluice-not-a-key"),
            &json!({"model": "gpt-4o-mini", "messages": []}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert!(!refused.headers.contains_key("x-sluice-overhead-us"));
}

/// One request's two spans: the server span routed as `route`, and its attempt's client span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_and_operation_is_traced_on_the_genai_conventions() {
    let receiver = OtlpReceiver::start().await;
    let family = sluice_e2e::family_stack(
        "anthropic",
        "sk-ant-canary-otel-5566",
        "claude",
        "claude-sonnet-4-5",
    )
    .await;
    let stack = &family.stack;
    stack.cp.add_provider_model(
        "acme/google",
        "google",
        &format!("http://{}", stack.upstream.addr),
        &[("main", "AIza-canary-otel-7788")],
        "acme/gemini",
        "gemini-2.5-flash",
    );
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let key = stack.acme.key.as_str();
    let bearer = format!("Bearer {key}");
    let openai = [("authorization", bearer.as_str())];
    let anthropic = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    let google = [("x-goog-api-key", key)];
    let hi = json!([{"role": "user", "content": "hi"}]);
    let chat =
        |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": hi});
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    // Each family and operation, whole and streamed.
    let cases: Vec<Case> = vec![
        (
            "/v1/messages",
            &anthropic,
            json!({"model": "claude", "max_tokens": 64, "messages": hi}),
            "chat claude-sonnet-4-5",
            "anthropic",
            "chat",
        ),
        (
            "/v1/messages",
            &anthropic,
            json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": hi}),
            "chat claude-sonnet-4-5",
            "anthropic",
            "chat",
        ),
        (
            "/v1/chat/completions",
            &openai,
            chat("claude", false),
            "chat claude-sonnet-4-5",
            "anthropic",
            "chat",
        ),
        (
            "/v1/chat/completions",
            &openai,
            chat("claude", true),
            "chat claude-sonnet-4-5",
            "anthropic",
            "chat",
        ),
        (
            "/v1/chat/completions",
            &openai,
            chat("gemini", false),
            "chat gemini-2.5-flash",
            "gcp.gemini",
            "chat",
        ),
        (
            "/v1/chat/completions",
            &openai,
            chat("gemini", true),
            "chat gemini-2.5-flash",
            "gcp.gemini",
            "chat",
        ),
        (
            "/v1/responses",
            &openai,
            json!({"model": "gpt-4o-mini", "input": "hi"}),
            "chat gpt-4o-mini",
            "openai",
            "chat",
        ),
        (
            "/v1/responses",
            &openai,
            json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}),
            "chat gpt-4o-mini",
            "openai",
            "chat",
        ),
        (
            "/v1/embeddings",
            &openai,
            json!({"model": "gpt-4o-mini", "input": ["one", "two"]}),
            "embeddings gpt-4o-mini",
            "openai",
            "embeddings",
        ),
        (
            "/v1beta/models/gemini:generateContent",
            &google,
            contents.clone(),
            "generate_content gemini-2.5-flash",
            "gcp.gemini",
            "generate_content",
        ),
        (
            "/v1beta/models/gemini:streamGenerateContent?alt=sse",
            &google,
            contents,
            "generate_content gemini-2.5-flash",
            "gcp.gemini",
            "generate_content",
        ),
    ];
    let mut sent = Vec::new();
    for (path, headers, body, name, provider, operation) in &cases {
        let answer = http.post_ok(&proxy.url(path), headers, body).await;
        let request_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        sent.push((
            request_id,
            *path,
            body["stream"] == json!(true) || path.contains(":stream"),
            *name,
            *provider,
            *operation,
        ));
    }

    let spans = receiver
        .wait_for_spans(2 * cases.len(), Duration::from_secs(10))
        .await;
    assert_eq!(spans.len(), 2 * cases.len(), "{spans:#?}");
    for (request_id, path, stream, name, provider, operation) in sent {
        let case = format!("{path} (stream: {stream})");
        let client = client_span_of(&spans, &request_id);
        let server = spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| span.span_id == client.parent_span_id)
            .unwrap();
        let route = text(&server.attributes, "http.route").unwrap();
        assert_eq!(server.name, format!("POST {route}"), "{case}");
        assert!(
            path.starts_with(route.split('{').next().unwrap()),
            "{case}: {route}"
        );
        assert_eq!(server.kind, 2, "{case}");
        assert_eq!(client.kind, 3, "{case}");
        assert_eq!(client.trace_id, server.trace_id, "{case}");
        assert_eq!(
            int(&server.attributes, "http.response.status_code"),
            Some(200)
        );
        assert_eq!(client.name, name, "{case}");
        let attributes = &client.attributes;
        assert_eq!(
            text(attributes, "gen_ai.provider.name").as_deref(),
            Some(provider),
            "{case}"
        );
        assert_eq!(
            text(attributes, "gen_ai.operation.name").as_deref(),
            Some(operation),
            "{case}"
        );
        assert!(
            int(attributes, "gen_ai.usage.input_tokens").unwrap() > 0,
            "{case}"
        );
        assert_eq!(
            client
                .attributes
                .iter()
                .find(|kv| kv.key == "sluice.stream")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone()),
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(stream)),
            "{case}"
        );
        // Each family's answer, whole or streamed, says its model; a generation its id and
        // how it finished.
        assert!(
            !text(attributes, "gen_ai.response.model")
                .unwrap_or_default()
                .is_empty(),
            "{case}: {attributes:?}"
        );
        if operation != "embeddings" {
            assert!(
                !text(attributes, "gen_ai.response.id")
                    .unwrap_or_default()
                    .is_empty(),
                "{case}: {attributes:?}"
            );
            assert!(
                !texts(attributes, "gen_ai.response.finish_reasons")
                    .unwrap_or_default()
                    .is_empty(),
                "{case}: {attributes:?}"
            );
        }
    }
    let exported = receiver.bytes();
    for secret in ["sk-ant-canary-otel-5566", "AIza-canary-otel-7788", key] {
        assert!(
            !contains_bytes(&exported, secret.as_bytes()),
            "{secret} was exported"
        );
    }
}

/// One provoked error: what it is, where it is sent, and what it must answer.
struct Row<'a> {
    what: &'static str,
    url: &'a str,
    key: &'a str,
    body: Bytes,
    status: u16,
    code: &'static str,
    /// An attempt reached an upstream, so the request has a failed attempt span.
    reached: bool,
}

impl<'a> Row<'a> {
    fn new(
        what: &'static str,
        url: &'a str,
        key: &'a str,
        body: Bytes,
        status: u16,
        code: &'static str,
    ) -> Self {
        Self {
            what,
            url,
            key,
            body,
            status,
            code,
            reached: false,
        }
    }

    fn reaching(self) -> Self {
        Self {
            reached: true,
            ..self
        }
    }
}

/// Each error row of DESIGN.md, provoked for real, leaves a server span with its status, its
/// code as `error.type`, and status ERROR for a 5xx only; a request that reached an upstream
/// also leaves the failed attempt's client span with the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_row_leaves_an_error_span() {
    let receiver = OtlpReceiver::start().await;
    let stack = sluice_e2e::live_stack_with(PROVIDER_KEY, &["--timeout-ms", "1000"], &[]);
    let cp = &stack.cp;
    for (model, upstream_model) in [
        ("broken-key", "fail-401"),
        ("overloaded", "fail-429"),
        ("failing", "fail-500"),
        ("slow", "slow"),
    ] {
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{model}"),
            "--deployment",
            &format!("openai:{upstream_model}"),
        ])
        .ok();
    }
    // A provider with no key yet, and a model served only by it.
    cp.ctl(&[
        "provider",
        "create",
        "acme/empty",
        "--type",
        "openai",
        "--base-url",
        &stack.upstream.base_url(),
        "--allow-private-network",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/keyless",
        "--deployment",
        "empty:gpt-4o-mini",
    ])
    .ok();
    let limited = cp.virtual_key("acme/web/limited", &["gpt-4o-mini"]);
    let (_dir, proxy, http) = caught_up_proxy_with(
        cp,
        &stack.acme.token,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let chat = proxy.url("/v1/chat/completions");
    let body = |model: &str| {
        Bytes::from(
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
    };
    let key = stack.acme.key.as_str();
    let messages = proxy.url("/v1/messages");
    let native = Bytes::from(
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    let rows = [
        Row::new(
            "bad key",
            &chat,
            "sk-sluice-not-a-key",
            body("gpt-4o-mini"),
            401,
            "invalid_api_key",
        ),
        Row::new(
            "rejected provider key",
            &chat,
            key,
            body("broken-key"),
            502,
            "provider_key_invalid",
        )
        .reaching(),
        Row::new(
            "unknown model",
            &chat,
            key,
            body("no-such-model"),
            404,
            "unsupported_model",
        ),
        Row::new(
            "model not allowed",
            &chat,
            &limited,
            body("failing"),
            403,
            "unsupported_model",
        ),
        Row::new(
            "another family's endpoint",
            &messages,
            key,
            native,
            400,
            "provider_mismatch",
        ),
        Row::new(
            "no provider key",
            &chat,
            key,
            body("keyless"),
            409,
            "provider_not_ready",
        ),
        Row::new(
            "upstream timeout",
            &chat,
            key,
            body("slow"),
            504,
            "upstream_timeout",
        )
        .reaching(),
        Row::new(
            "upstream 5xx",
            &chat,
            key,
            body("failing"),
            502,
            "upstream_unavailable",
        )
        .reaching(),
        Row::new(
            "upstream 429",
            &chat,
            key,
            body("overloaded"),
            429,
            "upstream_rate_limited",
        )
        .reaching(),
    ];
    let mut answered = Vec::new();
    for row in rows {
        // Anthropic's SDKs send the key as `x-api-key`.
        let headers = [("anthropic-version", "2023-06-01"), ("x-api-key", row.key)];
        let headers = if row.url.ends_with("/v1/messages") {
            &headers[..]
        } else {
            &[]
        };
        let answer = http
            .send("POST", row.url, Some(row.key), headers, row.body)
            .await
            .unwrap();
        assert_eq!(
            answer.status.as_u16(),
            row.status,
            "{}: {}",
            row.what,
            answer.text()
        );
        let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        answered.push((row.what, id, row.status, row.code, row.reached));
    }
    // A HARD budget spent: the last row, since it stops the project.
    cp.hard_budget("acme/web", "0.000001");
    proxy.wait_for_version(&http, cp.config_version()).await;
    let spent = http
        .send("POST", &chat, Some(key), &[], body("gpt-4o-mini"))
        .await
        .unwrap();
    assert_eq!(spent.status, 429, "{}", spent.text());
    let id = spent.headers["x-request-id"].to_str().unwrap().to_owned();
    answered.push(("budget spent", id, 429, "budget_exceeded", false));

    // Every request's server span, which comes after its attempts'.
    let has_server = |spans: &[(String, Span)], id: &str| {
        spans.iter().any(|(_, span)| {
            span.kind == 2 && text(&span.attributes, "sluice.request_id").as_deref() == Some(id)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = receiver.spans();
        if answered.iter().all(|(_, id, ..)| has_server(&spans, id)) || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (what, id, status, code, reached) in answered {
        let server = spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| {
                span.kind == 2
                    && text(&span.attributes, "sluice.request_id").as_deref() == Some(id.as_str())
            })
            .unwrap_or_else(|| panic!("{what}: no server span for {id} in {spans:#?}"));
        assert_eq!(
            int(&server.attributes, "http.response.status_code"),
            Some(i64::from(status)),
            "{what}"
        );
        assert_eq!(
            text(&server.attributes, "error.type").as_deref(),
            Some(code),
            "{what}"
        );
        let error_status = server.status.as_ref().map(|s| s.code);
        assert_eq!(
            error_status,
            (status >= 500).then_some(2),
            "{what}: status ERROR for 5xx only"
        );
        let attempts: Vec<&Span> = spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.kind == 3 && span.parent_span_id == server.span_id)
            .collect();
        assert_eq!(
            !attempts.is_empty(),
            reached,
            "{what}: attempt spans {attempts:#?}"
        );
        if reached {
            let last = attempts
                .iter()
                .max_by_key(|span| span.start_time_unix_nano)
                .unwrap();
            assert!(
                text(&last.attributes, "error.type").is_some(),
                "{what}: {last:#?}"
            );
        }
    }
    assert!(!contains_bytes(&receiver.bytes(), PROVIDER_KEY.as_bytes()));
    assert!(!contains_bytes(&receiver.bytes(), key.as_bytes()));
}

/// The control plane's own spans: each admin RPC (the RPC conventions, its status, the audit
/// event it wrote), each config push to a proxy, each usage batch committed; no token or key
/// among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_traces_admin_calls_config_pushes_and_usage_batches() {
    let receiver = OtlpReceiver::start().await;
    let stack = sluice_e2e::live_stack_with(
        PROVIDER_KEY,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let missing = stack.cp.ctl(&["provider", "get", "acme/nowhere"]);
    assert!(!missing.success);
    let (_dir, proxy, http) = sluice_e2e::caught_up_proxy(&stack.cp, &stack.acme.token).await;
    chat_ok(&http, &proxy, &stack.acme.key).await;

    let named = |spans: &[(String, Span)], name: &str| {
        spans
            .iter()
            .filter(|(service, span)| service == "sluice-control-plane" && span.name == name)
            .map(|(_, span)| span.clone())
            .collect::<Vec<Span>>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = receiver.spans();
        if !named(&spans, "sluice.usage.batch").is_empty() || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let created = named(&spans, "sluice.admin.v1.AdminService/CreateModel");
    let created = created
        .first()
        .unwrap_or_else(|| panic!("no CreateModel span in {spans:#?}"));
    assert_eq!(created.kind, 2, "a server span");
    let attributes = &created.attributes;
    assert_eq!(text(attributes, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        text(attributes, "rpc.service").as_deref(),
        Some("sluice.admin.v1.AdminService")
    );
    assert_eq!(
        text(attributes, "rpc.method").as_deref(),
        Some("CreateModel")
    );
    assert_eq!(int(attributes, "rpc.grpc.status_code"), Some(0));
    assert!(created.status.is_none());
    let audit_id = text(attributes, "sluice.audit_event_id").expect("the audit event's id");
    let store = sluice_e2e::store_of(stack.cp_dir.path()).await;
    let action: String = sqlx::query_scalar("SELECT action FROM audit_events WHERE id = ?")
        .bind(&audit_id)
        .fetch_one(&store)
        .await
        .unwrap();
    assert!(action.starts_with("model."), "{action}");

    let refused = named(&spans, "sluice.admin.v1.AdminService/GetProvider");
    let refused = refused.first().expect("the failed call's span");
    assert_eq!(int(&refused.attributes, "rpc.grpc.status_code"), Some(5));
    assert!(
        refused.status.is_none(),
        "NOT_FOUND is the caller's, not the server's"
    );
    assert!(text(&refused.attributes, "sluice.audit_event_id").is_none());

    let pushes = named(&spans, "sluice.config.push");
    let push = pushes
        .last()
        .unwrap_or_else(|| panic!("no push span in {spans:#?}"));
    assert_eq!(
        text(&push.attributes, "sluice.config.reply").as_deref(),
        Some("ack")
    );
    assert_eq!(
        int(&push.attributes, "sluice.config.version"),
        Some(i64::try_from(stack.cp.config_version()).unwrap())
    );
    assert!(text(&push.attributes, "sluice.proxy_id").is_some());

    let batch = named(&spans, "sluice.usage.batch");
    let batch = batch.first().unwrap();
    assert_eq!(
        text(&batch.attributes, "sluice.usage.outcome").as_deref(),
        Some("committed")
    );
    assert!(int(&batch.attributes, "sluice.usage.records").unwrap() >= 1);

    let exported = receiver.bytes();
    for secret in [
        PROVIDER_KEY,
        stack.acme.key.as_str(),
        stack.acme.token.as_str(),
        stack.cp.admin_token.as_str(),
    ] {
        assert!(
            !contains_bytes(&exported, secret.as_bytes()),
            "{secret} was exported"
        );
    }
    let metrics = http
        .get(&format!("{}/metrics", stack.cp.url()), None)
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("\nsluice_otel_spans_dropped_total 0\n"),
        "{metrics}"
    );
}

/// Metrics go over OTLP as well as to Prometheus: the GenAI histograms under the conventions'
/// names, units and attribute keys, counters as monotonic cumulative sums; from the proxy over
/// HTTP/protobuf and from the control plane over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_go_over_otlp_from_both_processes() {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let receiver = OtlpReceiver::start().await;
    let stack = sluice_e2e::live_stack_with(
        PROVIDER_KEY,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_url),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                &format!("{}/v1/metrics", receiver.http_url),
            ),
            // Traced, so that the duration's bucket carries the request's trace.
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{}/v1/traces", receiver.http_url),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await;
    chat_ok(&http, &proxy, &stack.acme.key).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let (proxy_metrics, cp_metrics) = loop {
        let (p, c) = (
            receiver.last_metrics("sluice-proxy"),
            receiver.last_metrics("sluice-control-plane"),
        );
        let answered = p
            .iter()
            .any(|m| m.name == "gen_ai.client.operation.duration");
        let committed = c.iter().any(|m| m.name == "sluice_usage_records_committed");
        if (answered && committed) || Instant::now() > deadline {
            break (p, c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let named = |metrics: &[opentelemetry_proto::tonic::metrics::v1::Metric], name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} among {:?}",
                    metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
                )
            })
    };
    let duration = named(&proxy_metrics, "gen_ai.client.operation.duration");
    assert_eq!(duration.unit, "s");
    let Some(Data::Histogram(histogram)) = duration.data else {
        panic!("a histogram: {duration:?}");
    };
    assert_eq!(histogram.aggregation_temporality, 2, "cumulative");
    let point = &histogram.data_points[0];
    assert_eq!(
        text(&point.attributes, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        text(&point.attributes, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        text(&point.attributes, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(point.count, 1);
    assert_eq!(point.explicit_bounds.first(), Some(&0.01));
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    assert!(point.start_time_unix_nano > 0 && point.start_time_unix_nano <= point.time_unix_nano);
    // Its bucket's exemplar is the request's trace, as the collector received it.
    let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await;
    let exemplar = point
        .exemplars
        .first()
        .unwrap_or_else(|| panic!("no exemplar: {point:?}"));
    assert!(
        spans
            .iter()
            .any(|(_, span)| span.trace_id == exemplar.trace_id
                && span.span_id == exemplar.span_id
                && span.kind == 2),
        "the exemplar names the request's server span: {exemplar:?}"
    );
    assert!(exemplar.time_unix_nano > 0);
    assert!(matches!(
        exemplar.value,
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(seconds)) if seconds > 0.0
    ));

    let tokens = named(&proxy_metrics, "gen_ai.client.token.usage");
    assert_eq!(tokens.unit, "{token}");
    let responses = named(&proxy_metrics, "sluice_responses");
    let Some(Data::Sum(sum)) = responses.data else {
        panic!("a sum: {responses:?}");
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, 2);
    let ok = sum
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "status").as_deref() == Some("200"))
        .expect("the answered request");
    assert_eq!(
        ok.value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(1.0))
    );
    let Some(Data::Gauge(_)) = named(&proxy_metrics, "sluice_config_version").data else {
        panic!("a gauge");
    };
    let committed = named(&cp_metrics, "sluice_usage_records_committed");
    let Some(Data::Sum(sum)) = committed.data else {
        panic!("a sum: {committed:?}");
    };
    assert!(!sum.data_points.is_empty());
}

/// A call to trace: its route, the caller's headers, the body; the attempt span's name,
/// `gen_ai.provider.name` and `gen_ai.operation.name`.
type Case<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    serde_json::Value,
    &'a str,
    &'a str,
    &'a str,
);

/// The attempt span of the request `request_id` answered.
fn client_span_of<'a>(spans: &'a [(String, Span)], request_id: &str) -> &'a Span {
    let server = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| text(&span.attributes, "sluice.request_id").as_deref() == Some(request_id))
        .unwrap_or_else(|| panic!("no server span for {request_id}"));
    spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.parent_span_id == server.span_id && span.trace_id == server.trace_id)
        .unwrap_or_else(|| panic!("no attempt span for {request_id}"))
}

fn json_attribute(span: &Span, key: &str) -> Option<serde_json::Value> {
    text(&span.attributes, key).map(|raw| serde_json::from_str(&raw).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_completions_are_recorded_only_for_projects_that_opt_in() {
    let receiver = OtlpReceiver::start().await;
    let family = sluice_e2e::family_stack(
        "anthropic",
        "sk-ant-canary-capture-9911",
        "claude",
        "claude-sonnet-4-5",
    )
    .await;
    let stack = &family.stack;
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let key = stack.acme.key.as_str();
    let bearer = format!("Bearer {key}");
    let send = async |path: &str, headers: &[(&str, &str)], body: serde_json::Value| {
        let answer = http.post_ok(&proxy.url(path), headers, &body).await;
        answer.headers["x-request-id"].to_str().unwrap().to_owned()
    };
    let openai = [("authorization", bearer.as_str())];
    let anthropic = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    let ask = |text: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": text}]})
    };

    let unrecorded = send("/v1/chat/completions", &openai, ask("a private question")).await;
    let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await;
    let attempt = client_span_of(&spans, &unrecorded);
    for key in [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
    ] {
        assert!(
            text(&attempt.attributes, key).is_none(),
            "{key}: content is never recorded unless the project opts in"
        );
    }
    assert!(!contains_bytes(&receiver.bytes(), b"a private question"));

    let refused = stack.cp.ctl(&[
        "project",
        "update",
        "acme/web",
        "--capture-content-bytes",
        "70000",
    ]);
    assert!(refused.err().contains("at most 65536"), "{}", refused.err());
    stack
        .cp
        .ctl(&[
            "project",
            "update",
            "acme/web",
            "--capture-content-bytes",
            "1500",
        ])
        .ok();
    let shown = stack.cp.ctl(&["-o", "json", "project", "get", "acme/web"]);
    assert_eq!(shown.json()["content_capture_bytes"], 1500);
    proxy
        .wait_for_version(&http, stack.cp.config_version())
        .await;

    let whole = send("/v1/chat/completions", &openai, ask("What is a sluice?")).await;
    let native_stream = send(
        "/v1/messages",
        &anthropic,
        json!({"model": "claude", "max_tokens": 64, "stream": true, "system": "Be brief.",
               "messages": [{"role": "user", "content": "What is a weir?"}]}),
    )
    .await;
    let translated_stream = send(
        "/v1/chat/completions",
        &openai,
        json!({"model": "claude", "stream": true,
               "messages": [{"role": "user", "content": "What is a lock?"}]}),
    )
    .await;
    let long = send(
        "/v1/chat/completions",
        &openai,
        ask(&"a very long prompt ".repeat(500)),
    )
    .await;
    let spans = receiver.wait_for_spans(10, Duration::from_secs(10)).await;

    let attempt = client_span_of(&spans, &whole);
    assert_eq!(
        json_attribute(attempt, "gen_ai.input.messages"),
        Some(json!([
            {"role": "system", "parts": [{"type": "text", "content": "Answer in French."}]},
            {"role": "user", "parts": [{"type": "text", "content": "What is a sluice?"}]}
        ]))
    );
    let output = json_attribute(attempt, "gen_ai.output.messages").unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["finish_reason"], "stop");
    assert!(
        output[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello"),
        "{output}"
    );
    assert!(text(&attempt.attributes, "sluice.content.truncated").is_none());

    let attempt = client_span_of(&spans, &native_stream);
    assert_eq!(
        json_attribute(attempt, "gen_ai.system_instructions"),
        Some(json!([{"type": "text", "content": "Be brief."}])),
        "Anthropic's system prompt is given apart"
    );
    assert_eq!(
        json_attribute(attempt, "gen_ai.input.messages"),
        Some(json!([{"role": "user", "parts": [{"type": "text", "content": "What is a weir?"}]}]))
    );
    let output = json_attribute(attempt, "gen_ai.output.messages").unwrap();
    assert_eq!(
        output,
        json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello from the mock upstream"}],
                "finish_reason": "end_turn"}]),
        "a stream's events are gathered into its answer"
    );

    // Asked in OpenAI's format, answered in Anthropic's: each is read in its own.
    let attempt = client_span_of(&spans, &translated_stream);
    assert_eq!(
        json_attribute(attempt, "gen_ai.input.messages").unwrap()[0]["parts"][0]["content"],
        "What is a lock?"
    );
    assert_eq!(
        json_attribute(attempt, "gen_ai.output.messages").unwrap()[0]["parts"][0]["content"],
        "Hello from the mock upstream"
    );

    let attempt = client_span_of(&spans, &long);
    let recorded = text(&attempt.attributes, "gen_ai.input.messages").unwrap();
    assert!(recorded.len() <= 1500, "{}", recorded.len());
    let recorded: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(
        recorded[0]["parts"][0]["content"], "Answer in French.",
        "the long text gives way, not the short ones"
    );
    assert_eq!(
        attempt
            .attributes
            .iter()
            .find(|kv| kv.key == "sluice.content.truncated")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone()),
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true))
    );
    let exported = receiver.bytes();
    assert!(!contains_bytes(&exported, b"sk-ant-canary-capture-9911"));
    assert!(!contains_bytes(&exported, key.as_bytes()));
}
