//! What both binaries' settings loaders share: one error type that names the offending key,
//! a strict TOML file reader, value parsers, and the collection of prefixed environment
//! variables that refuses unknown ones. The environment is passed in as pairs, so tests never
//! touch the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("unknown setting {key}; known settings: {known}")]
    UnknownVariable { key: String, known: String },
    #[error("setting {key}: {message}")]
    Invalid { key: String, message: String },
}

pub fn invalid(key: &str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Parses a value, naming `key` if it does not parse.
pub fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, SettingsError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, format!("cannot parse '{value}'")))
}

pub fn parse_bool(key: &str, value: &str) -> Result<bool, SettingsError> {
    match value.trim() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(key, format!("'{value}' is not true or false"))),
    }
}

/// Reads a TOML file into `T`; use `#[serde(deny_unknown_fields)]` on `T` so a misspelled key
/// is an error, not a silent default.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| SettingsError::File {
        path: path.to_owned(),
        message: error.message().to_owned(),
    })
}

/// The variables starting with `prefix`, minus those `ignored`; any other one not in `known`
/// is refused, naming it.
pub fn prefixed_variables(
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
    known: &[&str],
    ignored: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut variables = BTreeMap::new();
    for (key, value) in env {
        if !key.starts_with(prefix) || ignored(&key) {
            continue;
        }
        if !known.contains(&key.as_str()) {
            return Err(SettingsError::UnknownVariable {
                key,
                known: known.join(", "),
            });
        }
        variables.insert(key, value);
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_are_named_and_ignored_ones_pass() {
        let env = vec![
            ("APP_A".to_owned(), "1".to_owned()),
            ("APP_OTHER_X".to_owned(), "2".to_owned()),
        ];
        let found = prefixed_variables(env.clone(), "APP_", &["APP_A"], |k| {
            k.starts_with("APP_OTHER_")
        })
        .unwrap();
        assert_eq!(found.get("APP_A").map(String::as_str), Some("1"));
        let error = prefixed_variables(env, "APP_", &["APP_A"], |_| false).unwrap_err();
        assert!(error.to_string().contains("APP_OTHER_X"));
    }

    #[test]
    fn values_name_their_key() {
        assert_eq!(parse::<u16>("PORT", " 80 ").unwrap(), 80);
        assert!(
            parse::<u16>("PORT", "eighty")
                .unwrap_err()
                .to_string()
                .contains("PORT")
        );
        assert!(
            parse_bool("FLAG", "maybe")
                .unwrap_err()
                .to_string()
                .contains("FLAG")
        );
        assert!(parse_bool("FLAG", "yes").unwrap());
    }
}
