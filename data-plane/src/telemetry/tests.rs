use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use sluice_shared::error_code::ErrorCode;

use super::render;
use super::request_trace::{AttemptSpan, FinishedTrace, TraceIds, TraceState, UsageFacts};
use sluice_otlp::{SpanIds, SpanKind, TraceRequest, Value};

fn attribute<'a>(
    attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn what_is_written_is_what_the_official_types_read() -> Result<(), Box<dyn std::error::Error>> {
    let mut request = TraceRequest::new(
        "edge",
        &[("deployment.environment".to_owned(), "prod".to_owned())],
        "1.2.3",
    );
    let long = "x".repeat(300);
    // Sizes on both sides of the encoder's eight-byte heads: a captured prompt's length, a
    // key too long for one length byte, the largest and the negative integers.
    let huge = "y".repeat(70_000);
    let long_key = "k".repeat(130);
    let short = sluice_otlp::ShortText::new("chatcmpl-0194");
    let heap = sluice_otlp::ShortText::new(&"m".repeat(80));
    request.span(
        SpanIds {
            trace_id: &[7; 16],
            span_id: &[1; 8],
            parent_span_id: Some(&[2; 8]),
            trace_state: Some("vendor=1"),
        },
        &["POST", " ", "/v1/chat/completions"],
        SpanKind::Server,
        10,
        20,
        Some("upstream_timeout"),
        |attributes| {
            attributes.add("text", Value::Str(&long));
            attributes.add("count", Value::Int(-5));
            attributes.add("huge", Value::Str(&huge));
            attributes.add(&long_key, Value::Int(i64::MAX));
            attributes.add("small", Value::Int(0));
            attributes.short("short", &short);
            attributes.short("heap", &heap);
            attributes.short("none", &sluice_otlp::ShortText::EMPTY);
            attributes.add("flag", Value::Bool(true));
            attributes.add("ratio", Value::Double(0.5));
            attributes.texts("list", ["stop", "length"]);
            attributes.text("empty", "");
        },
    );
    let decoded = ExportTraceServiceRequest::decode(request.finish().as_slice())?;
    let resource_spans = &decoded.resource_spans[0];
    let resource = resource_spans.resource.as_ref().ok_or("no resource")?;
    assert_eq!(
        attribute(&resource.attributes, "service.name"),
        Some(&any_value::Value::StringValue("edge".into()))
    );
    assert_eq!(resource.attributes.len(), 2);
    assert_eq!(resource_spans.schema_url, sluice_otlp::encode::SCHEMA_URL);
    let scope = &resource_spans.scope_spans[0];
    assert_eq!(scope.scope.as_ref().ok_or("no scope")?.version, "1.2.3");
    let span = &scope.spans[0];
    assert_eq!(span.trace_id, vec![7; 16]);
    assert_eq!(span.span_id, vec![1; 8]);
    assert_eq!(span.parent_span_id, vec![2; 8]);
    assert_eq!(span.trace_state, "vendor=1");
    assert_eq!(span.name, "POST /v1/chat/completions");
    assert_eq!(span.kind, 2);
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (10, 20)
    );
    let status = span.status.as_ref().ok_or("no status")?;
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "upstream_timeout")
    );
    assert_eq!(
        attribute(&span.attributes, "text"),
        Some(&any_value::Value::StringValue(long.clone()))
    );
    assert_eq!(
        attribute(&span.attributes, "count"),
        Some(&any_value::Value::IntValue(-5))
    );
    for (key, value) in [
        ("huge", any_value::Value::StringValue(huge.clone())),
        (long_key.as_str(), any_value::Value::IntValue(i64::MAX)),
        ("small", any_value::Value::IntValue(0)),
        (
            "short",
            any_value::Value::StringValue("chatcmpl-0194".into()),
        ),
        ("heap", any_value::Value::StringValue("m".repeat(80))),
    ] {
        assert_eq!(attribute(&span.attributes, key), Some(&value), "{key}");
    }
    assert_eq!(attribute(&span.attributes, "none"), None);
    assert_eq!(
        attribute(&span.attributes, "flag"),
        Some(&any_value::Value::BoolValue(true))
    );
    assert_eq!(
        attribute(&span.attributes, "ratio"),
        Some(&any_value::Value::DoubleValue(0.5))
    );
    let Some(any_value::Value::ArrayValue(list)) = attribute(&span.attributes, "list") else {
        return Err("no list".into());
    };
    assert_eq!(list.values.len(), 2);
    assert_eq!(attribute(&span.attributes, "empty"), None);
    Ok(())
}

#[test]
fn a_request_with_a_failed_attempt_and_an_answer_makes_three_spans()
-> Result<(), Box<dyn std::error::Error>> {
    let attempt = |number, error: Option<ErrorCode>, end| AttemptSpan {
        span_id: [number as u8 + 10; 8],
        number,
        start_ns: 100 + u64::from(number),
        end_ns: end,
        provider_name: "openai",
        upstream_model: "gpt-4o-mini".into(),
        server_address: "api.openai.com".into(),
        server_port: 443,
        upstream_status: Some(if error.is_some() { 503 } else { 200 }),
        error,
        retry: (number > 1).then_some((ErrorCode::UpstreamUnavailable, "next_deployment")),
    };
    let trace = FinishedTrace {
        ids: TraceIds {
            trace_id: [9; 16],
            span_id: [3; 8],
            parent_span_id: None,
            tracestate: None,
        },
        start_ns: 100,
        end_ns: 900,
        state: TraceState {
            method: "POST",
            route: "/v1/chat/completions",
            request_id: "req-1".into(),
            status: 200,
            project_id: "proj-1".into(),
            virtual_key_id: "vk-1".into(),
            model: "fast".into(),
            operation: Some(crate::operation::Operation::ChatCompletions),
            usage: Some(UsageFacts {
                input_tokens: 12,
                output_tokens: 8,
                cached_input_tokens: 0,
                reasoning_tokens: 0,
                cost_micros: 7,
                source: "provider_reported",
                run_id: String::new(),
                task_id: String::new(),
            }),
            attempts: vec![
                attempt(1, Some(ErrorCode::UpstreamUnavailable), Some(150)),
                attempt(2, None, None),
            ]
            .into(),
            ..TraceState::default()
        },
    };
    let mut request = TraceRequest::new("sluice-proxy", &[], "0");
    render::write(&trace, &mut request);
    let decoded = ExportTraceServiceRequest::decode(request.finish().as_slice())?;
    let spans = &decoded.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 3);
    let (server, failed, answered) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(server.kind, 2);
    assert!(server.status.is_none(), "a 200 is no error");
    for client in [failed, answered] {
        assert_eq!(client.kind, 3);
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.name, "chat gpt-4o-mini");
    }
    assert_eq!(failed.end_time_unix_nano, 150);
    assert_eq!(failed.status.as_ref().ok_or("no status")?.code, 2);
    assert_eq!(
        attribute(&failed.attributes, "error.type"),
        Some(&any_value::Value::StringValue(
            ErrorCode::UpstreamUnavailable.as_str().into()
        ))
    );
    assert_eq!(
        attribute(&failed.attributes, "gen_ai.usage.input_tokens"),
        None
    );
    assert_eq!(
        answered.end_time_unix_nano, 900,
        "the answer lasts as the request does"
    );
    assert_eq!(
        attribute(&answered.attributes, "gen_ai.usage.output_tokens"),
        Some(&any_value::Value::IntValue(8))
    );
    assert_eq!(
        attribute(&answered.attributes, "gen_ai.provider.name"),
        Some(&any_value::Value::StringValue("openai".into()))
    );
    assert_eq!(
        attribute(&server.attributes, "sluice.attempts"),
        Some(&any_value::Value::IntValue(2))
    );
    Ok(())
}

#[test]
fn spans_of_every_length_decode_whole() -> Result<(), Box<dyn std::error::Error>> {
    // Under 128 bytes, in the two-byte range, and past 16 KiB: each width of a span's length.
    let lengths = [0, 400, 20_000];
    let mut request = TraceRequest::new("edge", &[], "1");
    for (n, len) in lengths.iter().enumerate() {
        let text = "z".repeat(*len);
        request.span(
            SpanIds {
                trace_id: &[1; 16],
                span_id: &[n as u8 + 1; 8],
                parent_span_id: None,
                trace_state: None,
            },
            &["s"],
            SpanKind::Internal,
            1,
            2,
            None,
            |attributes| attributes.text("text", &text),
        );
    }
    let decoded = ExportTraceServiceRequest::decode(request.finish().as_slice())?;
    let spans = &decoded.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), lengths.len());
    for (span, len) in spans.iter().zip(lengths) {
        let text = match attribute(&span.attributes, "text") {
            Some(any_value::Value::StringValue(text)) => text.len(),
            _ => 0,
        };
        assert_eq!((span.name.as_str(), text), ("s", len));
    }
    Ok(())
}
