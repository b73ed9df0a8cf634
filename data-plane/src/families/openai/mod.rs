//! OpenAI, and the servers that speak its API (vLLM, custom upstreams): chat completions and
//! embeddings under the base URL (which carries any path prefix), the key as a Bearer token;
//! its answers metered by [`usage`].

pub mod usage;

use sluice_shared::families as facts;

use super::{Family, ProviderRecord, url_under};
use crate::operation::Operation;

#[derive(Debug)]
pub struct OpenAiCompatible {
    /// OpenAI itself (which also serves the Responses API), or a self-hosted server (which may
    /// need no key).
    facts: facts::Family,
}

pub static OPENAI: OpenAiCompatible = OpenAiCompatible {
    facts: facts::Family::OpenAi,
};

pub static SELF_HOSTED: OpenAiCompatible = OpenAiCompatible {
    facts: facts::Family::SelfHosted,
};

impl Family for OpenAiCompatible {
    fn facts(&self) -> facts::Family {
        self.facts
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
            Operation::Responses if self.facts == facts::Family::OpenAi => &["responses"],
            _ => return None,
        };
        Some(url_under(record.base_url, segments, None))
    }
}
