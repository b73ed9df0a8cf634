//! Google Gemini: `{base}/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse` (the model in the URL, never the body), the key in
//! `x-goog-api-key`. `/v1/chat/completions` reaches it translated ([`translate`]); its answers
//! metered by [`usage`].

pub mod translate;
pub mod usage;

use sluice_shared::families as facts;

use super::{Family, ProviderRecord, url_under};
use crate::families::translation::ChatTranslation;
use crate::operation::Operation;

#[derive(Debug)]
pub struct Gemini;

impl Family for Gemini {
    fn facts(&self) -> facts::Family {
        facts::Family::Gemini
    }

    fn url(
        &self,
        record: &ProviderRecord<'_>,
        upstream_model: &str,
        operation: Operation,
    ) -> Option<Result<http::Uri, String>> {
        let (method, query) = match operation {
            Operation::GenerateContent => ("generateContent", None),
            // Server-sent events rather than Gemini's default JSON array.
            Operation::StreamGenerateContent => ("streamGenerateContent", Some(("alt", "sse"))),
            _ => return None,
        };
        let last = format!("{upstream_model}:{method}");
        Some(url_under(
            record.base_url,
            &["v1beta", "models", &last],
            query,
        ))
    }

    fn chat_translation(&self) -> Option<&'static dyn ChatTranslation> {
        Some(&Gemini)
    }

    /// Google sends no `Retry-After`: its 429 says the wait in a `RetryInfo` detail.
    fn rate_limit_wait_in_body(&self) -> Option<super::WaitInBody> {
        Some(crate::resilience::retry_after::google_retry_delay)
    }
}
