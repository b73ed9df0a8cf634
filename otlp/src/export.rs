//! The export queue and its exporter: finished work (a request's trace, an admin call) joins a
//! bounded lock-free queue by value — a full queue drops it and counts its spans, so nothing
//! that produces spans ever waits. A thread of its own takes items off the queue — when a
//! batch has gathered, or every `OTEL_BSP_SCHEDULE_DELAY` — encodes them as one OTLP request
//! and sends it over gRPC or HTTP/protobuf, waiting at most the export timeout. A failed export
//! drops its spans and counts them; nothing is retried into a backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use crossbeam_queue::ArrayQueue;
use http_body_util::{BodyExt, Full};
use sluice_shared::otel_settings::{Destination, OtlpProtocol, TraceExport};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::encode::TraceRequest;

/// What the queue holds: something that becomes spans.
pub trait Exportable: Send + 'static {
    fn span_count(&self) -> usize;
    /// Adds its spans to an export request.
    fn write(&self, request: &mut TraceRequest);
}

pub struct Exporter<T> {
    service_name: String,
    resource: Vec<(String, String)>,
    /// Items by value: queuing one costs no allocation.
    queue: ArrayQueue<T>,
    /// Items per export.
    batch_items: usize,
    /// Set while the exporter has been woken and has not yet looked.
    wake: AtomicBool,
    wake_up: tokio::sync::Notify,
    stop: AtomicBool,
    stopped: AtomicBool,
    pub counters: ExportCounters,
}

#[derive(Default)]
pub struct ExportCounters {
    pub spans_exported: AtomicU64,
    /// Dropped because the queue was full.
    pub spans_dropped: AtomicU64,
    /// Dropped because their export failed (collector down, slow or refusing).
    pub spans_export_failed: AtomicU64,
}

impl<T: Exportable> Exporter<T> {
    /// The queue and its exporter thread, exporting as `export` says. The queue and batch
    /// settings count spans; `spans_per_item` is about how many an item makes.
    pub fn start(
        service_name: String,
        resource: Vec<(String, String)>,
        export: TraceExport,
        spans_per_item: usize,
    ) -> std::io::Result<Arc<Self>> {
        let per_item = spans_per_item.max(1);
        let exporter = Arc::new(Self {
            service_name,
            resource,
            queue: ArrayQueue::new((export.max_queue_size / per_item).max(1)),
            batch_items: (export.max_export_batch_size / per_item).max(1),
            wake: AtomicBool::new(false),
            wake_up: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            counters: ExportCounters::default(),
        });
        spawn(Arc::clone(&exporter), export)?;
        Ok(exporter)
    }

    /// Queues `item`, or drops it and counts its spans when the queue is full.
    pub fn enqueue(&self, item: T) {
        let spans = item.span_count() as u64;
        if self.queue.push(item).is_err() {
            self.counters
                .spans_dropped
                .fetch_add(spans, Ordering::Relaxed);
            return;
        }
        if self.queue.len() >= self.batch_items && !self.wake.swap(true, Ordering::AcqRel) {
            self.wake_up.notify_one();
        }
    }

    /// Exports what is queued and stops the exporter, waiting up to `within`.
    pub fn shut_down(&self, within: Duration) {
        crate::export::stop_and_wait(&self.stop, &self.wake_up, &self.stopped, within);
    }

    /// The exporter's counters in Prometheus's text format.
    pub fn render_metrics(&self, out: &mut String) {
        let counters = &self.counters;
        let lines = [
            (
                "sluice_otel_spans_exported_total",
                "Spans the OTLP collector accepted.",
                counters.spans_exported.load(Ordering::Relaxed),
            ),
            (
                "sluice_otel_spans_dropped_total",
                "Spans dropped because the export queue was full (telemetry never slows requests).",
                counters.spans_dropped.load(Ordering::Relaxed),
            ),
            (
                "sluice_otel_spans_export_failed_total",
                "Spans dropped because their export failed (collector down, slow or refusing).",
                counters.spans_export_failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in lines {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An export request is closed once it holds this much: a batch of spans carrying captured
/// prompts stays under gRPC's default 4 MiB message limit.
const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// Exports in flight at once: a collector's round trip does not hold up the next batch.
const MAX_IN_FLIGHT: usize = 4;

/// Sets `stop`, wakes the exporter thread, and waits up to `within` for it to say `stopped`
/// (it sends what it holds first).
pub(crate) fn stop_and_wait(
    stop: &AtomicBool,
    wake_up: &tokio::sync::Notify,
    stopped: &AtomicBool,
    within: Duration,
) {
    stop.store(true, Ordering::Release);
    wake_up.notify_one();
    let deadline = std::time::Instant::now() + within;
    while !stopped.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the exporter thread; it runs until `stop` is set and the queue is empty.
fn spawn<T: Exportable>(telemetry: Arc<Exporter<T>>, export: TraceExport) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sender = {
        let _entered = runtime.enter();
        Arc::new(Sender::new(&export.destination, EXPORT_PATH)?)
    };
    std::thread::Builder::new()
        .name("sluice-otel".to_owned())
        .spawn(move || runtime.block_on(run(telemetry, &export, sender)))?;
    Ok(())
}

async fn run<T: Exportable>(
    telemetry: Arc<Exporter<T>>,
    export: &TraceExport,
    sender: Arc<Sender>,
) {
    let scope_version = env!("CARGO_PKG_VERSION");
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = telemetry.wake_up.notified() => {}
            () = tokio::time::sleep(export.schedule_delay) => {}
        }
        telemetry.wake.store(false, Ordering::Release);
        let stopping = telemetry.stop.load(Ordering::Acquire);
        loop {
            while in_flight.try_join_next().is_some() {}
            if in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let mut request =
                TraceRequest::new(&telemetry.service_name, &telemetry.resource, scope_version);
            let mut taken = 0;
            while taken < telemetry.batch_items && request.encoded_len() < MAX_REQUEST_BYTES {
                let Some(item) = telemetry.queue.pop() else {
                    break;
                };
                item.write(&mut request);
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            let spans = request.spans as u64;
            let body = Bytes::from(request.finish());
            let (sender, timeout) = (Arc::clone(&sender), export.destination.timeout);
            let counted = Arc::clone(&telemetry);
            in_flight.spawn(async move {
                let sent = tokio::time::timeout(timeout, sender.send(body))
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                count(&counted, spans, sent);
            });
            if taken < telemetry.batch_items && telemetry.queue.is_empty() {
                break;
            }
        }
        if stopping {
            while in_flight.join_next().await.is_some() {}
            telemetry.stopped.store(true, Ordering::Release);
            return;
        }
    }
}

/// Counts what one export did with its spans.
fn count<T>(telemetry: &Exporter<T>, spans: u64, sent: Result<(), String>) {
    match sent {
        Ok(()) => {
            telemetry
                .counters
                .spans_exported
                .fetch_add(spans, Ordering::Relaxed);
        }
        Err(reason) => {
            telemetry
                .counters
                .spans_export_failed
                .fetch_add(spans, Ordering::Relaxed);
            tracing::warn!(%reason, spans, "an OpenTelemetry export failed; its spans are dropped");
        }
    }
}

/// Where export requests go, over the protocol the settings name.
pub(crate) enum Sender {
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
        /// The collector service's method.
        path: &'static str,
    },
    Http(Box<HttpSender>),
}

pub(crate) struct HttpSender {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl Sender {
    /// `path`: the collector service's gRPC method for this signal.
    pub(crate) fn new(export: &Destination, path: &'static str) -> std::io::Result<Self> {
        let invalid =
            |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        match export.protocol {
            OtlpProtocol::Grpc => {
                if export.endpoint.scheme() == "https" {
                    return Err(invalid(
                        "OTLP over gRPC to an https:// collector is not served yet: use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for a collector behind TLS".to_owned(),
                    ));
                }
                let channel = tonic::transport::Endpoint::from_shared(export.endpoint.to_string())
                    .map_err(|error| invalid(format!("OTLP endpoint: {error}")))?
                    .connect_timeout(export.timeout)
                    .timeout(export.timeout)
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &export.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(format!("OTLP header {name}: not a valid name")))?;
                    let value = tonic::metadata::MetadataValue::try_from(value.expose())
                        .map_err(|_| invalid(format!("OTLP header {name}: not a valid value")))?;
                    metadata.insert(key, value);
                }
                Ok(Self::Grpc {
                    channel,
                    metadata,
                    path,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .build();
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
                let uri: http::Uri = export
                    .endpoint
                    .as_str()
                    .parse()
                    .map_err(|error| invalid(format!("OTLP endpoint: {error}")))?;
                let mut headers = http::HeaderMap::new();
                for (name, value) in &export.headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(format!("OTLP header {name}: not a valid name")))?;
                    let mut value = http::HeaderValue::from_str(value.expose())
                        .map_err(|_| invalid(format!("OTLP header {name}: not a valid value")))?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                Ok(Self::Http(Box::new(HttpSender {
                    client,
                    uri,
                    headers,
                })))
            }
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`; the error says why it did not arrive.
    pub(crate) async fn send(&self, body: Bytes) -> Result<(), String> {
        match self {
            Self::Grpc {
                channel,
                metadata,
                path,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|error| error.to_string())?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                grpc.unary(
                    request,
                    http::uri::PathAndQuery::from_static(path),
                    RawCodec,
                )
                .await
                .map(|_| ())
                .map_err(|status| format!("{}: {}", status.code(), status.message()))
            }
            Self::Http(http) => {
                let HttpSender {
                    client,
                    uri,
                    headers,
                } = http.as_ref();
                let mut request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))
                    .map_err(|error| error.to_string())?;
                request.headers_mut().extend(headers.clone());
                let response = client
                    .request(request)
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status();
                // The body is read (a partial success says so) so the connection is kept.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
        }
    }
}

/// Sends an encoded request as it is; the answer (a partial success at most) is not read.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = IgnoredAnswer;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        IgnoredAnswer
    }
}

/// Sends bytes already encoded as a message, as they are.
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct IgnoredAnswer;

impl Decoder for IgnoredAnswer {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let left = src.remaining();
        src.advance(left);
        Ok(Some(()))
    }
}
