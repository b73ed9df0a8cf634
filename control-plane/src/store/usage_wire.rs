//! The form usage is kept in: each batch's records as one `sluice.usage.v1.UsageBatch`
//! encoding, the message proxies send. One row per batch instead of one per record is what
//! makes a commit cheap; protobuf's rules for adding fields keep every stored batch readable.

use prost::Message;
use sluice_proto::usage::v1 as pb;
use sluice_shared::request_metadata::{MetadataError, check_id, check_tags};

use crate::store::{StoreError, StoreResult, UsageRecord, UsageSource};

/// The longest id a proxy may send (request, batch, key ids).
pub const MAX_ID: usize = 128;

/// A record that is not one Sluice can store, and why (naming the field).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUsage(String);

/// Checks a record as a proxy sent it and takes its values.
pub fn from_wire(r: pb::UsageRecord) -> Result<UsageRecord, InvalidUsage> {
    if r.request_id.is_empty() || r.request_id.len() > MAX_ID {
        return Err(InvalidUsage(
            "records[].request_id: is required, at most 128 bytes".to_owned(),
        ));
    }
    let metadata_invalid = |error: MetadataError| InvalidUsage(format!("records[]: {error}"));
    check_id("run_id", &r.run_id).map_err(metadata_invalid)?;
    check_id("task_id", &r.task_id).map_err(metadata_invalid)?;
    check_tags(r.tags.iter().map(|t| (t.name.as_str(), t.value.as_str())))
        .map_err(metadata_invalid)?;
    let count = |value: u64| {
        i64::try_from(value).map_err(|_| InvalidUsage("token count out of range".to_owned()))
    };
    Ok(UsageRecord {
        request_id: r.request_id,
        started_at_us: r.started_at_us,
        project_id: r.project_id,
        virtual_key_id: r.virtual_key_id,
        model: r.model,
        provider_id: r.provider_id,
        input_tokens: count(r.input_tokens)?,
        output_tokens: count(r.output_tokens)?,
        cached_input_tokens: count(r.cached_input_tokens)?,
        reasoning_tokens: count(r.reasoning_tokens)?,
        cost_micros: r.cost_micros,
        latency_ms: i64::from(r.latency_ms),
        http_status: i64::from(r.http_status),
        source: match pb::UsageSource::try_from(r.source) {
            Ok(pb::UsageSource::ProviderReported) => UsageSource::ProviderReported,
            Ok(pb::UsageSource::Estimated) => UsageSource::Estimated,
            Ok(pb::UsageSource::Mock) => UsageSource::Mock,
            _ => return Err(InvalidUsage("records[].source: is required".to_owned())),
        },
        run_id: r.run_id,
        task_id: r.task_id,
        tags: r.tags.into_iter().map(|t| (t.name, t.value)).collect(),
        lease_epoch: i64::try_from(r.lease_epoch)
            .map_err(|_| InvalidUsage("records[].lease_epoch: out of range".to_owned()))?,
    })
}

fn to_wire(record: &UsageRecord) -> pb::UsageRecord {
    // Every count was checked non-negative on the way in; a negative one cannot have been stored.
    let count = |value: i64| u64::try_from(value).unwrap_or_default();
    pb::UsageRecord {
        request_id: record.request_id.clone(),
        started_at_us: record.started_at_us,
        project_id: record.project_id.clone(),
        virtual_key_id: record.virtual_key_id.clone(),
        model: record.model.clone(),
        provider_id: record.provider_id.clone(),
        input_tokens: count(record.input_tokens),
        output_tokens: count(record.output_tokens),
        cached_input_tokens: count(record.cached_input_tokens),
        reasoning_tokens: count(record.reasoning_tokens),
        cost_micros: record.cost_micros,
        latency_ms: u32::try_from(record.latency_ms).unwrap_or(u32::MAX),
        http_status: u32::try_from(record.http_status).unwrap_or_default(),
        source: match record.source {
            UsageSource::ProviderReported => pb::UsageSource::ProviderReported,
            UsageSource::Estimated => pb::UsageSource::Estimated,
            UsageSource::Mock => pb::UsageSource::Mock,
        } as i32,
        run_id: record.run_id.clone(),
        task_id: record.task_id.clone(),
        tags: record
            .tags
            .iter()
            .map(|(name, value)| pb::UsageTag {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        lease_epoch: u64::try_from(record.lease_epoch).unwrap_or_default(),
        rejected_key_id: String::new(),
        upstream_status: 0,
    }
}

/// The stored form of `records`.
pub fn encode<'r>(records: impl IntoIterator<Item = &'r UsageRecord>) -> Vec<u8> {
    pb::UsageBatch {
        batch_id: String::new(),
        records: records.into_iter().map(to_wire).collect(),
        first_delivery: false,
    }
    .encode_to_vec()
}

/// The records of one stored batch.
pub fn decode(stored: &[u8]) -> StoreResult<Vec<UsageRecord>> {
    let batch = pb::UsageBatch::decode(stored)
        .map_err(|error| StoreError::Corrupt(format!("a stored usage batch: {error}")))?;
    batch
        .records
        .into_iter()
        .map(|record| {
            from_wire(record)
                .map_err(|error| StoreError::Corrupt(format!("a stored usage record: {error}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_it_was_stored() {
        let records = vec![
            UsageRecord {
                request_id: "r1".into(),
                started_at_us: 1_764_000_000_000_000,
                project_id: "p".into(),
                virtual_key_id: "k".into(),
                model: "gpt-4o".into(),
                provider_id: "pr".into(),
                input_tokens: 12,
                output_tokens: 34,
                cached_input_tokens: 5,
                reasoning_tokens: 6,
                cost_micros: 789,
                latency_ms: 120,
                http_status: 200,
                source: UsageSource::ProviderReported,
                run_id: "run".into(),
                task_id: "task".into(),
                tags: vec![("team".into(), "search".into())],
                lease_epoch: 42,
            },
            UsageRecord {
                request_id: "r2".into(),
                started_at_us: 0,
                project_id: String::new(),
                virtual_key_id: String::new(),
                model: String::new(),
                provider_id: String::new(),
                input_tokens: 0,
                output_tokens: 0,
                cached_input_tokens: 0,
                reasoning_tokens: 0,
                cost_micros: -3,
                latency_ms: 0,
                http_status: 502,
                source: UsageSource::Mock,
                run_id: String::new(),
                task_id: String::new(),
                tags: Vec::new(),
                lease_epoch: 0,
            },
        ];
        assert_eq!(decode(&encode(&records)).unwrap(), records);
        assert!(matches!(decode(b"\xff\xff"), Err(StoreError::Corrupt(_))));
    }
}
