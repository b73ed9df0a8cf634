//! OpenAI, and the servers that speak its API (vLLM, custom upstreams): chat completions and
//! embeddings under the base URL (which carries any path prefix), the key as a Bearer token.

use super::{Family, ProviderRecord, url_under};
use crate::families::CredentialHeader;
use crate::operation::Operation;

#[derive(Debug)]
pub struct OpenAiCompatible {
    /// OpenAI itself also serves the Responses API.
    responses: bool,
    /// Self-hosted servers may need no key.
    keyless: bool,
}

pub static OPENAI: OpenAiCompatible = OpenAiCompatible {
    responses: true,
    keyless: false,
};

pub static SELF_HOSTED: OpenAiCompatible = OpenAiCompatible {
    responses: false,
    keyless: true,
};

impl Family for OpenAiCompatible {
    fn credential(&self) -> CredentialHeader {
        CredentialHeader::Bearer
    }

    fn keyless(&self) -> bool {
        self.keyless
    }

    fn url(
        &self,
        record: &ProviderRecord<'_>,
        _upstream_model: &str,
        operation: Operation,
    ) -> Option<Result<http::Uri, String>> {
        let segments: &[&str] = match operation {
            Operation::ChatCompletions => &["chat", "completions"],
            Operation::Embeddings => &["embeddings"],
            Operation::Responses if self.responses => &["responses"],
            _ => return None,
        };
        Some(url_under(record.base_url, segments, None))
    }
}
