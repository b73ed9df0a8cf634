//! The exporter: a thread of its own takes finished traces off the queue — when a batch has
//! gathered, or every `OTEL_BSP_SCHEDULE_DELAY` — encodes them as one OTLP request and sends
//! it over gRPC or HTTP/protobuf, waiting at most the export timeout. A failed export drops
//! its spans and counts them; nothing is retried into a backlog, and nothing on the request
//! path ever waits for the collector.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use sluice_shared::otel_settings::{OtlpProtocol, TraceExport};
use tonic::codec::{Codec, DecodeBuf, Decoder};

use crate::telemetry::Telemetry;
use crate::telemetry::otlp::TraceRequest;
use crate::telemetry::render;
use crate::usage::wire::RawEncoder;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Exports in flight at once: a collector's round trip does not hold up the next batch.
const MAX_IN_FLIGHT: usize = 4;

/// Starts the exporter thread; it runs until `stop` is set and the queue is empty.
pub fn spawn(telemetry: Arc<Telemetry>, export: TraceExport) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sender = {
        let _entered = runtime.enter();
        Arc::new(Sender::new(&export)?)
    };
    std::thread::Builder::new()
        .name("sluice-otel".to_owned())
        .spawn(move || runtime.block_on(run(telemetry, &export, sender)))?;
    Ok(())
}

async fn run(telemetry: Arc<Telemetry>, export: &TraceExport, sender: Arc<Sender>) {
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
            while taken < telemetry.batch_traces {
                let Some(trace) = telemetry.queue.pop() else {
                    break;
                };
                render::write(&trace, &mut request);
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            let spans = request.spans as u64;
            let body = Bytes::from(request.finish());
            let (sender, timeout) = (Arc::clone(&sender), export.timeout);
            let counted = Arc::clone(&telemetry);
            in_flight.spawn(async move {
                let sent = tokio::time::timeout(timeout, sender.send(body))
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                count(&counted, spans, sent);
            });
            if taken < telemetry.batch_traces {
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
fn count(telemetry: &Telemetry, spans: u64, sent: Result<(), String>) {
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
enum Sender {
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
    },
    Http(Box<HttpSender>),
}

struct HttpSender {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl Sender {
    fn new(export: &TraceExport) -> std::io::Result<Self> {
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
                Ok(Self::Grpc { channel, metadata })
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
    async fn send(&self, body: Bytes) -> Result<(), String> {
        match self {
            Self::Grpc { channel, metadata } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|error| error.to_string())?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                grpc.unary(
                    request,
                    http::uri::PathAndQuery::from_static(EXPORT_PATH),
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
