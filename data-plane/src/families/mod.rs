//! Provider families, one module each behind [`Family`]: how a family is reached (its URLs,
//! how the key travels, headers it requires) and what it serves. Snapshots are turned into
//! tables through this trait, and the request path asks a deployment for an operation's URL or
//! a provider for its chat translation; nothing outside these modules matches on a family.

pub mod anthropic;
pub mod azure;
pub mod gemini;
pub mod openai;
pub mod translation;

use std::fmt;

use http::{HeaderName, HeaderValue};

use sluice_shared::families as facts;

use crate::answers::UsageReader;
use crate::families::translation::ChatTranslation;
use crate::operation::Operation;

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    OpenAi,
    Anthropic,
    Google,
    AzureOpenAi,
    Vllm,
    Custom,
}

impl ProviderType {
    /// `gen_ai.provider.name` of the GenAI semantic conventions (their well-known values; a
    /// vLLM or custom provider is named as such).
    pub fn gen_ai_provider_name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "gcp.gemini",
            Self::AzureOpenAi => "azure.ai.openai",
            Self::Vllm => "vllm",
            Self::Custom => "custom",
        }
    }
}

/// How a provider key travels to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialHeader {
    /// `Authorization: Bearer <key>` (OpenAI, vLLM, custom).
    Bearer,
    /// The key as the whole value of a named header (`api-key` for Azure OpenAI).
    Named(HeaderName),
}

/// What a provider record says about reaching its upstream.
pub struct ProviderRecord<'a> {
    /// The base URL, without a trailing slash.
    pub base_url: &'a str,
    pub api_version: &'a str,
}

pub trait Family: Sync + fmt::Debug {
    /// What both halves know about this family (`sluice_shared::families`): the control
    /// plane's key check reaches the upstream by the same facts.
    fn facts(&self) -> facts::Family;

    /// How the provider key travels upstream.
    fn credential(&self) -> CredentialHeader {
        match self.facts().credential() {
            facts::Credential::Bearer => CredentialHeader::Bearer,
            facts::Credential::Header(name) => {
                CredentialHeader::Named(HeaderName::from_static(name))
            }
        }
    }

    /// Whether a provider of this family may run without a key (self-hosted servers).
    fn keyless(&self) -> bool {
        self.facts().keyless()
    }

    /// Checks the record and adds the headers the family requires unless the operator set
    /// them (its version header: the provider's `api_version`, else the family's default);
    /// the error says what is wrong.
    fn prepare(
        &self,
        record: &ProviderRecord<'_>,
        extra_headers: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Result<(), String> {
        let facts = self.facts();
        if facts.version_query().is_some() && record.api_version.is_empty() {
            return Err(format!("{facts:?} needs an api_version"));
        }
        let names = extra_headers.iter().map(|(name, _)| name.as_str());
        if let Some((name, value)) = facts.version_header_value(record.api_version, names) {
            let value = HeaderValue::from_str(value).map_err(|_| "bad api_version".to_owned())?;
            extra_headers.push((HeaderName::from_static(name), value));
        }
        Ok(())
    }

    /// Where `operation` goes for a deployment of `upstream_model`, if the family serves it in
    /// its own format.
    fn url(
        &self,
        record: &ProviderRecord<'_>,
        upstream_model: &str,
        operation: Operation,
    ) -> Option<Result<http::Uri, String>>;

    /// How `/v1/chat/completions` reaches a family that speaks another format.
    fn chat_translation(&self) -> Option<&'static dyn ChatTranslation> {
        None
    }

    /// For a family that says how long to wait in a 429's body rather than in a header, how
    /// to read it there.
    fn rate_limit_wait_in_body(&self) -> Option<WaitInBody> {
        None
    }
}

/// Reads the wait a 429's body asks for.
pub type WaitInBody = fn(&[u8]) -> Option<std::time::Duration>;

/// The family of a provider type.
pub fn of(provider_type: ProviderType) -> &'static dyn Family {
    match provider_type {
        ProviderType::OpenAi => &openai::OPENAI,
        ProviderType::Vllm | ProviderType::Custom => &openai::SELF_HOSTED,
        ProviderType::AzureOpenAi => &azure::AzureOpenAi,
        ProviderType::Anthropic => &anthropic::Anthropic,
        ProviderType::Google => &gemini::Gemini,
    }
}

/// Reads the usage of answers to `operation` as its native endpoint returns them: in the wire
/// format of the family whose API the endpoint is.
pub fn usage_reader(operation: Operation) -> &'static dyn UsageReader {
    match operation {
        Operation::ChatCompletions | Operation::Embeddings | Operation::Responses => {
            &openai::usage::OpenAiUsage
        }
        Operation::Messages => &anthropic::usage::AnthropicUsage,
        Operation::GenerateContent | Operation::StreamGenerateContent => {
            &gemini::usage::GeminiUsage
        }
    }
}

/// The base URL with `segments` appended (each percent-encoded) and an optional query pair.
pub fn url_under(
    base_url: &str,
    segments: &[&str],
    query: Option<(&str, &str)>,
) -> Result<http::Uri, String> {
    let bad = || {
        format!(
            "cannot make a URL under {base_url} for {}",
            segments.join("/")
        )
    };
    let mut url = url::Url::parse(base_url).map_err(|_| bad())?;
    url.path_segments_mut()
        .map_err(|_| bad())?
        .pop_if_empty()
        .extend(segments);
    if let Some((name, value)) = query {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.as_str().parse().map_err(|_| bad())
}
