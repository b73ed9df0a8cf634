//! The form usage is kept in: each batch's records as one `sluice.usage.v1.UsageBatch`
//! encoding, the message proxies send. One row per batch instead of one per record is what
//! makes a commit cheap; protobuf's rules for adding fields keep every stored batch readable.
//! Batches are read in place ([`read_batch`]): a record's text borrows the encoding.

use prost::Message;
use sluice_proto::usage::v1 as pb;
use sluice_shared::request_metadata::{MetadataError, check_id, check_tags};

use crate::proto_fields::{Fields, Malformed};
use crate::store::{StoreError, StoreResult, UsageRecord, UsageSource};

/// The longest id a proxy may send (request, batch, key ids).
pub const MAX_ID: usize = 128;

/// A record that is not one Sluice can store, and why (naming the field).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUsage(String);

impl From<Malformed> for InvalidUsage {
    fn from(malformed: Malformed) -> Self {
        InvalidUsage(format!("batch: {malformed}"))
    }
}

/// A `UsageBatch` read in place.
#[derive(Debug)]
pub struct BatchView<'a> {
    pub batch_id: &'a str,
    pub first_delivery: bool,
    pub records: Vec<UsageRecord<&'a str>>,
    pub rejected_keys: Vec<RejectedKey<'a>>,
}

/// Reads and checks a `UsageBatch` of at most `max_records` records.
pub fn read_batch(encoded: &[u8], max_records: usize) -> Result<BatchView<'_>, InvalidUsage> {
    let mut batch = BatchView {
        batch_id: "",
        first_delivery: false,
        records: Vec::new(),
        rejected_keys: Vec::new(),
    };
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => batch.batch_id = value.text()?,
            2 => {
                if batch.records.len() == max_records {
                    return Err(InvalidUsage(format!(
                        "batch.records: at most {max_records} per batch"
                    )));
                }
                let (record, rejected) = read_record(value.bytes()?)?;
                batch.records.push(record);
                batch.rejected_keys.extend(rejected);
            }
            3 => batch.first_delivery = value.varint()? != 0,
            _ => {}
        }
    }
    Ok(batch)
}

/// A provider key the upstream refused in live traffic, and the status it answered.
type RejectedKey<'a> = (&'a str, u32);

/// One `UsageRecord`, checked, and the provider key it reports refused, if any.
fn read_record(
    encoded: &[u8],
) -> Result<(UsageRecord<&str>, Option<RejectedKey<'_>>), InvalidUsage> {
    let mut record = UsageRecord {
        request_id: "",
        started_at_us: 0,
        project_id: "",
        virtual_key_id: "",
        model: "",
        provider_id: "",
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        cost_micros: 0,
        latency_ms: 0,
        http_status: 0,
        source: UsageSource::Mock,
        run_id: "",
        task_id: "",
        tags: Vec::new(),
        lease_epoch: 0,
        attempts: 0,
    };
    let mut source = 0;
    let (mut rejected_key_id, mut upstream_status) = ("", 0);
    let count = |value: u64| {
        i64::try_from(value).map_err(|_| InvalidUsage("token count out of range".to_owned()))
    };
    let mut fields = Fields::new(encoded);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => record.request_id = value.text()?,
            2 => record.started_at_us = value.int64()?,
            3 => record.project_id = value.text()?,
            4 => record.virtual_key_id = value.text()?,
            5 => record.model = value.text()?,
            6 => record.provider_id = value.text()?,
            7 => record.input_tokens = count(value.varint()?)?,
            8 => record.output_tokens = count(value.varint()?)?,
            9 => record.cached_input_tokens = count(value.varint()?)?,
            10 => record.reasoning_tokens = count(value.varint()?)?,
            11 => record.cost_micros = value.int64()?,
            12 => record.latency_ms = i64::from(value.low32()?),
            13 => record.http_status = i64::from(value.low32()?),
            14 => source = value.low32()?,
            15 => record.run_id = value.text()?,
            16 => record.task_id = value.text()?,
            17 => record.tags.push(read_tag(value.bytes()?)?),
            18 => {
                record.lease_epoch = i64::try_from(value.varint()?)
                    .map_err(|_| InvalidUsage("records[].lease_epoch: out of range".to_owned()))?
            }
            19 => rejected_key_id = value.text()?,
            20 => upstream_status = value.low32()?,
            21 => record.attempts = i64::from(value.low32()?),
            _ => {}
        }
    }
    if record.request_id.is_empty() || record.request_id.len() > MAX_ID {
        return Err(InvalidUsage(
            "records[].request_id: is required, at most 128 bytes".to_owned(),
        ));
    }
    let metadata_invalid = |error: MetadataError| InvalidUsage(format!("records[]: {error}"));
    check_id("run_id", record.run_id).map_err(metadata_invalid)?;
    check_id("task_id", record.task_id).map_err(metadata_invalid)?;
    check_tags(record.tags.iter().copied()).map_err(metadata_invalid)?;
    record.source = match pb::UsageSource::try_from(source as i32) {
        Ok(pb::UsageSource::ProviderReported) => UsageSource::ProviderReported,
        Ok(pb::UsageSource::Estimated) => UsageSource::Estimated,
        Ok(pb::UsageSource::Mock) => UsageSource::Mock,
        _ => return Err(InvalidUsage("records[].source: is required".to_owned())),
    };
    let rejected = (!rejected_key_id.is_empty() && rejected_key_id.len() <= MAX_ID)
        .then_some((rejected_key_id, upstream_status));
    Ok((record, rejected))
}

fn read_tag(encoded: &[u8]) -> Result<(&str, &str), Malformed> {
    let (mut name, mut value) = ("", "");
    let mut fields = Fields::new(encoded);
    while let Some((number, field)) = fields.next_field()? {
        match number {
            1 => name = field.text()?,
            2 => value = field.text()?,
            _ => {}
        }
    }
    Ok((name, value))
}

fn to_wire<S: AsRef<str>>(record: &UsageRecord<S>) -> pb::UsageRecord {
    // Every count was checked non-negative on the way in; a negative one cannot have been stored.
    let count = |value: i64| u64::try_from(value).unwrap_or_default();
    let text = |s: &S| s.as_ref().to_owned();
    pb::UsageRecord {
        request_id: text(&record.request_id),
        started_at_us: record.started_at_us,
        project_id: text(&record.project_id),
        virtual_key_id: text(&record.virtual_key_id),
        model: text(&record.model),
        provider_id: text(&record.provider_id),
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
        run_id: text(&record.run_id),
        task_id: text(&record.task_id),
        tags: record
            .tags
            .iter()
            .map(|(name, value)| pb::UsageTag {
                name: text(name),
                value: text(value),
            })
            .collect(),
        lease_epoch: u64::try_from(record.lease_epoch).unwrap_or_default(),
        rejected_key_id: String::new(),
        upstream_status: 0,
        attempts: u32::try_from(record.attempts).unwrap_or(u32::MAX),
    }
}

/// The stored form of `records`.
pub fn encode<'r, S: AsRef<str> + 'r>(
    records: impl IntoIterator<Item = &'r UsageRecord<S>>,
) -> Vec<u8> {
    pb::UsageBatch {
        batch_id: String::new(),
        records: records.into_iter().map(to_wire).collect(),
        first_delivery: false,
    }
    .encode_to_vec()
}

/// The records of one stored batch, read in place.
pub fn decode_in_place(stored: &[u8]) -> StoreResult<Vec<UsageRecord<&str>>> {
    read_batch(stored, usize::MAX)
        .map(|batch| batch.records)
        .map_err(|error| StoreError::Corrupt(format!("a stored usage batch: {error}")))
}

/// The records of one stored batch.
pub fn decode(stored: &[u8]) -> StoreResult<Vec<UsageRecord>> {
    Ok(decode_in_place(stored)?
        .iter()
        .map(UsageRecord::to_owned_record)
        .collect())
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
                attempts: 0,
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
                attempts: 0,
            },
        ];
        assert_eq!(decode(&encode(&records)).unwrap(), records);
        assert!(matches!(decode(b"\xff\xff"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_proxy_batch_is_read_in_place_as_prost_reads_it() {
        let record = |id: &str, rejected: &str| pb::UsageRecord {
            request_id: id.into(),
            started_at_us: -1,
            project_id: "p".into(),
            virtual_key_id: "k".into(),
            model: "m".into(),
            provider_id: "pr".into(),
            input_tokens: 1,
            output_tokens: 2,
            cached_input_tokens: 3,
            reasoning_tokens: 4,
            cost_micros: -7,
            latency_ms: u32::MAX,
            http_status: 401,
            source: pb::UsageSource::Estimated as i32,
            run_id: "run".into(),
            task_id: "task".into(),
            tags: vec![pb::UsageTag {
                name: "team".into(),
                value: "a b".into(),
            }],
            lease_epoch: 9,
            attempts: 0,
            rejected_key_id: rejected.into(),
            upstream_status: 401,
        };
        let batch = pb::UsageBatch {
            batch_id: "b-1".into(),
            records: vec![record("r1", ""), record("r2", "key-1")],
            first_delivery: true,
        };
        let encoded = batch.encode_to_vec();
        let view = read_batch(&encoded, 2).unwrap();
        assert_eq!(view.batch_id, "b-1");
        assert!(view.first_delivery);
        assert_eq!(view.rejected_keys, vec![("key-1", 401)]);
        let r = &view.records[1];
        assert_eq!(
            (r.request_id, r.started_at_us, r.cost_micros, r.latency_ms),
            ("r2", -1, -7, i64::from(u32::MAX))
        );
        assert_eq!((r.source, r.lease_epoch), (UsageSource::Estimated, 9));
        assert_eq!(r.tags, vec![("team", "a b")]);
        // Stored and read back, a record is what it was.
        let owned: Vec<UsageRecord> = view.records.iter().map(|r| r.to_owned_record()).collect();
        assert_eq!(decode(&encode(&view.records)).unwrap(), owned);
        assert!(
            read_batch(&encoded, 1).is_err(),
            "more records than allowed"
        );
    }

    #[test]
    fn records_a_proxy_may_not_send_are_refused() {
        let valid = pb::UsageRecord {
            request_id: "r".into(),
            source: pb::UsageSource::Mock as i32,
            ..Default::default()
        };
        let refused = [
            pb::UsageRecord {
                request_id: String::new(),
                ..valid.clone()
            },
            pb::UsageRecord {
                source: 0,
                ..valid.clone()
            },
            pb::UsageRecord {
                input_tokens: u64::MAX,
                ..valid.clone()
            },
            pb::UsageRecord {
                lease_epoch: u64::MAX,
                attempts: 0,
                ..valid.clone()
            },
            pb::UsageRecord {
                run_id: "tab\there".into(),
                ..valid.clone()
            },
        ];
        let batch = |record: pb::UsageRecord| {
            pb::UsageBatch {
                batch_id: "b".into(),
                records: vec![record],
                first_delivery: false,
            }
            .encode_to_vec()
        };
        assert!(read_batch(&batch(valid), 10).is_ok());
        for record in refused {
            assert!(
                read_batch(&batch(record.clone()), 10).is_err(),
                "{record:?}"
            );
        }
    }
}
