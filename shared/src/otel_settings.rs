//! OpenTelemetry export settings, read the way every OpenTelemetry SDK reads them: the
//! standard `OTEL_*` environment (the SDK's and the OTLP exporter's variables), over a settings
//! file's `[otel]` table, whose keys are the same names without `OTEL_`, in lower case
//! (`exporter_otlp_endpoint = "http://collector:4318"`). Each signal (traces, metrics) is off
//! when no endpoint is set for it, when its exporter is `none` (`OTEL_TRACES_EXPORTER`,
//! `OTEL_METRICS_EXPORTER`), or when `OTEL_SDK_DISABLED=true`.
//!
//! Other `OTEL_*` variables in the environment are left alone (a pod's environment is often
//! shared with other SDKs); an unknown key in the file is refused, as every other setting is.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::secret::SecretString;
use crate::settings_source::{SettingsError, invalid, parse, parse_bool};

/// The most prompt, or completion, a project may have recorded on one span: enough for a long
/// conversation's gist, small enough that a span stays a span.
pub const MAX_CONTENT_CAPTURE_BYTES: u32 = 64 * 1024;

/// The variables read, each also a key of the file's `[otel]` table.
pub const VARIABLES: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
];

/// Spans held for export at most; beyond it they are dropped and counted.
const MOST_QUEUED: usize = 1 << 20;

#[derive(Debug)]
pub struct OtelSettings {
    /// `service.name`: `OTEL_SERVICE_NAME`, else the resource attributes' own, else the binary's.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` (without `service.name`), in the order given.
    pub resource: Vec<(String, String)>,
    /// Where and how traces go; `None`: traces are off.
    pub traces: Option<TraceExport>,
    /// Where and how metrics go; `None`: only the Prometheus endpoint serves them.
    pub metrics: Option<MetricExport>,
}

/// Where one signal's export requests go, and how.
#[derive(Debug)]
pub struct Destination {
    /// The URL export requests go to: for HTTP the signal's own path (`…/v1/traces`), for
    /// gRPC the collector's origin.
    pub endpoint: url::Url,
    pub protocol: OtlpProtocol,
    /// Sent with every export; values may be credentials (a vendor's API key).
    pub headers: Vec<(String, SecretString)>,
    /// How long one export may take.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct MetricExport {
    pub destination: Destination,
    /// How often every metric is exported (cumulative).
    pub interval: Duration,
}

#[derive(Debug)]
pub struct TraceExport {
    pub destination: Destination,
    pub sampler: Sampler,
    /// How often the queue is exported when it holds less than a batch.
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Which traces are recorded: `OTEL_TRACES_SAMPLER`'s six standard samplers, as a ratio of
/// root traces (1 for `always_on`, 0 for `always_off`) and whether a parent's decision wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// A request that arrives with a `traceparent` follows its sampled flag.
    pub parent_based: bool,
    /// The share of traces started here that are recorded, 0 to 1.
    pub ratio: f64,
}

impl Sampler {
    /// Whether a trace is recorded: a parent's flag when there is one and the sampler is
    /// parent-based, else the trace id's lower eight bytes against the ratio (the
    /// specification's `TraceIdRatioBased`, so every process decides one trace alike).
    pub fn samples(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        if self.parent_based
            && let Some(sampled) = parent_sampled
        {
            return sampled;
        }
        if self.ratio >= 1.0 {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        // The cast saturates, and only ratios below 1 reach it.
        let bound = (self.ratio * u64::MAX as f64) as u64;
        u64::from_be_bytes(low) < bound
    }
}

impl OtelSettings {
    /// Reads the settings: `env` as pairs (tests never touch the process environment), `file`
    /// the settings file's `[otel]` table if it has one; the environment wins.
    pub fn load(
        default_service: &str,
        env: &[(String, String)],
        file: Option<&BTreeMap<String, toml::Value>>,
    ) -> Result<Self, SettingsError> {
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        if let Some(file) = file {
            for (key, value) in file {
                let Some(name) = VARIABLES.iter().find(|name| file_key(name) == key.as_str())
                else {
                    return Err(SettingsError::UnknownVariable {
                        key: format!("otel.{key}"),
                        known: VARIABLES
                            .iter()
                            .map(|name| file_key(name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                };
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(n) => n.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(invalid(
                            &format!("otel.{key}"),
                            "must be a string, number or boolean",
                        ));
                    }
                };
                values.insert(name, text);
            }
        }
        for (key, value) in env {
            if let Some(name) = VARIABLES.iter().find(|name| **name == key.as_str()) {
                values.insert(name, value.clone());
            }
        }
        let get = |name: &str| values.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => key_values("OTEL_RESOURCE_ATTRIBUTES", text)?,
            None => Vec::new(),
        };
        let named_in_resource = resource
            .iter()
            .position(|(key, _)| key == "service.name")
            .map(|at| resource.remove(at).1);
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_owned)
            .or(named_in_resource)
            .unwrap_or_else(|| default_service.to_owned());

        let disabled = match get("OTEL_SDK_DISABLED") {
            Some(v) => parse_bool("OTEL_SDK_DISABLED", v)?,
            None => false,
        };
        let millis = |key: &str, default: u64| -> Result<Duration, SettingsError> {
            let ms = match get(key) {
                Some(v) => parse::<u64>(key, v)?,
                None => default,
            };
            if ms == 0 {
                return Err(invalid(key, "must be above 0"));
            }
            Ok(Duration::from_millis(ms))
        };
        let traces = match exporting(get, "OTEL_TRACES_EXPORTER", &["otlp"])? && !disabled {
            false => None,
            true => destination(&get, &millis, "TRACES", "v1/traces")?,
        };
        let traces = match traces {
            None => None,
            Some(mut destination) => {
                let count = |key: &str, default: usize| -> Result<usize, SettingsError> {
                    let n = match get(key) {
                        Some(v) => parse::<usize>(key, v)?,
                        None => default,
                    };
                    if n == 0 || n > MOST_QUEUED {
                        return Err(invalid(key, format!("must be 1 to {MOST_QUEUED}")));
                    }
                    Ok(n)
                };
                let max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
                let max_export_batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?;
                if max_export_batch_size > max_queue_size {
                    return Err(invalid(
                        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                        "must not exceed OTEL_BSP_MAX_QUEUE_SIZE",
                    ));
                }
                destination.timeout = destination
                    .timeout
                    .min(millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?);
                Some(TraceExport {
                    destination,
                    sampler: sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?,
                    schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?,
                    max_queue_size,
                    max_export_batch_size,
                })
            }
        };
        // `prometheus` is served whatever this says: every process has its /metrics.
        let metrics = match exporting(get, "OTEL_METRICS_EXPORTER", &["otlp", "prometheus"])?
            && get("OTEL_METRICS_EXPORTER") != Some("prometheus")
            && !disabled
        {
            false => None,
            true => destination(&get, &millis, "METRICS", "v1/metrics")?,
        };
        let metrics = match metrics {
            None => None,
            Some(mut destination) => {
                destination.timeout = destination
                    .timeout
                    .min(millis("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)?);
                Some(MetricExport {
                    destination,
                    interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
                })
            }
        };
        Ok(Self {
            service_name,
            resource,
            traces,
            metrics,
        })
    }
}

/// Whether a signal's exporter (`key`: `otlp` unless set) is one of `served`, or `none`.
fn exporting<'v>(
    get: impl Fn(&str) -> Option<&'v str>,
    key: &str,
    served: &[&str],
) -> Result<bool, SettingsError> {
    match get(key).unwrap_or("otlp") {
        "none" => Ok(false),
        named if served.contains(&named) => Ok(true),
        other => Err(invalid(
            key,
            format!("'{other}' is not served: {} or `none`", served.join(", ")),
        )),
    }
}

/// A signal's destination (`signal`: `TRACES` or `METRICS`): its own variables over the
/// common ones; `None` when neither names an endpoint.
fn destination<'v>(
    get: &impl Fn(&str) -> Option<&'v str>,
    millis: &impl Fn(&str, u64) -> Result<Duration, SettingsError>,
    signal: &str,
    signal_path: &str,
) -> Result<Option<Destination>, SettingsError> {
    let own = |what: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{what}");
    let signal_endpoint_key = own("ENDPOINT");
    let signal_endpoint = get(&signal_endpoint_key);
    let base_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    if signal_endpoint.is_none() && base_endpoint.is_none() {
        return Ok(None);
    }
    let protocol_key = own("PROTOCOL");
    let protocol = match get(&protocol_key)
        .map(|p| (protocol_key.as_str(), p))
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)))
    {
        None | Some((_, "http/protobuf")) => OtlpProtocol::HttpProtobuf,
        Some((_, "grpc")) => OtlpProtocol::Grpc,
        Some((key, other)) => {
            return Err(invalid(
                key,
                format!("'{other}' is not served: `grpc` or `http/protobuf`"),
            ));
        }
    };
    let endpoint = match (signal_endpoint, base_endpoint) {
        (Some(url), _) => endpoint_url(&signal_endpoint_key, url, None)?,
        (None, Some(url)) => endpoint_url(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            url,
            (protocol == OtlpProtocol::HttpProtobuf).then_some(signal_path),
        )?,
        (None, None) => return Ok(None),
    };
    // The signal's own headers add to the common ones, and win on a name both have.
    let mut headers: Vec<(String, SecretString)> = Vec::new();
    for key in ["OTEL_EXPORTER_OTLP_HEADERS".to_owned(), own("HEADERS")] {
        if let Some(text) = get(&key) {
            for (name, value) in key_values(&key, text)? {
                let name = name.to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(&value).is_err()
                {
                    return Err(invalid(&key, format!("'{name}' is no valid header")));
                }
                headers.retain(|(held, _)| *held != name);
                headers.push((name, SecretString::new(value)));
            }
        }
    }
    let timeout_key = own("TIMEOUT");
    let timeout = match get(&timeout_key) {
        Some(_) => millis(&timeout_key, 10_000)?,
        None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
    };
    Ok(Some(Destination {
        endpoint,
        protocol,
        headers,
        timeout,
    }))
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` → `exporter_otlp_endpoint`.
fn file_key(name: &str) -> String {
    name.trim_start_matches("OTEL_").to_ascii_lowercase()
}

fn sampler(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, SettingsError> {
    let ratio = || -> Result<f64, SettingsError> {
        let ratio = match arg {
            Some(text) => parse::<f64>("OTEL_TRACES_SAMPLER_ARG", text)?,
            None => 1.0,
        };
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid("OTEL_TRACES_SAMPLER_ARG", "must be from 0 to 1"));
        }
        Ok(ratio)
    };
    let (parent_based, ratio) = match name.unwrap_or("parentbased_always_on") {
        "always_on" => (false, 1.0),
        "always_off" => (false, 0.0),
        "traceidratio" => (false, ratio()?),
        "parentbased_always_on" => (true, 1.0),
        "parentbased_always_off" => (true, 0.0),
        "parentbased_traceidratio" => (true, ratio()?),
        other => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "'{other}' is not served: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    };
    Ok(Sampler {
        parent_based,
        ratio,
    })
}

/// An endpoint as a URL (`http` or `https`), with `signal_path` added to its path when the
/// exporter's common endpoint is given for HTTP.
fn endpoint_url(
    key: &str,
    text: &str,
    signal_path: Option<&str>,
) -> Result<url::Url, SettingsError> {
    let mut url = url::Url::parse(text)
        .map_err(|error| invalid(key, format!("'{text}' is no URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("'{text}' is no http:// or https:// URL"),
        ));
    }
    if let Some(signal) = signal_path {
        let path = format!("{}/{signal}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `key1=value1,key2=value2`, each value percent-decoded (the W3C Baggage form the
/// specification names for headers and resource attributes).
fn key_values(key: &str, text: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let mut pairs = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((name, value)) = item.split_once('=') else {
            return Err(invalid(key, "each entry must be name=value"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(key, "an entry has no name"));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| invalid(key, "a value is not UTF-8 once decoded"))?;
        pairs.push((name.to_owned(), value.into_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests;
