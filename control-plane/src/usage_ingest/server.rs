//! The usage service, served without the generated server so that a `ReportUsageRequest`'s
//! batch arrives as the bytes the proxy sent. The contract is the generated one: same path,
//! same messages on the wire, same limits (4 MiB a message); only the reading differs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use sluice_proto::usage::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};

use super::{UsageIngest, ingest};
use crate::proto_fields::{Fields, Malformed};
use crate::store::Store;

const REPORT_USAGE: &str = "/sluice.usage.v1.UsageService/ReportUsage";

/// A `ReportUsageRequest` with its batch (a `UsageBatch`) still encoded.
#[derive(Debug)]
pub struct RawReport {
    pub proxy_id: String,
    pub batch: Option<Bytes>,
}

impl RawReport {
    fn read(message: Bytes) -> Result<Self, Malformed> {
        let mut proxy_id = "";
        let mut batch = None;
        let mut fields = Fields::new(&message);
        while let Some((number, value)) = fields.next_field()? {
            match number {
                1 => proxy_id = value.text()?,
                2 => batch = Some(value.bytes()?),
                _ => {}
            }
        }
        Ok(Self {
            proxy_id: proxy_id.to_owned(),
            batch: batch.map(|batch| message.slice_ref(batch)),
        })
    }
}

/// Reads requests as [`RawReport`]s; writes acknowledgements with prost.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReportCodec;

impl Codec for ReportCodec {
    type Encode = pb::ReportUsageResponse;
    type Decode = RawReport;
    type Encoder = AckEncoder;
    type Decoder = ReportDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> ReportDecoder {
        ReportDecoder
    }
}

pub struct AckEncoder;

impl Encoder for AckEncoder {
    type Item = pb::ReportUsageResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

pub struct ReportDecoder;

impl Decoder for ReportDecoder {
    type Item = RawReport;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawReport>, Status> {
        // The buffer holds exactly one message; taking it is a split, not a copy.
        let message = src.copy_to_bytes(src.remaining());
        RawReport::read(message)
            .map(Some)
            .map_err(|malformed| Status::invalid_argument(malformed.to_string()))
    }
}

/// `sluice.usage.v1.UsageService` over the usage ingest.
pub struct UsageServer<S> {
    ingest: Arc<UsageIngest<S>>,
}

impl<S> UsageServer<S> {
    pub fn new(ingest: UsageIngest<S>) -> Self {
        Self {
            ingest: Arc::new(ingest),
        }
    }
}

impl<S> Clone for UsageServer<S> {
    fn clone(&self) -> Self {
        Self {
            ingest: self.ingest.clone(),
        }
    }
}

impl<S> NamedService for UsageServer<S> {
    const NAME: &'static str = "sluice.usage.v1.UsageService";
}

impl<S: Store> tower::Service<http::Request<Body>> for UsageServer<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            if request.uri().path() != REPORT_USAGE {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            Ok(Grpc::new(ReportCodec)
                .streaming(ReportUsage(ingest), request)
                .await)
        })
    }
}

/// `ReportUsage`: every batch of the stream committed in turn, each answered once committed.
struct ReportUsage<S>(Arc<UsageIngest<S>>);

impl<S: Store> StreamingService<RawReport> for ReportUsage<S> {
    type Response = pb::ReportUsageResponse;
    type ResponseStream = ReceiverStream<Result<pb::ReportUsageResponse, Status>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<RawReport>>) -> Self::Future {
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let service = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(report)) = inbound.message().await {
                let response = ingest(service.store.as_ref(), &service.metrics, report).await;
                if sender.send(response).await.is_err() {
                    break;
                }
            }
        });
        std::future::ready(Ok(tonic::Response::new(ReceiverStream::new(receiver))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_keeps_its_batch_as_sent() {
        let batch = pb::UsageBatch {
            batch_id: "b-1".into(),
            records: vec![pb::UsageRecord {
                request_id: "r".into(),
                ..Default::default()
            }],
            first_delivery: true,
        };
        let request = pb::ReportUsageRequest {
            proxy_id: "proxy-a".into(),
            batch: Some(batch.clone()),
        };
        let report = RawReport::read(request.encode_to_vec().into()).unwrap();
        assert_eq!(report.proxy_id, "proxy-a");
        assert_eq!(report.batch.unwrap(), batch.encode_to_vec());
        let empty = RawReport::read(Bytes::new()).unwrap();
        assert!(empty.batch.is_none() && empty.proxy_id.is_empty());
        assert!(RawReport::read(Bytes::from_static(b"\x0a\x09short")).is_err());
    }
}
