//! The control plane's Prometheus counters, served at `GET /metrics` on its one port: a tower
//! layer in front of every gRPC service answers that path (HTTP/1.1 or HTTP/2) and passes all
//! else through.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::store::{BudgetAlert, BudgetPosture};

#[derive(Default)]
pub struct Metrics {
    pub usage_batches_committed_total: AtomicU64,
    pub usage_batches_refused_total: AtomicU64,
    pub budget_alerts_hard_total: AtomicU64,
    pub budget_alerts_soft_total: AtomicU64,
    pub lease_grants_total: AtomicU64,
}

impl Metrics {
    pub fn count_alert(&self, alert: &BudgetAlert) {
        let counter = match alert.posture {
            BudgetPosture::Hard => &self.budget_alerts_hard_total,
            BudgetPosture::Soft => &self.budget_alerts_soft_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
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
        out
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
        Box::pin(self.inner.call(request))
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
}
