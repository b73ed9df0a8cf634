//! Metrics over OTLP. Each process already renders every metric it has for Prometheus; every
//! `OTEL_METRIC_EXPORT_INTERVAL` a thread of its own renders that text, reads it back into
//! families, and sends them as one `ExportMetricsServiceRequest` — counters as monotonic
//! cumulative sums (without Prometheus's `_total`), gauges as gauges, histograms as cumulative
//! explicit-bucket histograms. The GenAI histograms go out under the conventions' own names,
//! units and attribute keys (`gen_ai.client.operation.duration`, `gen_ai.operation.name`, …).
//! One source of truth for both ways out, and nothing on any request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint};
use sluice_shared::otel_settings::MetricExport;

use crate::export::Sender;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const CUMULATIVE: u64 = 2;

/// Renders the process's metrics in Prometheus's text format.
pub type Render = Box<dyn Fn() -> String + Send + Sync>;

pub struct MetricsExporter {
    stop: AtomicBool,
    stopped: AtomicBool,
    wake_up: tokio::sync::Notify,
    pub exports: AtomicU64,
    pub exports_failed: AtomicU64,
}

impl MetricsExporter {
    /// Starts exporting what `render` renders, every interval, until shut down.
    pub fn start(
        service_name: String,
        resource: Vec<(String, String)>,
        export: MetricExport,
        render: Render,
    ) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sender = {
            let _entered = runtime.enter();
            Sender::new(&export.destination, EXPORT_PATH)?
        };
        let exporter = Arc::new(Self {
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            wake_up: tokio::sync::Notify::new(),
            exports: AtomicU64::new(0),
            exports_failed: AtomicU64::new(0),
        });
        let running = Arc::clone(&exporter);
        let started_ns = unix_ns(SystemTime::now());
        std::thread::Builder::new()
            .name("sluice-otel-metrics".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let scope = Scope {
                        service_name: &service_name,
                        resource: &resource,
                        started_ns,
                    };
                    loop {
                        tokio::select! {
                            () = running.wake_up.notified() => {}
                            () = tokio::time::sleep(export.interval) => {}
                        }
                        // The last values go out at shutdown too.
                        let body = encode(&parse(&render()), &scope, unix_ns(SystemTime::now()));
                        let sent = tokio::time::timeout(
                            export.destination.timeout,
                            sender.send(Bytes::from(body)),
                        )
                        .await
                        .unwrap_or_else(|_| Err("timed out".to_owned()));
                        match sent {
                            Ok(()) => running.exports.fetch_add(1, Ordering::Relaxed),
                            Err(reason) => {
                                tracing::warn!(%reason, "an OpenTelemetry metrics export failed");
                                running.exports_failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        if running.stop.load(Ordering::Acquire) {
                            running.stopped.store(true, Ordering::Release);
                            return;
                        }
                    }
                });
            })?;
        Ok(exporter)
    }

    /// Exports once more and stops, waiting up to `within`.
    pub fn shut_down(&self, within: Duration) {
        crate::export::stop_and_wait(&self.stop, &self.wake_up, &self.stopped, within);
    }

    pub fn render_metrics(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP sluice_otel_metric_exports_total OTLP metric exports, by outcome.\n# TYPE sluice_otel_metric_exports_total counter\nsluice_otel_metric_exports_total{{outcome=\"ok\"}} {}\nsluice_otel_metric_exports_total{{outcome=\"failed\"}} {}\n",
            self.exports.load(Ordering::Relaxed),
            self.exports_failed.load(Ordering::Relaxed)
        ));
    }
}

fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// One metric family read back from the text format.
#[derive(Debug, Default, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub numbers: Vec<(Labels, f64)>,
    pub histograms: Vec<HistogramPoint>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Gauge,
    Counter,
    Histogram,
}

#[derive(Debug, Default, PartialEq)]
pub struct HistogramPoint {
    pub labels: Labels,
    /// Upper bounds and cumulative counts, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
    /// The buckets' exemplars, where the text gave them.
    pub exemplars: Vec<Exemplar>,
}

/// A sampled request's trace beside a value it recorded, as OpenMetrics writes it after a
/// bucket: `# {trace_id="…",span_id="…"} 0.25 1733580000.123456`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    pub time_ns: u64,
}

impl Exemplar {
    /// What follows ` # {` on a bucket's line.
    fn parse(text: &str) -> Option<Self> {
        let (labels, rest) = text.split_once("} ")?;
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        for pair in labels.split(',') {
            let (key, value) = pair.split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            match key {
                "trace_id" => hex::decode_to_slice(value, &mut trace_id).ok()?,
                "span_id" => hex::decode_to_slice(value, &mut span_id).ok()?,
                _ => {}
            }
        }
        let mut numbers = rest.split(' ');
        let value: f64 = numbers.next()?.parse().ok()?;
        let seconds: f64 = numbers.next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
        Some(Self {
            trace_id,
            span_id,
            value,
            time_ns: (seconds * 1e9) as u64,
        })
    }
}

/// Reads the text format this process writes (one `# HELP` and `# TYPE` before each family,
/// label values escaped) into families.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                ..Family::default()
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(family) = families.last_mut() {
                family.kind = match rest.rsplit(' ').next() {
                    Some("counter") => Kind::Counter,
                    Some("histogram") => Kind::Histogram,
                    _ => Kind::Gauge,
                };
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some(family) = families.last_mut() else {
            continue;
        };
        // A bucket's exemplar follows its value (label values come before it, so a `#` in
        // one is never taken for it).
        let (line, exemplar) = match sample_end(line) {
            Some(end) => (
                &line[..end],
                line[end..].strip_prefix(" # {").and_then(Exemplar::parse),
            ),
            None => (line, None),
        };
        let Some((series, value)) = sample(line) else {
            continue;
        };
        let (name, labels) = series;
        match family.kind {
            Kind::Histogram => add_histogram_line(family, &name, labels, value, exemplar),
            _ => family.numbers.push((labels, value)),
        }
    }
    families
}

/// Where a sample line's value ends: after its labels (read past their quoted values) and the
/// value itself.
fn sample_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut at = 0;
    if let Some(open) = line.find('{') {
        let mut quoted = false;
        at = open + 1;
        while let Some(&byte) = bytes.get(at) {
            match byte {
                b'\\' if quoted => at += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
    }
    let value_start = at + line.get(at..)?.find(' ')? + 1;
    Some(
        line.get(value_start..)?
            .find(' ')
            .map_or(line.len(), |end| value_start + end),
    )
}

fn add_histogram_line(
    family: &mut Family,
    name: &str,
    mut labels: Vec<(String, String)>,
    value: f64,
    exemplar: Option<Exemplar>,
) {
    let le = labels
        .iter()
        .position(|(key, _)| key == "le")
        .map(|at| labels.remove(at).1);
    let point = match family.histograms.iter_mut().find(|p| p.labels == labels) {
        Some(point) => point,
        None => {
            family.histograms.push(HistogramPoint {
                labels,
                ..HistogramPoint::default()
            });
            let Some(point) = family.histograms.last_mut() else {
                return;
            };
            point
        }
    };
    let suffix = name.strip_prefix(family.name.as_str()).unwrap_or("");
    match (suffix, le) {
        ("_bucket", Some(le)) => {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            point.buckets.push((bound, value as u64));
            point.exemplars.extend(exemplar);
        }
        ("_sum", _) => point.sum = value,
        ("_count", _) => point.count = value as u64,
        _ => {}
    }
}

/// A series' labels, in order, values unescaped.
type Labels = Vec<(String, String)>;

/// A sample line: its name and labels, and its value.
fn sample(line: &str) -> Option<((String, Labels), f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some(open) = series.find('{') else {
        return Some(((series.to_owned(), Vec::new()), value));
    };
    let name = series[..open].to_owned();
    let mut labels = Vec::new();
    let mut rest = series[open + 1..].strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut text = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, other)) => text.push(other),
                    None => {}
                },
                '"' => {
                    end = Some(at);
                    break;
                }
                c => text.push(c),
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(',').to_owned(), text));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(((name, labels), value))
}

/// The conventions' name and unit of a GenAI histogram, from its Prometheus name.
fn otel_name(family: &Family) -> (String, &'static str) {
    let gen_ai = [
        (
            "gen_ai_client_operation_duration_seconds",
            "gen_ai.client.operation.duration",
            "s",
        ),
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
        ),
        (
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "gen_ai.client.operation.time_per_output_chunk",
            "s",
        ),
        (
            "gen_ai_client_token_usage",
            "gen_ai.client.token.usage",
            "{token}",
        ),
    ];
    if let Some((_, name, unit)) = gen_ai.iter().find(|(prom, _, _)| *prom == family.name) {
        return ((*name).to_owned(), unit);
    }
    let name = match family.kind {
        Kind::Counter => family.name.strip_suffix("_total").unwrap_or(&family.name),
        _ => &family.name,
    };
    let unit = if name.ends_with("_seconds") { "s" } else { "" };
    (name.to_owned(), unit)
}

/// A GenAI attribute's key as the conventions spell it.
fn otel_key(key: &str) -> &str {
    match key {
        "gen_ai_operation_name" => "gen_ai.operation.name",
        "gen_ai_request_model" => "gen_ai.request.model",
        "gen_ai_provider_name" => "gen_ai.provider.name",
        "gen_ai_token_type" => "gen_ai.token.type",
        "error_type" => "error.type",
        "sluice_provider" => "sluice.provider",
        other => other,
    }
}

struct Scope<'a> {
    service_name: &'a str,
    resource: &'a [(String, String)],
    started_ns: u64,
}

/// A length-delimited field, its body written by `body` first.
fn nested(buf: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(inner.len() as u64, buf);
    buf.extend_from_slice(&inner);
}

fn bytes_field(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
}

fn string(buf: &mut Vec<u8>, tag: u32, text: &str) {
    bytes_field(buf, tag, text.as_bytes());
}

fn fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn double(buf: &mut Vec<u8>, tag: u32, value: f64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    nested(buf, tag, |kv| {
        string(kv, 1, key);
        nested(kv, 2, |any| string(any, 1, value));
    });
}

/// One `ExportMetricsServiceRequest` of every family, at `now_ns`.
fn encode(families: &[Family], scope: &Scope<'_>, now_ns: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 * 1024);
    nested(&mut buf, 1, |resource_metrics| {
        nested(resource_metrics, 1, |resource| {
            key_value(resource, 1, "service.name", scope.service_name);
            for (key, value) in scope.resource {
                key_value(resource, 1, key, value);
            }
        });
        nested(resource_metrics, 2, |scope_metrics| {
            nested(scope_metrics, 1, |instrumentation| {
                string(instrumentation, 1, "sluice");
                string(instrumentation, 2, env!("CARGO_PKG_VERSION"));
            });
            for family in families {
                if family.numbers.is_empty() && family.histograms.is_empty() {
                    continue;
                }
                nested(scope_metrics, 2, |metric| {
                    let (name, unit) = otel_name(family);
                    string(metric, 1, &name);
                    string(metric, 2, &family.help);
                    if !unit.is_empty() {
                        string(metric, 3, unit);
                    }
                    write_data(metric, family, scope.started_ns, now_ns);
                });
            }
        });
    });
    buf
}

fn write_data(metric: &mut Vec<u8>, family: &Family, started_ns: u64, now_ns: u64) {
    let attributes = |point: &mut Vec<u8>, tag: u32, labels: &[(String, String)]| {
        for (key, value) in labels {
            key_value(point, tag, otel_key(key), value);
        }
    };
    let numbers = |data: &mut Vec<u8>, cumulative: bool| {
        for (labels, value) in &family.numbers {
            nested(data, 1, |point| {
                attributes(point, 7, labels);
                if cumulative {
                    fixed64(point, 2, started_ns);
                }
                fixed64(point, 3, now_ns);
                double(point, 4, *value);
            });
        }
    };
    match family.kind {
        Kind::Gauge => nested(metric, 5, |gauge| numbers(gauge, false)),
        Kind::Counter => nested(metric, 7, |sum| {
            numbers(sum, true);
            encode_key(2, WireType::Varint, sum);
            encode_varint(CUMULATIVE, sum);
            encode_key(3, WireType::Varint, sum);
            encode_varint(1, sum);
        }),
        Kind::Histogram => nested(metric, 9, |histogram| {
            for point in &family.histograms {
                nested(histogram, 1, |data| {
                    attributes(data, 9, &point.labels);
                    fixed64(data, 2, started_ns);
                    fixed64(data, 3, now_ns);
                    fixed64(data, 4, point.count);
                    double(data, 5, point.sum);
                    // Per bucket, from the text's cumulative counts.
                    let mut below = 0;
                    let counts: Vec<u64> = point
                        .buckets
                        .iter()
                        .map(|&(_, cumulative)| {
                            let count = cumulative.saturating_sub(below);
                            below = cumulative;
                            count
                        })
                        .collect();
                    nested(data, 6, |packed| {
                        for count in &counts {
                            packed.extend_from_slice(&count.to_le_bytes());
                        }
                    });
                    nested(data, 7, |packed| {
                        for (bound, _) in point.buckets.iter().filter(|(b, _)| b.is_finite()) {
                            packed.extend_from_slice(&bound.to_le_bytes());
                        }
                    });
                    // exemplars = 8: time_unix_nano = 2, as_double = 3, span_id = 4,
                    // trace_id = 5.
                    for exemplar in &point.exemplars {
                        nested(data, 8, |field| {
                            fixed64(field, 2, exemplar.time_ns);
                            double(field, 3, exemplar.value);
                            bytes_field(field, 4, &exemplar.span_id);
                            bytes_field(field, 5, &exemplar.trace_id);
                        });
                    }
                });
            }
            encode_key(2, WireType::Varint, histogram);
            encode_varint(CUMULATIVE, histogram);
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP sluice_requests_total Requests received.\n# TYPE sluice_requests_total counter\nsluice_requests_total 3\n\
# HELP sluice_config_version Config version.\n# TYPE sluice_config_version gauge\nsluice_config_version 7\n\
# HELP gen_ai_client_token_usage Tokens.\n# TYPE gen_ai_client_token_usage histogram\n\
gen_ai_client_token_usage_bucket{gen_ai_request_model=\"we\\\"ird\",gen_ai_token_type=\"input\",le=\"1\"} 0\n\
gen_ai_client_token_usage_bucket{gen_ai_request_model=\"we\\\"ird\",gen_ai_token_type=\"input\",le=\"4\"} 2\n\
gen_ai_client_token_usage_bucket{gen_ai_request_model=\"we\\\"ird\",gen_ai_token_type=\"input\",le=\"+Inf\"} 3\n\
gen_ai_client_token_usage_sum{gen_ai_request_model=\"we\\\"ird\",gen_ai_token_type=\"input\"} 20\n\
gen_ai_client_token_usage_count{gen_ai_request_model=\"we\\\"ird\",gen_ai_token_type=\"input\"} 3\n";

    #[test]
    fn the_text_format_reads_back_into_families() {
        let families = parse(TEXT);
        assert_eq!(families.len(), 3);
        assert_eq!(families[0].kind, Kind::Counter);
        assert_eq!(families[0].numbers, vec![(Vec::new(), 3.0)]);
        assert_eq!(otel_name(&families[0]), ("sluice_requests".to_owned(), ""));
        let tokens = &families[2];
        assert_eq!(
            otel_name(tokens),
            ("gen_ai.client.token.usage".to_owned(), "{token}")
        );
        assert_eq!(tokens.histograms.len(), 1);
        let point = &tokens.histograms[0];
        assert_eq!(
            point.labels,
            vec![
                ("gen_ai_request_model".to_owned(), "we\"ird".to_owned()),
                ("gen_ai_token_type".to_owned(), "input".to_owned())
            ]
        );
        assert_eq!(point.buckets, vec![(1.0, 0), (4.0, 2), (f64::INFINITY, 3)]);
        assert_eq!((point.sum, point.count), (20.0, 3));
        assert!(point.exemplars.is_empty());
    }

    #[test]
    fn a_buckets_exemplar_is_read_after_its_value_never_from_a_label() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let text = format!(
            "# HELP d Duration.\n# TYPE d histogram\n\
             d_bucket{{model=\"a # {{b\",le=\"0.5\"}} 1 # {{trace_id=\"{trace}\",span_id=\"00f067aa0ba902b7\"}} 0.25 1733580000.5\n\
             d_bucket{{model=\"a # {{b\",le=\"+Inf\"}} 2\n\
             d_sum{{model=\"a # {{b\"}} 1.25\nd_count{{model=\"a # {{b\"}} 2\n"
        );
        let families = parse(&text);
        let point = &families[0].histograms[0];
        assert_eq!(
            point.labels,
            vec![("model".to_owned(), "a # {b".to_owned())]
        );
        assert_eq!(point.buckets, vec![(0.5, 1), (f64::INFINITY, 2)]);
        assert_eq!(point.count, 2);
        let mut trace_id = [0u8; 16];
        hex::decode_to_slice(trace, &mut trace_id).unwrap();
        assert_eq!(
            point.exemplars,
            vec![Exemplar {
                trace_id,
                span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
                value: 0.25,
                time_ns: 1_733_580_000_500_000_000,
            }]
        );
    }
}
