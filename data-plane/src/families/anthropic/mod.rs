//! Anthropic: the Messages API at `{base}/v1/messages`, the key in `x-api-key`, every request
//! with `anthropic-version`. `/v1/chat/completions` reaches it translated ([`translate`],
//! streams in [`stream`]); its answers metered by [`usage`].

pub mod stream;
pub mod translate;
pub mod usage;

use sluice_shared::families as facts;

use super::{Family, ProviderRecord, url_under};
use crate::families::translation::ChatTranslation;
use crate::operation::Operation;

#[derive(Debug)]
pub struct Anthropic;

impl Family for Anthropic {
    fn facts(&self) -> facts::Family {
        facts::Family::Anthropic
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
