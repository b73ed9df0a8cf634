//! The state every request shares: the routing tables behind one `ArcSwap`, metrics, the usage
//! spool and the upstream client. Requests only read it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::budgets::leases::LeaseBook;
use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;
use crate::usage::spool::UsageSpool;

pub struct Gateway {
    /// `None` until the first snapshot (from the control plane or from disk) is validated.
    pub tables: ArcSwapOption<crate::routing::tables::RoutingTables>,
    pub metrics: Metrics,
    /// Every usage record is written here before its answer leaves.
    pub spool: Arc<UsageSpool>,
    pub upstream: UpstreamClient,
    pub max_body_bytes: usize,
    /// HARD budgets: this process's leases and the requests' reservations against them.
    pub leases: LeaseBook,
    /// Rate limits: this process's rate leases and the requests' holds on them.
    pub rate_leases: LeaseBook,
    /// Reserved for a request that does not say its `max_tokens`.
    pub default_max_output_tokens: u64,
    /// How many retries each serving thread may add to its requests.
    pub retry_budget: crate::resilience::retry_budget::BudgetRule,
    /// Each deployment's and key's health, carried from one snapshot's tables to the next.
    pub health: crate::resilience::outliers::HealthBook,
    /// Each model's and deployment's metric series, carried from one snapshot to the next.
    pub series: crate::metrics::series::SeriesBook,
    /// Series per virtual key, for projects counted by key.
    pub key_series: crate::metrics::key_series::KeySeriesBook,
    pub ejection: crate::resilience::outliers::EjectionRule,
    /// Reads the allocator's counters; set by the binary, which chooses the allocator.
    pub heap_stats: std::sync::OnceLock<fn() -> Option<crate::metrics::HeapStats>>,
    /// One line per model call; unset when turned off.
    pub access_log: std::sync::OnceLock<Arc<crate::telemetry::access_log::AccessLog>>,
    /// Metrics over OTLP; unset when no endpoint is configured for them.
    pub metrics_exporter: std::sync::OnceLock<Arc<sluice_otlp::metrics::MetricsExporter>>,
    /// OpenTelemetry traces; unset when no OTLP endpoint is configured.
    pub telemetry: std::sync::OnceLock<Arc<crate::telemetry::Telemetry>>,
}

impl Gateway {
    /// The config version this proxy serves (0: none yet) — read from the tables themselves,
    /// the one source, so it can never disagree with what requests see.
    pub fn held_version(&self) -> u64 {
        self.tables
            .load()
            .as_ref()
            .map_or(0, |tables| tables.version)
    }

    /// Every metric of this process in Prometheus's text format: what `/metrics` serves and
    /// what is exported over OTLP.
    pub fn render_metrics(&self) -> String {
        self.render(false)
    }

    /// The text format with each histogram bucket's exemplar after it, for the OTLP metrics
    /// exporter (which reads them back as the data points' exemplars).
    pub fn render_metrics_with_exemplars(&self) -> String {
        self.render(true)
    }

    /// The same in OpenMetrics, for a scraper that asks: the latency histograms carry a
    /// sampled request's trace id per bucket as an exemplar.
    pub fn render_openmetrics(&self) -> String {
        sluice_shared::openmetrics::from_prometheus_text(&self.render(true))
    }

    fn render(&self, exemplars: bool) -> String {
        let mut rendered = self.metrics.render(
            sluice_shared::time::now_us(),
            self.leases.reserved(),
            self.heap_stats.get().and_then(|read| read()),
        );
        self.series
            .render(&self.metrics.unrouted, &mut rendered, exemplars);
        self.key_series.render(&mut rendered);
        if let Some(telemetry) = self.telemetry.get() {
            telemetry.render_metrics(&mut rendered);
        }
        if let Some(log) = self.access_log.get() {
            log.render_metrics(&mut rendered);
        }
        if let Some(exporter) = self.metrics_exporter.get() {
            exporter.render_metrics(&mut rendered);
        }
        rendered
    }

    pub fn new(
        spool: Arc<UsageSpool>,
        upstream: UpstreamClient,
        max_body_bytes: usize,
        leases: LeaseBook,
        default_max_output_tokens: u64,
        retry_budget: crate::resilience::retry_budget::BudgetRule,
        ejection: crate::resilience::outliers::EjectionRule,
    ) -> Arc<Self> {
        Arc::new(Self {
            tables: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            spool,
            upstream,
            max_body_bytes,
            rate_leases: LeaseBook::new(leases.epoch, leases.wait),
            leases,
            default_max_output_tokens,
            retry_budget,
            health: Default::default(),
            series: Default::default(),
            key_series: Default::default(),
            ejection,
            heap_stats: std::sync::OnceLock::new(),
            access_log: std::sync::OnceLock::new(),
            metrics_exporter: std::sync::OnceLock::new(),
            telemetry: std::sync::OnceLock::new(),
        })
    }
}
