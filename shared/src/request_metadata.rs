//! Request metadata an application attaches to a call so that an operator can find every call
//! of one run: `x-sluice-run-id`, `x-sluice-task-id` and free tags `x-sluice-tag-<name>`. The
//! proxy checks requests against these bounds and the control plane checks usage records
//! against them again, so both halves agree on what is valid.

pub const RUN_ID_HEADER: &str = "x-sluice-run-id";
pub const TASK_ID_HEADER: &str = "x-sluice-task-id";
pub const TAG_HEADER_PREFIX: &str = "x-sluice-tag-";

pub const MAX_ID_BYTES: usize = 128;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_NAME_BYTES: usize = 64;
pub const MAX_TAG_VALUE_BYTES: usize = 256;

/// Why a piece of metadata was refused; the message names the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("{field}: at most {max} bytes of printable ASCII")]
    BadId { field: &'static str, max: usize },
    #[error("at most {MAX_TAGS} x-sluice-tag-* headers")]
    TooManyTags,
    #[error("tag name '{0}': 1 to {MAX_TAG_NAME_BYTES} characters of a-z, 0-9, '-', '_' or '.'")]
    BadTagName(String),
    #[error("tag '{0}': the value must be at most {MAX_TAG_VALUE_BYTES} bytes of printable ASCII")]
    BadTagValue(String),
    #[error("tag '{0}' is given twice")]
    RepeatedTag(String),
}

fn printable(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A run or task id: empty (absent) or printable ASCII within [`MAX_ID_BYTES`].
pub fn check_id(field: &'static str, value: &str) -> Result<(), MetadataError> {
    if value.len() > MAX_ID_BYTES || !printable(value) {
        return Err(MetadataError::BadId {
            field,
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

pub fn check_tag(name: &str, value: &str) -> Result<(), MetadataError> {
    let name_ok = !name.is_empty()
        && name.len() <= MAX_TAG_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !name_ok {
        return Err(MetadataError::BadTagName(name.chars().take(80).collect()));
    }
    if value.len() > MAX_TAG_VALUE_BYTES || !printable(value) {
        return Err(MetadataError::BadTagValue(name.to_owned()));
    }
    Ok(())
}

/// A whole set of tags: each valid, at most [`MAX_TAGS`], no name twice.
pub fn check_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), MetadataError> {
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in tags {
        check_tag(name, value)?;
        if seen.contains(&name) {
            return Err(MetadataError::RepeatedTag(name.to_owned()));
        }
        if seen.len() == MAX_TAGS {
            return Err(MetadataError::TooManyTags);
        }
        seen.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold() {
        assert!(check_id("run_id", "").is_ok());
        assert!(check_id("run_id", &"r".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check_id("run_id", &"r".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(check_id("run_id", "tab\there").is_err());
        assert!(check_tags([("team", "search"), ("env", "prod")]).is_ok());
        assert_eq!(
            check_tags([("team", "a"), ("team", "b")]),
            Err(MetadataError::RepeatedTag("team".into()))
        );
        assert!(check_tag("Team", "x").is_err());
        assert!(check_tag("", "x").is_err());
        assert!(check_tag("team", &"v".repeat(MAX_TAG_VALUE_BYTES + 1)).is_err());
        let names: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            check_tags(names.iter().map(|n| (n.as_str(), "v"))),
            Err(MetadataError::TooManyTags)
        );
    }
}
