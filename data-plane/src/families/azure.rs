//! Azure OpenAI: OpenAI's API under a deployment's own path
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=…`), the key in the
//! `api-key` header. The upstream model names the deployment.

use http::HeaderName;

use super::{Family, ProviderRecord, url_under};
use crate::families::CredentialHeader;
use crate::operation::Operation;

#[derive(Debug)]
pub struct AzureOpenAi;

impl Family for AzureOpenAi {
    fn credential(&self) -> CredentialHeader {
        CredentialHeader::Named(HeaderName::from_static("api-key"))
    }

    fn prepare(
        &self,
        record: &ProviderRecord<'_>,
        _extra_headers: &mut Vec<(HeaderName, http::HeaderValue)>,
    ) -> Result<(), String> {
        if record.api_version.is_empty() {
            return Err("Azure OpenAI needs an api_version".into());
        }
        Ok(())
    }

    fn url(
        &self,
        record: &ProviderRecord<'_>,
        upstream_model: &str,
        operation: Operation,
    ) -> Option<Result<http::Uri, String>> {
        let tail: &[&str] = match operation {
            Operation::ChatCompletions => &["chat", "completions"],
            Operation::Embeddings => &["embeddings"],
            _ => return None,
        };
        let mut segments = vec!["openai", "deployments", upstream_model];
        segments.extend(tail);
        Some(url_under(
            record.base_url,
            &segments,
            Some(("api-version", record.api_version)),
        ))
    }
}
