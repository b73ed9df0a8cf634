//! Anthropic: the Messages API at `{base}/v1/messages`, the key in `x-api-key`, every request
//! with `anthropic-version`. `/v1/chat/completions` reaches it translated ([`translate`],
//! streams in [`stream`]).

pub mod stream;
pub mod translate;

use http::{HeaderName, HeaderValue};

use super::{Family, ProviderRecord, url_under};
use crate::families::CredentialHeader;
use crate::operation::Operation;
use crate::translation::ChatTranslation;

/// The Messages API version sent unless the provider names another (its `api_version`) or
/// sets the header itself.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic;

impl Family for Anthropic {
    fn credential(&self) -> CredentialHeader {
        CredentialHeader::Named(HeaderName::from_static("x-api-key"))
    }

    fn prepare(
        &self,
        record: &ProviderRecord<'_>,
        extra_headers: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Result<(), String> {
        if extra_headers
            .iter()
            .any(|(name, _)| name.as_str() == "anthropic-version")
        {
            return Ok(());
        }
        let version = if record.api_version.is_empty() {
            ANTHROPIC_VERSION
        } else {
            record.api_version
        };
        let value = HeaderValue::from_str(version).map_err(|_| "bad api_version".to_owned())?;
        extra_headers.push((HeaderName::from_static("anthropic-version"), value));
        Ok(())
    }

    fn url(
        &self,
        record: &ProviderRecord<'_>,
        _upstream_model: &str,
        operation: Operation,
    ) -> Option<Result<http::Uri, String>> {
        (operation == Operation::Messages)
            .then(|| url_under(record.base_url, &["v1", "messages"], None))
    }

    fn chat_translation(&self) -> Option<&'static dyn ChatTranslation> {
        Some(&Anthropic)
    }
}
