//! The control plane's Prometheus metrics, served at `GET /metrics` on its one port: a tower
//! layer in front of every gRPC service answers that path (HTTP/1.1 or HTTP/2), and times and
//! counts every RPC it passes through by method and gRPC status.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sluice_shared::histogram::{Histogram, SECONDS_1MS_TO_10S};

use bytes::Bytes;
use tonic::body::Body;
use tower::{Layer, Service};

use sluice_otlp::SpanKind;

use crate::store::{BudgetAlert, BudgetPosture};
use crate::telemetry::{self, Place, Span, Tracer};

/// Methods the RPC series keep apart; more (a client naming methods that do not exist) are
/// counted as `other`, so no caller can grow the label set without bound.
const MAX_METHODS: usize = 256;
/// The gRPC status names, by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
/// Streaming methods: their answer's head comes at once, so only their calls are counted.
const STREAMS: [&str; 2] = ["/StreamConfig", "/ReportUsage"];

pub struct Metrics {
    pub usage_batches_committed_total: AtomicU64,
    pub usage_batches_refused_total: AtomicU64,
    pub usage_records_committed_total: AtomicU64,
    /// How long the store took to commit a batch (its records, its budgets' spend).
    pub usage_commit: Histogram,
    pub budget_alerts_hard_total: AtomicU64,
    pub budget_alerts_soft_total: AtomicU64,
    pub lease_grants_total: AtomicU64,
    /// From a snapshot's sealing to the proxy's reply, by reply.
    pub config_push_acked: Histogram,
    pub config_push_nacked: Histogram,
    /// The newest config version published, and the version each connected proxy serves.
    pub latest_version: AtomicU64,
    /// 1 while the gRPC listener is plaintext on an address beyond loopback.
    pub insecure_listener: std::sync::atomic::AtomicBool,
    fleet: Mutex<HashMap<String, u64>>,
    rpcs: Mutex<BTreeMap<String, Arc<RpcSeries>>>,
    /// The budgets' gauges as last read from the store, rendered.
    budget_gauges: Mutex<String>,
    /// Traces, when an OTLP endpoint is set: RPCs are traced where they are counted.
    pub tracer: Option<Arc<Tracer>>,
    /// These metrics over OTLP, when an endpoint is set for them.
    pub exporter: std::sync::OnceLock<Arc<sluice_otlp::metrics::MetricsExporter>>,
}

struct RpcSeries {
    codes: [AtomicU64; GRPC_CODES.len()],
    duration: Histogram,
}

impl RpcSeries {
    fn new() -> Self {
        Self {
            codes: Default::default(),
            duration: Histogram::new(&SECONDS_1MS_TO_10S),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            usage_batches_committed_total: AtomicU64::new(0),
            usage_batches_refused_total: AtomicU64::new(0),
            usage_records_committed_total: AtomicU64::new(0),
            usage_commit: Histogram::new(&SECONDS_1MS_TO_10S),
            budget_alerts_hard_total: AtomicU64::new(0),
            budget_alerts_soft_total: AtomicU64::new(0),
            lease_grants_total: AtomicU64::new(0),
            config_push_acked: Histogram::new(&SECONDS_1MS_TO_10S),
            config_push_nacked: Histogram::new(&SECONDS_1MS_TO_10S),
            latest_version: AtomicU64::new(0),
            insecure_listener: std::sync::atomic::AtomicBool::new(false),
            fleet: Mutex::default(),
            rpcs: Mutex::default(),
            budget_gauges: Mutex::default(),
            tracer: None,
            exporter: std::sync::OnceLock::new(),
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

impl Metrics {
    pub fn traced_by(tracer: Option<Arc<Tracer>>) -> Self {
        Self {
            tracer,
            ..Self::default()
        }
    }

    /// A proxy's config stream: connected (serving `version`), moved to `version`, or gone
    /// (`None`).
    pub fn proxy_serves(&self, proxy_id: &str, version: Option<u64>) {
        let mut fleet = self.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        match version {
            Some(version) => {
                fleet.insert(proxy_id.to_owned(), version);
            }
            None => {
                fleet.remove(proxy_id);
            }
        }
    }

    pub fn config_pushed(&self, acked: bool, elapsed: Duration) {
        let histogram = if acked {
            &self.config_push_acked
        } else {
            &self.config_push_nacked
        };
        histogram.record(micros(elapsed));
    }

    fn count_rpc(&self, method: &str, code: usize, elapsed: Duration) {
        let series = {
            let mut rpcs = self.rpcs.lock().unwrap_or_else(PoisonError::into_inner);
            let known = code != 12 && (rpcs.contains_key(method) || rpcs.len() < MAX_METHODS);
            let method = if known { method } else { "other" };
            match rpcs.get(method) {
                Some(series) => series.clone(),
                None => {
                    let series = Arc::new(RpcSeries::new());
                    rpcs.insert(method.to_owned(), series.clone());
                    series
                }
            }
        };
        if let Some(count) = series.codes.get(code) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        if !is_stream(method) {
            series.duration.record(micros(elapsed));
        }
    }

    pub fn count_alert(&self, alert: &BudgetAlert) {
        let counter = match alert.posture {
            BudgetPosture::Hard => &self.budget_alerts_hard_total,
            BudgetPosture::Soft => &self.budget_alerts_soft_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the budgets' gauges (see [`crate::budget_gauges`]).
    pub fn set_budget_gauges(&self, rendered: String) {
        *self
            .budget_gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = rendered;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut counter = |name: &str, help: &str, labels: &str, value: &AtomicU64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {}\n",
                value.load(Ordering::Relaxed)
            );
        };
        counter(
            "sluice_usage_batches_committed_total",
            "Usage batches committed (repeats acknowledged without a second commit included).",
            "",
            &self.usage_batches_committed_total,
        );
        counter(
            "sluice_usage_batches_refused_total",
            "Usage batches refused: the same id with a different payload.",
            "",
            &self.usage_batches_refused_total,
        );
        counter(
            "sluice_usage_records_committed_total",
            "Usage records committed.",
            "",
            &self.usage_records_committed_total,
        );
        counter(
            "sluice_budget_lease_grants_total",
            "Budget lease renewals answered.",
            "",
            &self.lease_grants_total,
        );
        counter(
            "sluice_budget_alerts_total",
            "Budget alert thresholds crossed, by budget posture.",
            "{posture=\"hard\"}",
            &self.budget_alerts_hard_total,
        );
        let _ = writeln!(
            out,
            "sluice_budget_alerts_total{{posture=\"soft\"}} {}",
            self.budget_alerts_soft_total.load(Ordering::Relaxed)
        );
        out.push_str("# HELP sluice_usage_commit_seconds How long the store took to commit a usage batch.\n# TYPE sluice_usage_commit_seconds histogram\n");
        self.usage_commit
            .render(&mut out, "sluice_usage_commit_seconds", "");
        out.push_str("# HELP sluice_config_push_seconds From sealing a snapshot for a proxy to its reply, by reply.\n# TYPE sluice_config_push_seconds histogram\n");
        self.config_push_acked
            .render(&mut out, "sluice_config_push_seconds", "reply=\"ack\"");
        self.config_push_nacked
            .render(&mut out, "sluice_config_push_seconds", "reply=\"nack\"");
        let _ = write!(
            out,
            "# HELP sluice_insecure_listener 1 while gRPC is served in plaintext beyond loopback (allow_insecure_listen).\n# TYPE sluice_insecure_listener gauge\nsluice_insecure_listener {}\n",
            u8::from(self.insecure_listener.load(Ordering::Relaxed))
        );
        self.render_fleet(&mut out);
        self.render_rpcs(&mut out);
        out.push_str(
            &self
                .budget_gauges
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if let Some(tracer) = &self.tracer {
            tracer.render_metrics(&mut out);
        }
        if let Some(exporter) = self.exporter.get() {
            exporter.render_metrics(&mut out);
        }
        out
    }

    fn render_fleet(&self, out: &mut String) {
        let latest = self.latest_version.load(Ordering::Relaxed);
        let fleet = self.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        let behind = fleet.values().filter(|&&v| v < latest).count();
        let most_behind = fleet
            .values()
            .map(|&v| latest.saturating_sub(v))
            .max()
            .unwrap_or(0);
        let connected = fleet.len();
        drop(fleet);
        let _ = write!(
            out,
            "# HELP sluice_config_latest_version The newest config version published.\n# TYPE sluice_config_latest_version gauge\nsluice_config_latest_version {latest}\n\
             # HELP sluice_fleet_proxies Proxies with a config stream to this control plane, by whether they serve the newest version.\n# TYPE sluice_fleet_proxies gauge\n\
             sluice_fleet_proxies{{state=\"current\"}} {}\nsluice_fleet_proxies{{state=\"behind\"}} {behind}\n\
             # HELP sluice_fleet_versions_behind_max Versions the proxy furthest behind lags the newest.\n# TYPE sluice_fleet_versions_behind_max gauge\nsluice_fleet_versions_behind_max {most_behind}\n",
            connected - behind
        );
    }

    fn render_rpcs(&self, out: &mut String) {
        let rpcs: Vec<(String, Arc<RpcSeries>)> = self
            .rpcs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(method, series)| (method.clone(), series.clone()))
            .collect();
        out.push_str("# HELP sluice_cp_rpcs_total RPCs answered, by method and gRPC status.\n# TYPE sluice_cp_rpcs_total counter\n");
        for (method, series) in &rpcs {
            for (name, count) in GRPC_CODES.iter().zip(&series.codes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "sluice_cp_rpcs_total{{method=\"{method}\",code=\"{name}\"}} {count}"
                    );
                }
            }
        }
        out.push_str("# HELP sluice_cp_rpc_duration_seconds Time to answer a unary RPC, by method.\n# TYPE sluice_cp_rpc_duration_seconds histogram\n");
        for (method, series) in &rpcs {
            if series.duration.count() > 0 {
                series.duration.render(
                    out,
                    "sluice_cp_rpc_duration_seconds",
                    &format!("method=\"{method}\""),
                );
            }
        }
    }
}

/// Answers `GET /metrics` in front of the gRPC services.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<Inner> Layer<Inner> for MetricsLayer {
    type Service = MetricsService<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<Inner> {
    inner: Inner,
    metrics: Arc<Metrics>,
}

impl<Inner, ReqBody> Service<http::Request<ReqBody>> for MetricsService<Inner>
where
    Inner: Service<http::Request<ReqBody>, Response = http::Response<Body>, Error = Infallible>,
    Inner::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
            let text = self.metrics.render();
            let mut response =
                http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(text))));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Box::pin(async move { Ok(response) });
        }
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        // Sluice's own unary RPCs are traced; a stream's work is, piece by piece, where it
        // is done (config pushes, usage batches).
        let traced = metrics
            .tracer
            .as_ref()
            .filter(|_| method.starts_with("/sluice.") && !is_stream(&method))
            .and_then(|tracer| tracer.place(telemetry::parent_of(request.headers())));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let (response, audit_events) = match traced {
                Some(_) => telemetry::noting_audit_events(answer).await,
                None => (answer.await, Vec::new()),
            };
            let response = response?;
            // A refusal comes as headers alone ("trailers-only"); an answer's status follows
            // its body, and is OK unless the body fails.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            let took = started.elapsed();
            metrics.count_rpc(&method, code, took);
            if let (Some(place), Some(tracer)) = (traced, &metrics.tracer) {
                tracer.record(rpc_span(&method, code, took, place, &audit_events));
            }
            Ok(response)
        })
    }
}

fn is_stream(method: &str) -> bool {
    STREAMS.iter().any(|stream| method.ends_with(stream))
}

/// An RPC's server span, on the RPC conventions: `rpc.system`, `rpc.service`, `rpc.method`,
/// `rpc.grpc.status_code`; failed only for the codes that are the server's fault.
fn rpc_span(
    method: &str,
    code: usize,
    took: Duration,
    place: Place,
    audit_events: &[String],
) -> Span {
    let name = method.trim_start_matches('/');
    let (service, rpc) = name.split_once('/').unwrap_or((name, ""));
    let mut span = Span::ended(name.to_owned(), SpanKind::Server, took, place)
        .text("rpc.system", "grpc")
        .text("rpc.service", service)
        .text("rpc.method", rpc)
        .int("rpc.grpc.status_code", i64::try_from(code).unwrap_or(2));
    if !audit_events.is_empty() {
        span = span.text("sluice.audit_event_id", audit_events.join(","));
    }
    match code {
        2 | 4 | 12 | 13 | 14 | 15 => {
            span.failed(GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN"))
        }
        _ => span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_count_by_posture() {
        let metrics = Metrics::default();
        let alert = BudgetAlert {
            budget_id: "b".into(),
            target: "acme".into(),
            period: crate::store::BudgetPeriod::Day,
            posture: BudgetPosture::Soft,
            percent: 80,
            spent_micros: 8,
            limit_micros: 10,
            window_start_us: 0,
        };
        metrics.count_alert(&alert);
        let text = metrics.render();
        assert!(
            text.contains("sluice_budget_alerts_total{posture=\"soft\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_budget_alerts_total{posture=\"hard\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn rpcs_count_by_method_and_status_within_a_bounded_label_set() {
        let metrics = Metrics::default();
        let admin = "/sluice.admin.v1.AdminService/ListProviders";
        metrics.count_rpc(admin, 0, Duration::from_millis(3));
        metrics.count_rpc(admin, 16, Duration::from_millis(1));
        metrics.count_rpc(
            "/sluice.config.v1.ConfigService/StreamConfig",
            0,
            Duration::from_secs(60),
        );
        metrics.count_rpc("/sluice.admin.v1.AdminService/Nope", 12, Duration::ZERO);
        for n in 0..(MAX_METHODS + 10) {
            metrics.count_rpc(
                &format!("/sluice.admin.v1.AdminService/Made{n}"),
                16,
                Duration::ZERO,
            );
        }
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "sluice_cp_rpcs_total{{method=\"{admin}\",code=\"OK\"}} 1\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "sluice_cp_rpcs_total{{method=\"{admin}\",code=\"UNAUTHENTICATED\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "sluice_cp_rpc_duration_seconds_count{{method=\"{admin}\"}} 2\n"
        )));
        assert!(!text.contains("sluice_cp_rpc_duration_seconds_count{method=\"/sluice.config.v1.ConfigService/StreamConfig\"}"), "a stream is not timed");
        assert!(
            text.contains("sluice_cp_rpcs_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1\n"),
            "{text}"
        );
        let methods: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("sluice_cp_rpcs_total{method=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(methods.len() <= MAX_METHODS + 1, "{}", methods.len());
    }

    #[test]
    fn the_fleet_counts_proxies_behind_the_newest_version() {
        let metrics = Metrics::default();
        metrics.latest_version.store(7, Ordering::Relaxed);
        metrics.proxy_serves("a", Some(7));
        metrics.proxy_serves("b", Some(4));
        metrics.proxy_serves("c", Some(6));
        metrics.proxy_serves("c", None);
        metrics.config_pushed(true, Duration::from_millis(20));
        let text = metrics.render();
        assert!(
            text.contains("sluice_fleet_proxies{state=\"current\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sluice_fleet_proxies{state=\"behind\"} 1\n"));
        assert!(text.contains("sluice_fleet_versions_behind_max 3\n"));
        assert!(text.contains("sluice_config_push_seconds_count{reply=\"ack\"} 1\n"));
    }
}
