//! Reads a request's `x-sluice-run-id`, `x-sluice-task-id` and `x-sluice-tag-*` headers into
//! the fields of its usage record, within the bounds both halves share, and the total timeout
//! it asks for (`x-sluice-timeout-ms`, which can only shorten its deployment's). A request
//! breaking a bound is refused (400) rather than stored cut short. These headers never travel
//! upstream: the upstream receives only allowlisted headers.

use std::time::Duration;

use http::HeaderMap;
use sluice_proto::usage::v1 as pb;
use sluice_shared::error_code::ErrorCode;
use sluice_shared::request_metadata::{
    MAX_TAGS, RUN_ID_HEADER, TAG_HEADER_PREFIX, TASK_ID_HEADER, check_id, check_tags,
};

use crate::error_response::GatewayError;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestMetadata {
    pub run_id: String,
    pub task_id: String,
    pub tags: Vec<pb::UsageTag>,
    /// The shortest total the request asked for.
    pub timeout: Option<Duration>,
}

const SLUICE_PREFIX: &str = "x-sluice-";
const TIMEOUT_HEADER: &str = "x-sluice-timeout-ms";

pub fn read(headers: &HeaderMap) -> Result<RequestMetadata, GatewayError> {
    let mut metadata = RequestMetadata::default();
    for (name, value) in headers {
        let name = name.as_str();
        // The common case: no Sluice headers at all, one prefix test per header.
        if !name.starts_with(SLUICE_PREFIX) {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| invalid(name, "is not printable ASCII"))?;
        if name == RUN_ID_HEADER {
            set_once(&mut metadata.run_id, name, value)?;
        } else if name == TASK_ID_HEADER {
            set_once(&mut metadata.task_id, name, value)?;
        } else if name == TIMEOUT_HEADER {
            let asked = value
                .parse::<u32>()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| invalid(name, "is not a whole number of milliseconds above 0"))?;
            if metadata.timeout.is_some() {
                return Err(invalid(name, "is given twice"));
            }
            metadata.timeout = Some(Duration::from_millis(u64::from(asked)));
        } else if let Some(tag) = name.strip_prefix(TAG_HEADER_PREFIX) {
            if metadata.tags.len() > MAX_TAGS {
                break;
            }
            metadata.tags.push(pb::UsageTag {
                name: tag.to_owned(),
                value: value.to_owned(),
            });
        }
    }
    check_id("x-sluice-run-id", &metadata.run_id)
        .and_then(|()| check_id("x-sluice-task-id", &metadata.task_id))
        .and_then(|()| {
            check_tags(
                metadata
                    .tags
                    .iter()
                    .map(|t| (t.name.as_str(), t.value.as_str())),
            )
        })
        .map_err(|error| GatewayError::new(ErrorCode::InvalidRequest, error.to_string()))?;
    Ok(metadata)
}

fn set_once(field: &mut String, name: &str, value: &str) -> Result<(), GatewayError> {
    if !field.is_empty() {
        return Err(invalid(name, "is given twice"));
    }
    *field = value.to_owned();
    Ok(())
}

fn invalid(name: &str, problem: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::InvalidRequest,
        format!("header {name} {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn reads_ids_and_tags_and_ignores_the_rest() {
        let metadata = read(&headers(&[
            ("authorization", "Bearer x"),
            ("x-sluice-run-id", "run-42"),
            ("x-sluice-task-id", "task-7"),
            ("x-sluice-tag-team", "search"),
            ("X-Sluice-Tag-Env", "prod"),
            ("x-sluice-other", "ignored"),
            ("x-sluice-timeout-ms", "1500"),
        ]))
        .unwrap();
        assert_eq!(metadata.timeout, Some(Duration::from_millis(1_500)));
        assert_eq!(metadata.run_id, "run-42");
        assert_eq!(metadata.task_id, "task-7");
        let tags: Vec<(&str, &str)> = metadata
            .tags
            .iter()
            .map(|t| (t.name.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(tags, [("team", "search"), ("env", "prod")]);
        assert_eq!(read(&headers(&[])).unwrap(), RequestMetadata::default());
    }

    #[test]
    fn bounds_are_refused_with_the_header_named() {
        let long = "r".repeat(200);
        for (pairs, needle) in [
            (vec![("x-sluice-run-id", long.as_str())], "x-sluice-run-id"),
            (
                vec![("x-sluice-task-id", "a"), ("x-sluice-task-id", "b")],
                "given twice",
            ),
            (
                vec![("x-sluice-tag-team", "a"), ("x-sluice-tag-team", "b")],
                "twice",
            ),
            (vec![("x-sluice-timeout-ms", "0")], "x-sluice-timeout-ms"),
            (vec![("x-sluice-timeout-ms", "1.5s")], "milliseconds"),
            (vec![("x-sluice-timeout-ms", "-4")], "milliseconds"),
            (
                vec![("x-sluice-timeout-ms", "9"), ("x-sluice-timeout-ms", "9")],
                "twice",
            ),
        ] {
            let error = read(&headers(&pairs)).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains(needle), "{}", error.message);
        }
        let many: Vec<(String, &str)> = (0..40)
            .map(|i| (format!("x-sluice-tag-t{i}"), "v"))
            .collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert!(
            read(&headers(&pairs))
                .unwrap_err()
                .message
                .contains("at most 16")
        );
    }
}
