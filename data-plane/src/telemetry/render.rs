//! A finished request as OTLP spans: the server span on the HTTP server conventions, and a
//! client span per upstream attempt on the GenAI conventions (1.37: `gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.usage.*`, `server.address`,
//! `error.type`). Sluice's own facts go under `sluice.*`; ids only — no key is ever written
//! here, and a prompt or completion only for a project that opted in (`content_capture_bytes`).

use crate::telemetry::request_trace::{AttemptSpan, FinishedTrace};
use sluice_otlp::{ShortText, SpanIds, SpanKind, TraceRequest, Value};

pub fn write(trace: &FinishedTrace, request: &mut TraceRequest) {
    let state = &trace.state;
    let ids = &trace.ids;
    let error_code = state.error.map(|code| code.as_str());
    let server_error = (state.status >= 500).then(|| error_code.unwrap_or("server_error"));
    request.span(
        SpanIds {
            trace_id: &ids.trace_id,
            span_id: &ids.span_id,
            parent_span_id: ids.parent_span_id.as_ref(),
            trace_state: ids.tracestate.as_deref(),
        },
        &[state.method, " ", state.route],
        SpanKind::Server,
        trace.start_ns,
        trace.end_ns,
        server_error,
        |attributes| {
            attributes.text("http.request.method", state.method);
            attributes.text("http.route", state.route);
            attributes.add("url.scheme", Value::Str("http"));
            if state.status > 0 {
                attributes.add(
                    "http.response.status_code",
                    Value::Int(i64::from(state.status)),
                );
            }
            if let Some(code) = error_code {
                attributes.add("error.type", Value::Str(code));
            }
            attributes.short("sluice.request_id", &state.request_id);
            attributes.short("sluice.organization.id", &state.organization_id);
            attributes.short("sluice.project.id", &state.project_id);
            attributes.short("sluice.virtual_key.id", &state.virtual_key_id);
            attributes.short("sluice.model", &state.model);
            if state.config_version > 0 {
                attributes.add(
                    "sluice.config_version",
                    Value::Int(i64::try_from(state.config_version).unwrap_or(i64::MAX)),
                );
            }
            if let Some(usage) = &state.usage {
                attributes.add("sluice.usage.source", Value::Str(usage.source));
                attributes.add("sluice.cost_micros", Value::Int(usage.cost_micros));
                attributes.text("sluice.run_id", &usage.run_id);
                attributes.text("sluice.task_id", &usage.task_id);
            }
            if let Some(decision) = state.rate_limit {
                attributes.add("sluice.rate_limit.decision", Value::Str(decision));
            }
            if let Some(decision) = state.budget {
                attributes.add("sluice.budget.decision", Value::Str(decision));
            }
            if let Some(micros) = state.budget_reserved_micros {
                attributes.add("sluice.budget.reserved_micros", Value::Int(micros));
            }
            if let Some(overhead) = state.overhead_us {
                attributes.add(
                    "sluice.overhead_us",
                    Value::Int(i64::try_from(overhead).unwrap_or(i64::MAX)),
                );
            }
            attributes.add(
                "sluice.attempts",
                Value::Int(i64::try_from(state.attempts.len()).unwrap_or(i64::MAX)),
            );
        },
    );
    for attempt in state.attempts.iter() {
        write_attempt(trace, attempt, request);
    }
}

fn write_attempt(trace: &FinishedTrace, attempt: &AttemptSpan, request: &mut TraceRequest) {
    let state = &trace.state;
    let operation = state.operation.map_or("chat", |o| o.gen_ai().name());
    let answered = attempt.end_ns.is_none();
    let error = attempt.error.map(|code| code.as_str());
    request.span(
        SpanIds {
            trace_id: &trace.ids.trace_id,
            span_id: &attempt.span_id,
            parent_span_id: Some(&trace.ids.span_id),
            trace_state: trace.ids.tracestate.as_deref(),
        },
        &[operation, " ", &attempt.upstream_model],
        SpanKind::Client,
        attempt.start_ns,
        attempt.end_ns.unwrap_or(trace.end_ns),
        error,
        |attributes| {
            attributes.add("gen_ai.operation.name", Value::Str(operation));
            attributes.text("gen_ai.provider.name", attempt.provider_name);
            attributes.short("gen_ai.request.model", &attempt.upstream_model);
            if let Some(max_tokens) = state.max_tokens {
                attributes.add(
                    "gen_ai.request.max_tokens",
                    Value::Int(i64::try_from(max_tokens).unwrap_or(i64::MAX)),
                );
            }
            if let Some(params) = &state.params {
                for (key, value) in [
                    ("gen_ai.request.temperature", params.temperature),
                    ("gen_ai.request.top_p", params.top_p),
                    ("gen_ai.request.top_k", params.top_k),
                    ("gen_ai.request.frequency_penalty", params.frequency_penalty),
                    ("gen_ai.request.presence_penalty", params.presence_penalty),
                ] {
                    if let Some(value) = value {
                        attributes.add(key, Value::Double(value));
                    }
                }
                if let Some(seed) = params.seed {
                    attributes.add("gen_ai.request.seed", Value::Int(seed));
                }
                if let Some(count) = params.choice_count.filter(|&n| n != 1) {
                    attributes.add("gen_ai.request.choice.count", Value::Int(count));
                }
                attributes.texts(
                    "gen_ai.request.stop_sequences",
                    params.stop_sequences.iter().map(String::as_str),
                );
            }
            attributes.short("server.address", &attempt.server_address);
            if attempt.server_port > 0 {
                attributes.add("server.port", Value::Int(i64::from(attempt.server_port)));
            }
            if let Some(status) = attempt.upstream_status {
                attributes.add("http.response.status_code", Value::Int(i64::from(status)));
            }
            if let Some(code) = error {
                attributes.add("error.type", Value::Str(code));
            }
            attributes.add("sluice.attempt", Value::Int(i64::from(attempt.number)));
            if let Some((reason, next)) = attempt.retry {
                attributes.add("sluice.retry.reason", Value::Str(reason.as_str()));
                attributes.add("sluice.retry.move", Value::Str(next));
            }
            attributes.add("sluice.stream", Value::Bool(state.stream));
            if answered && let Some(response) = &state.response {
                attributes.short("gen_ai.response.id", &response.id);
                attributes.short("gen_ai.response.model", &response.model);
                attributes.texts(
                    "gen_ai.response.finish_reasons",
                    response.finish_reasons.iter().map(ShortText::as_str),
                );
            }
            if let Some(content) = &state.content {
                let mut truncated = false;
                if let Some(input) = &content.input {
                    if let Some(system) = &input.system {
                        attributes.text("gen_ai.system_instructions", system);
                    }
                    attributes.text("gen_ai.input.messages", &input.messages);
                    truncated |= input.truncated;
                }
                if answered && let Some(output) = &content.output {
                    attributes.text("gen_ai.output.messages", &output.messages);
                    truncated |= output.truncated;
                }
                if truncated {
                    attributes.add("sluice.content.truncated", Value::Bool(true));
                }
            }
            if answered && let Some(usage) = &state.usage {
                let count = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
                attributes.add("gen_ai.usage.input_tokens", count(usage.input_tokens));
                attributes.add("gen_ai.usage.output_tokens", count(usage.output_tokens));
                attributes.add(
                    "sluice.usage.cached_input_tokens",
                    count(usage.cached_input_tokens),
                );
                attributes.add(
                    "sluice.usage.reasoning_tokens",
                    count(usage.reasoning_tokens),
                );
                attributes.add("sluice.usage.source", Value::Str(usage.source));
            }
        },
    );
}
