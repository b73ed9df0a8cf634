//! Per model and provider: responses by endpoint, status and code, and the GenAI metrics
//! (operation duration, time to first chunk, time per chunk, token usage) with Sluice's cost.
//!
//! A series is made when a snapshot is applied and held by the routing tables, one per model
//! (for answers no provider gave: refusals, MOCK) and one per deployment, so a request finds its
//! series in what it already looked up. Labels are the model's public name and the provider's
//! name and type, so their number is bounded by the config, never by traffic; a key's or a
//! project's id is never a label. A [`SeriesBook`] carries each series from one snapshot's
//! tables to the next, so counters keep counting across config versions.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sluice_proto::usage::v1 as pb;
use sluice_shared::error_code::ErrorCode;
use sluice_shared::histogram::TraceRef;
pub use sluice_shared::openmetrics::escape_label;

use crate::metrics::histogram::{
    Bounds, CHUNK_GAP_SECONDS, FIRST_CHUNK_SECONDS, Histogram, LocalHistogram, OPERATION_SECONDS,
    TOKENS,
};
use crate::metrics::{ERROR_CODES, error_slot};
use crate::operation::{GenAiOperation, Operation};

/// Statuses an answer that is not Sluice's own error can have (an upstream's, passed on);
/// any other is counted under its class.
const STATUSES: &[u16] = &[
    200, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529,
];
const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
const OUTCOMES: usize = ERROR_CODES.len() + STATUSES.len() + STATUS_CLASSES.len();

/// How a request ended, as the responses counter labels it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Sluice's own error (its status follows from the code).
    Error(ErrorCode),
    /// Any other answer, by status.
    Answered(u16),
}

impl Outcome {
    fn slot(self) -> usize {
        match self {
            Self::Error(code) => match error_slot(code) {
                Some(slot) => slot,
                None => Self::Answered(code.http_status()).slot(),
            },
            Self::Answered(status) => match STATUSES.iter().position(|s| *s == status) {
                Some(index) => ERROR_CODES.len() + index,
                None => {
                    let class = usize::from(status / 100).clamp(1, 5) - 1;
                    ERROR_CODES.len() + STATUSES.len() + class
                }
            },
        }
    }

    /// `status` and `code` label values of a slot.
    fn labels(slot: usize) -> (String, &'static str) {
        if let Some(code) = ERROR_CODES.get(slot) {
            return (code.http_status().to_string(), code.as_str());
        }
        let slot = slot - ERROR_CODES.len();
        match STATUSES.get(slot) {
            Some(status) => (status.to_string(), ""),
            None => (
                STATUS_CLASSES[(slot - STATUSES.len()).min(4)].to_owned(),
                "",
            ),
        }
    }
}

/// What one request tells its series when its usage record is written.
pub struct Finished<'r> {
    pub operation: Operation,
    pub record: &'r pb::UsageRecord,
    /// From the request's arrival to its record.
    pub duration_us: u64,
    /// How the request failed, when it did.
    pub failure: Option<Outcome>,
    pub first_chunk_us: Option<u64>,
    pub chunk_gaps: Option<&'r LocalHistogram>,
    /// A sampled request's trace: its duration's and first chunk's exemplar.
    pub trace: Option<TraceRef<'r>>,
}

pub struct ModelSeries {
    /// The model's public name and the provider's name, as configured (for logs).
    pub model: Box<str>,
    pub provider: Box<str>,
    /// `endpoint` aside, the labels of Sluice's own series, rendered once.
    labels: String,
    /// The labels of the GenAI series, on the conventions' attribute names.
    gen_ai_labels: String,
    responses: [OnceLock<Box<[AtomicU64; OUTCOMES]>>; Operation::ALL.len()],
    gen_ai: [OnceLock<Box<GenAiSeries>>; GenAiOperation::ALL.len()],
}

struct GenAiSeries {
    duration: Histogram,
    /// Durations of requests that failed, by how (made on the first).
    failed: [OnceLock<Box<Histogram>>; OUTCOMES],
    first_chunk: Histogram,
    chunk_gap: Histogram,
    input_tokens: Histogram,
    output_tokens: Histogram,
    /// Tokens by kind, and cost, by where the count came from.
    tokens_by_source: [[AtomicU64; TOKEN_KINDS.len()]; SOURCES.len()],
    cost_micros: [AtomicU64; SOURCES.len()],
}

const TOKEN_KINDS: [&str; 4] = ["input", "output", "cached_input", "reasoning"];
const SOURCES: [&str; 3] = ["provider_reported", "estimated", "mock"];

fn source_slot(source: i32) -> usize {
    match pb::UsageSource::try_from(source) {
        Ok(pb::UsageSource::ProviderReported) => 0,
        Ok(pb::UsageSource::Mock) => 2,
        _ => 1,
    }
}

impl GenAiSeries {
    fn new() -> Self {
        Self {
            duration: Histogram::with_exemplars(&OPERATION_SECONDS),
            failed: std::array::from_fn(|_| OnceLock::new()),
            first_chunk: Histogram::with_exemplars(&FIRST_CHUNK_SECONDS),
            chunk_gap: Histogram::new(&CHUNK_GAP_SECONDS),
            input_tokens: Histogram::new(&TOKENS),
            output_tokens: Histogram::new(&TOKENS),
            tokens_by_source: Default::default(),
            cost_micros: Default::default(),
        }
    }
}

impl ModelSeries {
    /// `provider_type` is `gen_ai.provider.name`; all three empty for requests no model was
    /// found for.
    pub fn new(model: &str, provider: &str, provider_type: &str) -> Self {
        let mut labels = String::from("model=\"");
        escape_label(model, &mut labels);
        labels.push_str("\",provider=\"");
        escape_label(provider, &mut labels);
        labels.push('"');
        let mut gen_ai_labels = String::from("gen_ai_request_model=\"");
        escape_label(model, &mut gen_ai_labels);
        gen_ai_labels.push_str("\",gen_ai_provider_name=\"");
        escape_label(provider_type, &mut gen_ai_labels);
        gen_ai_labels.push_str("\",sluice_provider=\"");
        escape_label(provider, &mut gen_ai_labels);
        gen_ai_labels.push('"');
        Self {
            model: model.into(),
            provider: provider.into(),
            labels,
            gen_ai_labels,
            responses: std::array::from_fn(|_| OnceLock::new()),
            gen_ai: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The key a [`SeriesBook`] keeps it under: its labels.
    pub fn key(&self) -> &str {
        &self.gen_ai_labels
    }

    pub fn count_response(&self, operation: Operation, outcome: Outcome) {
        let counts = self.responses[operation.index()]
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        counts[outcome.slot()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self, finished: &Finished<'_>) {
        let series = self.gen_ai[finished.operation.gen_ai().index()]
            .get_or_init(|| Box::new(GenAiSeries::new()));
        let duration = match finished.failure {
            Some(failure) => series.failed[failure.slot()]
                .get_or_init(|| Box::new(Histogram::with_exemplars(&OPERATION_SECONDS))),
            None => &series.duration,
        };
        duration.record_traced(finished.duration_us, finished.trace);
        if let Some(first) = finished.first_chunk_us {
            series.first_chunk.record_traced(first, finished.trace);
        }
        if let Some(gaps) = finished.chunk_gaps.filter(|gaps| !gaps.is_empty()) {
            series.chunk_gap.merge(gaps);
        }
        let record = finished.record;
        let source = source_slot(record.source);
        if record.input_tokens > 0 || record.output_tokens > 0 {
            series.input_tokens.record(record.input_tokens);
            series.output_tokens.record(record.output_tokens);
        }
        let tokens = &series.tokens_by_source[source];
        for (count, added) in tokens.iter().zip([
            record.input_tokens,
            record.output_tokens,
            record.cached_input_tokens,
            record.reasoning_tokens,
        ]) {
            if added > 0 {
                count.fetch_add(added, Ordering::Relaxed);
            }
        }
        if let Ok(cost) = u64::try_from(record.cost_micros)
            && cost > 0
        {
            series.cost_micros[source].fetch_add(cost, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for ModelSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSeries")
            .field("labels", &self.gen_ai_labels)
            .finish_non_exhaustive()
    }
}

impl Default for ModelSeries {
    /// The series of requests that found no model.
    fn default() -> Self {
        Self::new("", "", "")
    }
}

/// Keeps each series by its labels across snapshots. Locked only when a snapshot is applied
/// and when `/metrics` is rendered, never by a request.
#[derive(Default)]
pub struct SeriesBook {
    by_key: Mutex<HashMap<String, Arc<ModelSeries>>>,
}

impl SeriesBook {
    /// The series the book holds for each of `fresh` (by labels), adopting those it has not
    /// seen; series no longer named are dropped (and leave `/metrics`).
    pub fn adopt<'s>(&self, fresh: impl IntoIterator<Item = &'s mut Arc<ModelSeries>>) {
        let mut book = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::with_capacity(book.len());
        for slot in fresh {
            let held = book
                .get(slot.key())
                .or_else(|| kept.get(slot.key()))
                .cloned()
                .unwrap_or_else(|| slot.clone());
            *slot = held.clone();
            kept.insert(held.key().to_owned(), held);
        }
        *book = kept;
    }

    fn all(&self) -> Vec<Arc<ModelSeries>> {
        let book = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = book.values().cloned().collect();
        drop(book);
        all.sort_by(|a, b| a.key().cmp(b.key()));
        all
    }

    /// Every family, each series of it together, as the text format requires. `unrouted`
    /// counts the requests that found no model.
    /// With `exemplars`, histograms are written as OpenMetrics has them, each bucket's
    /// exemplar after it.
    pub fn render(&self, unrouted: &ModelSeries, out: &mut String, exemplars: bool) {
        let all = self.all();
        let series: Vec<&ModelSeries> = std::iter::once(unrouted)
            .chain(all.iter().map(Arc::as_ref))
            .collect();
        render_responses(&series, out);
        render_gen_ai(&series, out, exemplars);
    }
}

fn render_responses(series: &[&ModelSeries], out: &mut String) {
    out.push_str(
        "# HELP sluice_responses_total Answers to model calls by endpoint, model, provider, status and Sluice's error code (model and provider empty where none was resolved or tried).\n# TYPE sluice_responses_total counter\n",
    );
    for one in series {
        for (operation, counts) in Operation::ALL.iter().zip(&one.responses) {
            let Some(counts) = counts.get() else {
                continue;
            };
            for (slot, count) in counts.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let (status, code) = Outcome::labels(slot);
                let _ = writeln!(
                    out,
                    "sluice_responses_total{{endpoint=\"{}\",{},status=\"{status}\",code=\"{code}\"}} {count}",
                    operation.route(),
                    one.labels
                );
            }
        }
    }
}

type HistogramOf = fn(&GenAiSeries) -> &Histogram;

fn render_gen_ai(series: &[&ModelSeries], out: &mut String, exemplars: bool) {
    let draw = |histogram: &Histogram, out: &mut String, name: &str, labels: &str| {
        if exemplars {
            histogram.render_openmetrics(out, name, labels);
        } else {
            histogram.render(out, name, labels);
        }
    };
    let used: Vec<(&ModelSeries, GenAiOperation, &GenAiSeries)> =
        series
            .iter()
            .flat_map(|one| {
                GenAiOperation::ALL.iter().zip(&one.gen_ai).filter_map(
                    move |(operation, gen_ai)| Some((*one, *operation, gen_ai.get()?.as_ref())),
                )
            })
            .collect();
    let labels = |one: &ModelSeries, operation: GenAiOperation| {
        format!(
            "gen_ai_operation_name=\"{}\",{}",
            operation.name(),
            one.gen_ai_labels
        )
    };
    out.push_str("# HELP gen_ai_client_operation_duration_seconds GenAI operation duration: from the request's arrival to its usage record (a stream's end).\n# TYPE gen_ai_client_operation_duration_seconds histogram\n");
    for &(one, operation, gen_ai) in &used {
        let labels = labels(one, operation);
        draw(
            &gen_ai.duration,
            out,
            "gen_ai_client_operation_duration_seconds",
            &labels,
        );
        for (slot, failed) in gen_ai.failed.iter().enumerate() {
            if let Some(failed) = failed.get() {
                let (status, code) = Outcome::labels(slot);
                let error_type = if code.is_empty() { &status } else { code };
                let labels = format!("{labels},error_type=\"{error_type}\"");
                draw(
                    failed,
                    out,
                    "gen_ai_client_operation_duration_seconds",
                    &labels,
                );
            }
        }
    }
    let families: [(&str, &str, &Bounds, HistogramOf); 2] = [
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first chunk of a streamed answer, from the request's arrival.",
            &FIRST_CHUNK_SECONDS,
            |s| &s.first_chunk,
        ),
        (
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "Time between the chunks of a streamed answer, each after the first.",
            &CHUNK_GAP_SECONDS,
            |s| &s.chunk_gap,
        ),
    ];
    for (name, help, _, histogram) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for &(one, operation, gen_ai) in &used {
            let histogram = histogram(gen_ai);
            if histogram.count() > 0 {
                draw(histogram, out, name, &labels(one, operation));
            }
        }
    }
    out.push_str("# HELP gen_ai_client_token_usage Tokens per request, input and output (as the provider reported, or Sluice's estimate).\n# TYPE gen_ai_client_token_usage histogram\n");
    for &(one, operation, gen_ai) in &used {
        let labels = labels(one, operation);
        for (kind, histogram) in [
            ("input", &gen_ai.input_tokens),
            ("output", &gen_ai.output_tokens),
        ] {
            if histogram.count() > 0 {
                let labels = format!("{labels},gen_ai_token_type=\"{kind}\"");
                draw(histogram, out, "gen_ai_client_token_usage", &labels);
            }
        }
    }
    out.push_str("# HELP sluice_tokens_total Tokens by kind and by where the count came from (reasoning tokens are part of the output, cached of the input).\n# TYPE sluice_tokens_total counter\n");
    for &(one, operation, gen_ai) in &used {
        for (source, counts) in SOURCES.iter().zip(&gen_ai.tokens_by_source) {
            for (kind, count) in TOKEN_KINDS.iter().zip(counts) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "sluice_tokens_total{{operation=\"{}\",{},type=\"{kind}\",source=\"{source}\"}} {count}",
                        operation.name(),
                        one.labels
                    );
                }
            }
        }
    }
    out.push_str("# HELP sluice_cost_micros_total Cost of the usage recorded, integer micro-dollars, by where the token count came from.\n# TYPE sluice_cost_micros_total counter\n");
    for &(one, operation, gen_ai) in &used {
        for (source, cost) in SOURCES.iter().zip(&gen_ai.cost_micros) {
            let cost = cost.load(Ordering::Relaxed);
            if cost > 0 {
                let _ = writeln!(
                    out,
                    "sluice_cost_micros_total{{operation=\"{}\",{},source=\"{source}\"}} {cost}",
                    operation.name(),
                    one.labels
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(input: u64, output: u64, cost: i64, source: pb::UsageSource) -> pb::UsageRecord {
        pb::UsageRecord {
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            source: source as i32,
            ..Default::default()
        }
    }

    #[test]
    fn hostile_names_are_escaped_in_every_label() {
        let series = ModelSeries::new("we\"ird\\model\nx", "p\"", "openai");
        series.count_response(Operation::ChatCompletions, Outcome::Answered(200));
        let book = SeriesBook::default();
        let mut slot = Arc::new(series);
        book.adopt([&mut slot]);
        let mut out = String::new();
        book.render(&ModelSeries::default(), &mut out, false);
        assert!(
            out.contains(r#"model="we\"ird\\model\nx",provider="p\""#),
            "{out}"
        );
        assert!(
            !out.contains("model\nx"),
            "a raw line feed splits the line: {out}"
        );
    }

    #[test]
    fn outcomes_label_status_and_code_and_never_collide() {
        let series = ModelSeries::new("m", "p", "openai");
        series.count_response(Operation::ChatCompletions, Outcome::Answered(200));
        series.count_response(Operation::ChatCompletions, Outcome::Answered(200));
        series.count_response(Operation::ChatCompletions, Outcome::Answered(418));
        series.count_response(
            Operation::Embeddings,
            Outcome::Error(ErrorCode::UpstreamTimeout),
        );
        series.count_response(
            Operation::Embeddings,
            Outcome::Error(ErrorCode::ModelNotAllowed),
        );
        series.count_response(
            Operation::Embeddings,
            Outcome::Error(ErrorCode::HeadersTooLarge),
        );
        let mut out = String::new();
        render_responses(&[&series], &mut out);
        for line in [
            r#"sluice_responses_total{endpoint="/v1/chat/completions",model="m",provider="p",status="200",code=""} 2"#,
            r#"sluice_responses_total{endpoint="/v1/chat/completions",model="m",provider="p",status="4xx",code=""} 1"#,
            r#"sluice_responses_total{endpoint="/v1/embeddings",model="m",provider="p",status="504",code="upstream_timeout"} 1"#,
            r#"sluice_responses_total{endpoint="/v1/embeddings",model="m",provider="p",status="404",code="unsupported_model"} 1"#,
            // Not among the codes with a slot: counted by its status.
            r#"sluice_responses_total{endpoint="/v1/embeddings",model="m",provider="p",status="4xx",code=""} 1"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        let mut seen = std::collections::HashSet::new();
        for slot in 0..OUTCOMES {
            assert!(
                seen.insert(Outcome::labels(slot)),
                "slot {slot} repeats labels"
            );
        }
    }

    #[test]
    fn a_finished_request_fills_the_gen_ai_histograms_and_the_cost() {
        let series = ModelSeries::new("m", "p", "anthropic");
        let reported = record(100, 20, 42, pb::UsageSource::ProviderReported);
        let mut gaps = LocalHistogram::new(&CHUNK_GAP_SECONDS);
        gaps.record(2_000);
        gaps.record(30_000);
        series.finished(&Finished {
            operation: Operation::Messages,
            record: &reported,
            duration_us: 150_000,
            failure: None,
            first_chunk_us: Some(45_000),
            chunk_gaps: Some(&gaps),
            trace: Some(TraceRef {
                trace_id: &[0xab; 16],
                span_id: &[0xcd; 8],
            }),
        });
        let failed = record(0, 0, 0, pb::UsageSource::Estimated);
        series.finished(&Finished {
            operation: Operation::ChatCompletions,
            record: &failed,
            duration_us: 30_000_000,
            failure: Some(Outcome::Error(ErrorCode::UpstreamTimeout)),
            first_chunk_us: None,
            chunk_gaps: None,
            trace: None,
        });
        let mut out = String::new();
        render_gen_ai(&[&series], &mut out, false);
        let labels = r#"gen_ai_operation_name="chat",gen_ai_request_model="m",gen_ai_provider_name="anthropic",sluice_provider="p""#;
        for line in [
            format!("gen_ai_client_operation_duration_seconds_count{{{labels}}} 1"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.16\"}} 1"),
            format!("gen_ai_client_operation_duration_seconds_count{{{labels},error_type=\"upstream_timeout\"}} 1"),
            format!("gen_ai_client_operation_time_to_first_chunk_seconds_sum{{{labels}}} 0.045"),
            format!("gen_ai_client_operation_time_per_output_chunk_seconds_count{{{labels}}} 2"),
            format!("gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} 100"),
            format!("gen_ai_client_token_usage_count{{{labels},gen_ai_token_type=\"output\"}} 1"),
            r#"sluice_tokens_total{operation="chat",model="m",provider="p",type="output",source="provider_reported"} 20"#.to_owned(),
            r#"sluice_cost_micros_total{operation="chat",model="m",provider="p",source="provider_reported"} 42"#.to_owned(),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        assert!(
            !out.contains("generate_content"),
            "unused operations stay out: {out}"
        );
        assert!(!out.contains(" # {"), "Prometheus's text has no exemplars");
        let mut open = String::new();
        render_gen_ai(&[&series], &mut open, true);
        let traced = format!(
            "gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.16\"}} 1 # {{trace_id=\"{}\",span_id=\"cdcdcdcdcdcdcdcd\"}} 0.15 ",
            "ab".repeat(16)
        );
        assert!(
            open.lines().any(|l| l.starts_with(&traced)),
            "{traced} not in\n{open}"
        );
        assert!(
            open.lines()
                .filter(|l| l.contains(" # {"))
                .all(|l| !l.contains("error_type")),
            "the untraced failure has no exemplar"
        );
    }

    #[test]
    fn the_book_keeps_a_series_across_snapshots_by_its_labels() {
        let book = SeriesBook::default();
        let mut first = Arc::new(ModelSeries::new("m", "p", "openai"));
        book.adopt([&mut first]);
        first.count_response(Operation::ChatCompletions, Outcome::Answered(200));
        let mut again = Arc::new(ModelSeries::new("m", "p", "openai"));
        let mut twin = Arc::new(ModelSeries::new("m", "p", "openai"));
        let mut other = Arc::new(ModelSeries::new("n", "p", "openai"));
        book.adopt([&mut again, &mut twin, &mut other]);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(
            Arc::ptr_eq(&again, &twin),
            "one series per label set, never two lines alike"
        );
        book.adopt([&mut other]);
        let mut out = String::new();
        book.render(&ModelSeries::default(), &mut out, false);
        assert!(
            !out.contains("model=\"m\""),
            "a series no longer configured leaves: {out}"
        );
    }
}
