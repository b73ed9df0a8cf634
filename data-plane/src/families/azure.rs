//! Azure OpenAI: OpenAI's API under a deployment's own path
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=…`), the key in the
//! `api-key` header. The upstream model names the deployment.

use sluice_shared::families as facts;

use super::{Family, ProviderRecord, url_under};
use crate::operation::Operation;

#[derive(Debug)]
pub struct AzureOpenAi;

impl Family for AzureOpenAi {
    fn facts(&self) -> facts::Family {
        facts::Family::AzureOpenAi
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
            facts::Family::AzureOpenAi
                .version_query()
                .map(|name| (name, record.api_version)),
        ))
    }
}
