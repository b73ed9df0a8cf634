//! One usage record per request, built as the request goes and spooled when it ends — before
//! the answer leaves. A stream is spooled twice: an estimate before its headers go out, and
//! the real record at its end; after a crash in between, the estimate is what gets billed.
//!
//! The draft is a must-finish guard, like the budget [`Reservation`]: once an attempt has
//! reached an upstream, a draft dropped without being finished (the client went away while
//! the proxy waited, or a path forgot) still writes its one record, an estimate.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_proto::usage::v1 as pb;
use sluice_shared::histogram::TraceRef;

use crate::answers::{StreamMeter, Usage};
use crate::budgets::leases::Reservation;
use crate::gateway::Gateway;
use crate::metrics::histogram::LocalHistogram;
use crate::metrics::series::{Finished, ModelSeries, Outcome};
use crate::mock_posture::estimate_tokens;
use crate::operation::Operation;
use crate::request::metadata::RequestMetadata;
use crate::routing::tables::{Caller, ModelEntry};
use crate::telemetry::access_log::{AccessLine, Written};
use crate::usage::spool::StartedMark;
use sluice_shared::error_code::ErrorCode;

/// The status recorded for a request whose client went away before its answer (nginx's
/// "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// What is known before the answer: who, what, where, when.
pub struct UsageDraft {
    pub record: pb::UsageRecord,
    /// When the request's head had arrived: its total and its latency count from here.
    pub started: tokio::time::Instant,
    /// Time spent waiting on upstreams: every attempt until its answer's head, and a whole
    /// answer's body as it was read (what `x-sluice-overhead-us` leaves out).
    pub upstream_wait: std::time::Duration,
    pub prices: Prices,
    /// The request's messages, counted only if the upstream reports no usage.
    pub prompt: Option<bytes::Bytes>,
    prompt_estimate: Option<u64>,
    stream_mark: Option<StartedMark>,
    /// The request's hold on its HARD budgets: settled to the actual cost when the record is
    /// written, released if the request ends any other way.
    pub reservation: Option<Reservation>,
    /// The request's hold on its rate limits: its tokens settled to what it used.
    pub rate_hold: Option<crate::rate_limits::RateHold>,
    /// The request's trace, when it is sampled: told the usage once it is spooled.
    pub trace: Option<Arc<crate::telemetry::RequestTrace>>,
    /// Where the request's metrics go: its model's, then its last attempt's deployment's.
    pub series: Arc<ModelSeries>,
    /// The virtual key's series, when its project is counted by key.
    pub key_series: Option<Arc<crate::metrics::key_series::KeySeries>>,
    /// The project's `content_capture_bytes`: how much of the answer a sampled trace records.
    pub content_cap: usize,
    pub operation: Operation,
    /// Sluice's error, when the request ended in one.
    pub error: Option<ErrorCode>,
    /// A stream's time to its first chunk and between its chunks.
    pub first_chunk: Option<std::time::Duration>,
    pub chunk_gaps: Option<Box<LocalHistogram>>,
    gateway: Arc<Gateway>,
    /// An attempt reached an upstream, so the request must leave a record.
    reached: bool,
    written: bool,
}

impl Prices {
    pub fn of(model: &ModelEntry) -> Self {
        Self {
            input: model.input_price_micros_per_mtok,
            cached_input: model.cached_input_price_micros_per_mtok,
            output: model.output_price_micros_per_mtok,
        }
    }
}

impl UsageDraft {
    pub fn new(
        gateway: &Arc<Gateway>,
        request_id: &str,
        caller: &Caller<'_>,
        model: &ModelEntry,
        metadata: RequestMetadata,
        arrived: tokio::time::Instant,
        operation: Operation,
    ) -> Self {
        Self {
            record: pb::UsageRecord {
                request_id: request_id.to_owned(),
                started_at_us: sluice_shared::time::now_us(),
                project_id: caller.project.id.clone(),
                virtual_key_id: caller.key.id.to_string(),
                model: model.name.clone(),
                run_id: metadata.run_id,
                task_id: metadata.task_id,
                tags: metadata.tags,
                ..Default::default()
            },
            started: arrived,
            upstream_wait: std::time::Duration::ZERO,
            prices: Prices::of(model),
            prompt: None,
            prompt_estimate: None,
            stream_mark: None,
            reservation: None,
            rate_hold: None,
            trace: None,
            series: model.series.clone(),
            key_series: None,
            content_cap: caller.project.content_capture_bytes as usize,
            operation,
            error: None,
            first_chunk: None,
            chunk_gaps: None,
            gateway: gateway.clone(),
            reached: false,
            written: false,
        }
    }

    /// Whether an attempt has gone out to an upstream: from then on the request leaves a
    /// record whatever happens. Set before a call is awaited (the client may leave while it
    /// is), and set back if the call turns out never to have left.
    pub fn set_reached_upstream(&mut self, reached: bool) {
        self.reached = reached;
    }

    pub fn has_reached_upstream(&self) -> bool {
        self.reached
    }

    /// Sluice's own count of the prompt (see [`estimate_tokens`]).
    pub fn prompt_estimate(&mut self) -> u64 {
        if let Some(known) = self.prompt_estimate {
            return known;
        }
        let chars = self
            .prompt
            .as_ref()
            .and_then(|raw| crate::mock_posture::message_chars_of(raw))
            .unwrap_or_default();
        let estimate = estimate_tokens(chars);
        self.prompt_estimate = Some(estimate);
        estimate
    }

    /// The prompt counted, nothing answered: what an upstream that may have started on the
    /// request may bill.
    pub fn prompt_only(&mut self) -> Usage {
        Usage {
            input_tokens: self.prompt_estimate(),
            ..Usage::default()
        }
    }

    /// Spools this stream's record as an estimate (the prompt counted, nothing answered yet);
    /// call before the stream's headers leave.
    pub fn spool_start(&mut self) {
        let mut estimate = self.record.clone();
        if self.reservation.is_some() {
            estimate.lease_epoch = self.gateway.leases.epoch;
        }
        let usage = self.prompt_only();
        estimate.input_tokens = usage.input_tokens;
        estimate.source = pb::UsageSource::Estimated as i32;
        estimate.cost_micros = cost_micros(usage, self.prices);
        match self.gateway.spool.start(&estimate) {
            Ok(mark) => self.stream_mark = Some(mark),
            Err(error) => lost(&self.gateway, &error),
        }
    }

    /// Writes the record; what it says goes on the request's access line, which the router
    /// writes.
    pub fn finish(mut self, status: u16, usage: Usage, source: pb::UsageSource) -> Written {
        self.write(status, usage, source)
    }

    fn write(&mut self, status: u16, usage: Usage, source: pb::UsageSource) -> Written {
        self.written = true;
        // One reading of the clock for the record and the series alike.
        let elapsed = self.started.elapsed();
        let record = &mut self.record;
        record.http_status = u32::from(status);
        record.latency_ms = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
        record.input_tokens = usage.input_tokens;
        record.output_tokens = usage.output_tokens;
        record.cached_input_tokens = usage.cached_input_tokens;
        record.reasoning_tokens = usage.reasoning_tokens;
        record.source = source as i32;
        record.cost_micros = if source == pb::UsageSource::Mock {
            0
        } else {
            cost_micros(usage, self.prices)
        };
        if let Some(reservation) = self.reservation.take() {
            record.lease_epoch = self.gateway.leases.epoch;
            reservation.settle(record.cost_micros);
        }
        if let Some(hold) = self.rate_hold.take() {
            hold.settle(record.input_tokens.saturating_add(record.output_tokens));
        }
        if let Err(error) = self
            .gateway
            .spool
            .complete(&self.record, self.stream_mark.take())
        {
            lost(&self.gateway, &error);
        }
        let failure = match self.error {
            Some(code) => Some(Outcome::Error(code)),
            None if status >= 400 => Some(Outcome::Answered(status)),
            None => None,
        };
        let micros =
            |elapsed: std::time::Duration| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.series.finished(&Finished {
            operation: self.operation,
            record: &self.record,
            duration_us: micros(elapsed),
            failure,
            first_chunk_us: self.first_chunk.map(micros),
            chunk_gaps: self.chunk_gaps.as_deref(),
            trace: self
                .trace
                .as_deref()
                .filter(|trace| trace.sampled())
                .map(|trace| TraceRef {
                    trace_id: &trace.ids.trace_id,
                    span_id: &trace.ids.span_id,
                }),
        });
        if let Some(key) = &self.key_series {
            key.record(&self.record);
        }
        let record = &self.record;
        if let Some(trace) = &self.trace {
            // Copies the record's run and task ids: only for a sampled trace.
            trace.note(|state| {
                state.usage = Some(crate::telemetry::request_trace::UsageFacts::of(record));
            });
        }
        Written {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cost_micros: record.cost_micros,
            source: crate::telemetry::request_trace::source_name(record.source),
            attempts: record.attempts,
        }
    }

    /// The access line of a request whose record is written after the router has let go of
    /// it: at a stream's end, or when its client left while an upstream worked.
    fn log_access(&self, written: Written) {
        let Some(log) = self.gateway.access_log.get() else {
            return;
        };
        let record = &self.record;
        log.write(&AccessLine {
            request_id: &record.request_id,
            endpoint: self.operation.route(),
            key_id: &record.virtual_key_id,
            model: &record.model,
            provider: &self.series.provider,
            status: u16::try_from(record.http_status).unwrap_or(0),
            code: self.error.map(|code| code.as_str()),
            latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            usage: Some(written),
            trace: self
                .trace
                .as_ref()
                .map(|t| (&t.ids.trace_id, &t.ids.span_id)),
        });
    }

    /// At the end of a stream: the upstream's usage block if it sent one, else an estimate.
    pub fn finish_stream(mut self, meter: &StreamMeter) {
        let status = u16::try_from(self.record.http_status).unwrap_or(200);
        let written = match meter.usage {
            Some(usage) => self.write(status, usage, pb::UsageSource::ProviderReported),
            None => {
                let mut usage = self.prompt_only();
                if meter.content_chars > 0 {
                    usage.output_tokens = estimate_tokens(meter.content_chars);
                }
                self.write(status, usage, pb::UsageSource::Estimated)
            }
        };
        self.log_access(written);
    }
}

impl Drop for UsageDraft {
    fn drop(&mut self) {
        if self.reached && !self.written {
            let usage = self.prompt_only();
            let written = self.write(CLIENT_CLOSED, usage, pb::UsageSource::Estimated);
            self.log_access(written);
        }
    }
}

fn lost(gateway: &Gateway, error: &crate::usage::spool::SpoolError) {
    gateway
        .metrics
        .usage_records_dropped_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::error!(%error, "a usage record could not be spooled and is lost");
}

/// A model's prices, integer micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub input: i64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input: i64,
    pub output: i64,
}

/// Tokens × price per million, in micro-dollars, rounded up once per request so estimates
/// never undercharge. Input tokens include the cached ones (OpenAI's convention, which every
/// adapter normalises to), so those are charged at the cached price instead; reasoning tokens
/// are part of the output tokens and are not charged twice.
pub fn cost_micros(usage: Usage, prices: Prices) -> i64 {
    let cached = usage.cached_input_tokens.min(usage.input_tokens);
    let total = i128::from(usage.input_tokens - cached) * i128::from(prices.input)
        + i128::from(cached) * i128::from(prices.cached_input)
        + i128::from(usage.output_tokens) * i128::from(prices.output);
    let micros = (total + 999_999) / 1_000_000;
    i64::try_from(micros).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_integer_micro_dollars() {
        let mini = Prices {
            input: 150_000,
            cached_input: 75_000,
            output: 600_000,
        };
        let usage = |input, cached, output| Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            ..Usage::default()
        };
        // 1 000 × 0.15 $/M + 500 × 0.60 $/M = 150 + 300 µ$.
        assert_eq!(cost_micros(usage(1_000, 0, 500), mini), 450);
        // 200 of the 1 000 input tokens from the cache: 800 × 0.15 + 200 × 0.075 + 300.
        assert_eq!(cost_micros(usage(1_000, 200, 500), mini), 435);
        // A fraction of a micro-dollar rounds up, once per request.
        assert_eq!(cost_micros(usage(1, 0, 0), mini), 1);
        assert_eq!(cost_micros(usage(0, 0, 0), mini), 0);
        // More cached than input (a confused upstream) never goes negative.
        assert_eq!(cost_micros(usage(10, 50, 0), mini), 1);
    }

    proptest::proptest! {
        /// Any token counts at any catalog price: the cost is the exact product rounded up,
        /// saturated at i64::MAX (so a reservation of it fits no budget), never negative, and
        /// never smaller for more tokens.
        #[test]
        fn cost_is_exact_or_saturates_never_wraps(
            input in proptest::prelude::any::<u64>(),
            cached in proptest::prelude::any::<u64>(),
            output in proptest::prelude::any::<u64>(),
            more in proptest::prelude::any::<u64>(),
            prices in (0..=1_000_000_000_i64, 0..=1_000_000_000_i64, 0..=1_000_000_000_i64),
        ) {
            let prices = Prices { input: prices.0, cached_input: prices.1, output: prices.2 };
            let usage = |output_tokens| Usage {
                input_tokens: input,
                cached_input_tokens: cached,
                output_tokens,
                ..Usage::default()
            };
            let cost = cost_micros(usage(output), prices);
            let cached = cached.min(input);
            let exact = (i128::from(input - cached) * i128::from(prices.input)
                + i128::from(cached) * i128::from(prices.cached_input)
                + i128::from(output) * i128::from(prices.output)
                + 999_999)
                / 1_000_000;
            proptest::prop_assert_eq!(i128::from(cost), exact.min(i128::from(i64::MAX)));
            proptest::prop_assert!(cost >= 0);
            let larger = cost_micros(usage(output.saturating_add(more)), prices);
            proptest::prop_assert!(larger >= cost);
        }
    }
}
