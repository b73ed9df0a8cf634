//! A real OTLP trace receiver on loopback: the collector's gRPC service (`TraceService/Export`,
//! the `opentelemetry-proto` crate's generated server) and its HTTP/protobuf endpoint
//! (`POST /v1/traces`), each decoding what arrives with the official types. It can be made
//! slow, to show that a collector that lags never slows traffic.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Default)]
struct Received {
    /// Whether requests are kept (tests) or only their spans counted (the benchmark).
    keep: bool,
    spans: usize,
    requests: Vec<ExportTraceServiceRequest>,
    /// Every exported byte, as it came (HTTP) or encoded again (gRPC), for searching.
    bytes: Vec<u8>,
    /// The metadata (gRPC) or headers (HTTP) of the last export.
    headers: Vec<(String, String)>,
    /// Metric exports, as they came.
    metrics: Vec<ExportMetricsServiceRequest>,
}

pub struct OtlpReceiver {
    pub grpc_url: String,
    pub http_url: String,
    received: Arc<Mutex<Received>>,
    delay: Arc<Mutex<Duration>>,
}

struct Service {
    received: Arc<Mutex<Received>>,
    delay: Arc<Mutex<Duration>>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let headers = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                    Some((key.to_string(), value.to_str().unwrap_or("").to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let message = request.into_inner();
        let mut received = self.received.lock().unwrap();
        received.take(message, None, headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let message = request.into_inner();
        self.received.lock().unwrap().metrics.push(message);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Received {
    /// An HTTP export's body: its status.
    fn take_http(&mut self, body: &[u8], headers: &http::HeaderMap) -> u16 {
        if !self.keep {
            // Counting only (a benchmark's millions): the spans are counted where they lie.
            return match count_spans(body) {
                Some(spans) => {
                    self.spans += spans;
                    200
                }
                None => 400,
            };
        }
        let Ok(message) = ExportTraceServiceRequest::decode(body) else {
            return 400;
        };
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        self.take(message, Some(body), headers);
        200
    }

    fn take(
        &mut self,
        message: ExportTraceServiceRequest,
        raw: Option<&[u8]>,
        headers: Vec<(String, String)>,
    ) {
        self.spans += message
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter())
            .map(|s| s.spans.len())
            .sum::<usize>();
        self.headers = headers;
        if self.keep {
            match raw {
                Some(raw) => self.bytes.extend_from_slice(raw),
                None => self.bytes.extend(message.encode_to_vec()),
            }
            self.requests.push(message);
        }
    }
}

impl OtlpReceiver {
    /// A receiver that keeps everything it receives.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// A receiver that only counts the spans it receives (a benchmark's millions).
    pub async fn start_counting() -> Self {
        Self::start_with(false).await
    }

    async fn start_with(keep: bool) -> Self {
        let received = Arc::new(Mutex::new(Received {
            keep,
            ..Received::default()
        }));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
        let service = TraceServiceServer::new(Service {
            received: received.clone(),
            delay: delay.clone(),
        });
        let metrics = MetricsServiceServer::new(Service {
            received: received.clone(),
            delay: delay.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
        );
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!("http://{}", http.local_addr().unwrap());
        let (held, waits) = (received.clone(), delay.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = http.accept().await else {
                    return;
                };
                let (received, delay) = (held.clone(), waits.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let (received, delay) = (received.clone(), delay.clone());
                            async move {
                                let wait = *delay.lock().unwrap();
                                tokio::time::sleep(wait).await;
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let status = if parts.uri.path() == "/v1/metrics" {
                                    match ExportMetricsServiceRequest::decode(body.as_ref()) {
                                        Ok(message) => {
                                            received.lock().unwrap().metrics.push(message);
                                            200
                                        }
                                        Err(_) => 400,
                                    }
                                } else if parts.uri.path() != "/v1/traces" {
                                    404
                                } else if parts.headers.get("content-type").map(|v| v.as_bytes())
                                    != Some(b"application/x-protobuf")
                                {
                                    415
                                } else {
                                    received.lock().unwrap().take_http(&body, &parts.headers)
                                };
                                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            grpc_url,
            http_url,
            received,
            delay,
        }
    }

    /// The metrics of the last export from `service`, by name.
    pub fn last_metrics(&self, service: &str) -> Vec<Metric> {
        let received = self.received.lock().unwrap();
        received
            .metrics
            .iter()
            .rev()
            .flat_map(|request| request.resource_metrics.iter())
            .find(|resource| {
                resource
                    .resource
                    .as_ref()
                    .and_then(|r| text(&r.attributes, "service.name"))
                    .as_deref()
                    == Some(service)
            })
            .map(|resource| {
                resource
                    .scope_metrics
                    .iter()
                    .flat_map(|scope| scope.metrics.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every answer waits this long from now on.
    pub fn slow_down(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Every span received so far, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        received
            .requests
            .iter()
            .flat_map(|request| request.resource_spans.iter())
            .flat_map(|resource_spans| {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| text(&r.attributes, "service.name"))
                    .unwrap_or_default();
                resource_spans
                    .scope_spans
                    .iter()
                    .flat_map(|scope| scope.spans.iter())
                    .map(move |span| (service.clone(), span.clone()))
            })
            .collect()
    }

    /// Waits (bounded) until at least `count` spans have arrived; returns them all.
    pub async fn wait_for_spans(&self, count: usize, within: Duration) -> Vec<(String, Span)> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many spans have arrived.
    pub fn span_count(&self) -> usize {
        self.received.lock().unwrap().spans
    }

    /// Every byte exported so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.received.lock().unwrap().bytes.clone()
    }

    /// The headers (or gRPC metadata) of the last export.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.received.lock().unwrap().headers.clone()
    }
}

/// The spans in an encoded `ExportTraceServiceRequest` (resource_spans = 1 → scope_spans = 2
/// → spans = 2), found by walking its fields; `None` if it is not one.
pub fn count_spans(request: &[u8]) -> Option<usize> {
    let mut spans = 0;
    for resource in fields(request, 1)? {
        for scope in fields(resource, 2)? {
            spans += fields(scope, 2)?.len();
        }
    }
    Some(spans)
}

/// The length-delimited fields numbered `wanted` of one message.
fn fields(mut message: &[u8], wanted: u32) -> Option<Vec<&[u8]>> {
    use prost::encoding::decode_varint;
    let mut found = Vec::new();
    while !message.is_empty() {
        let key = decode_varint(&mut message).ok()?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let skip = match wire {
            0 => {
                decode_varint(&mut message).ok()?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(decode_varint(&mut message).ok()?).ok()?;
                if field == wanted {
                    found.push(message.get(..len)?);
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        message = message.get(skip..)?;
    }
    Some(found)
}

/// A string attribute's value.
pub fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

/// An integer attribute's value.
pub fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key)? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// A floating-point attribute's value.
pub fn double(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match value(attributes, key)? {
        any_value::Value::DoubleValue(x) => Some(*x),
        _ => None,
    }
}

/// A string array attribute's values.
pub fn texts(attributes: &[KeyValue], key: &str) -> Option<Vec<String>> {
    match value(attributes, key)? {
        any_value::Value::ArrayValue(array) => Some(
            array
                .values
                .iter()
                .filter_map(|item| match item.value.as_ref()? {
                    any_value::Value::StringValue(text) => Some(text.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}
