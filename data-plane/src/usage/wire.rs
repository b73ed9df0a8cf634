//! The usage stream's wire format, built by hand around batches encoded once.
//!
//! A batch is built from the records' spooled encodings and those bytes are what travels — and travel again
//! after a failure — so no record is cloned or re-encoded while it waits for its
//! acknowledgement. The bytes are exactly what prost would write for the same
//! `ReportUsageRequest`, so the control plane reads them with its generated code.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use sluice_proto::usage::v1 as pb;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

pub const REPORT_USAGE_PATH: &str = "/sluice.usage.v1.UsageService/ReportUsage";

/// A `UsageBatch`, encoded.
pub struct EncodedBatch {
    pub batch_id: String,
    pub records: usize,
    pub bytes: Bytes,
}

/// Builds a `UsageBatch` from records that are already encoded (as the spool holds them), so
/// no record is decoded or re-encoded on its way to the control plane.
pub struct BatchBuilder {
    batch_id: String,
    records: usize,
    bytes: BytesMut,
}

impl BatchBuilder {
    pub fn new(batch_id: String) -> Self {
        let mut bytes = BytesMut::with_capacity(64 * 1024);
        encode_key(1, WireType::LengthDelimited, &mut bytes);
        encode_varint(batch_id.len() as u64, &mut bytes);
        bytes.put_slice(batch_id.as_bytes());
        Self {
            batch_id,
            records: 0,
            bytes,
        }
    }

    /// Adds one encoded `UsageRecord` (field 2, repeated).
    pub fn push(&mut self, record: &[u8]) {
        encode_key(2, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(record.len() as u64, &mut self.bytes);
        self.bytes.put_slice(record);
        self.records += 1;
    }

    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// `first_delivery`: no record of the batch was ever sent before (field 3, left out when
    /// false, as prost does).
    pub fn finish(mut self, first_delivery: bool) -> EncodedBatch {
        if first_delivery {
            encode_key(3, WireType::Varint, &mut self.bytes);
            encode_varint(1, &mut self.bytes);
        }
        EncodedBatch {
            batch_id: self.batch_id,
            records: self.records,
            bytes: self.bytes.freeze(),
        }
    }
}

impl EncodedBatch {
    /// `ReportUsageRequest { proxy_id, batch }` on the wire: field 1 the proxy id, field 2 this
    /// batch as an embedded message.
    pub fn report_request(&self, proxy_id: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(self.bytes.len() + proxy_id.len() + 16);
        // proto3 leaves an empty string out, as prost does.
        if !proxy_id.is_empty() {
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(proxy_id.len() as u64, &mut out);
            out.put_slice(proxy_id.as_bytes());
        }
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(self.bytes.len() as u64, &mut out);
        out.put_slice(&self.bytes);
        out.freeze()
    }
}

/// Sends pre-encoded requests as they are; reads acknowledgements with prost.
#[derive(Default)]
pub struct UsageCodec;

impl Codec for UsageCodec {
    type Encode = Bytes;
    type Decode = pb::ReportUsageResponse;
    type Encoder = sluice_otlp::export::RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        sluice_otlp::export::RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AckDecoder
    }
}

pub struct AckDecoder;

impl Decoder for AckDecoder {
    type Item = pb::ReportUsageResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::ReportUsageResponse::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("malformed usage acknowledgement: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_requests_are_what_prost_would_write() {
        let records = vec![
            pb::UsageRecord {
                request_id: "r1".into(),
                model: "m".into(),
                input_tokens: 12,
                ..Default::default()
            },
            pb::UsageRecord {
                request_id: "r2".into(),
                cost_micros: 7,
                ..Default::default()
            },
            pb::UsageRecord::default(),
        ];
        for first_delivery in [true, false] {
            let mut builder = BatchBuilder::new("b1".into());
            for record in &records {
                builder.push(&record.encode_to_vec());
            }
            let batch = builder.finish(first_delivery);
            assert_eq!(batch.records, 3);
            let expected = pb::ReportUsageRequest {
                proxy_id: "proxy-a".into(),
                batch: Some(pb::UsageBatch {
                    batch_id: "b1".into(),
                    records: records.clone(),
                    first_delivery,
                }),
            };
            assert_eq!(batch.report_request("proxy-a"), expected.encode_to_vec());
            assert_eq!(
                pb::ReportUsageRequest::decode(batch.report_request("proxy-a")).unwrap(),
                expected
            );
        }
    }
}
