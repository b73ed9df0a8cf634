//! Everything the request path reads, in one immutable value built from a validated snapshot.
//!
//! A snapshot is checked completely before any of it is used (go-control-plane's
//! `Consistent()`): a rejected snapshot is NACKed with the reason and the previous tables stay.
//! All indexes are built here, once per version, so a request does hash lookups only. Provider
//! keys stay sealed; a request opens the one it needs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use sluice_proto::config::v1 as pb;
use sluice_shared::budget_window::Window;
use sluice_shared::sealing::{SealingKeyPair, SecretOpener};
use sluice_shared::secret::SecretString;

/// Why a snapshot was refused; the text goes back to the control plane in the NACK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidSnapshot(pub String);

/// The Messages API version sent to Anthropic unless a provider names another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

fn invalid(message: impl Into<String>) -> InvalidSnapshot {
    InvalidSnapshot(message.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posture {
    Mock,
    Live,
}

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

#[derive(Debug)]
pub struct VirtualKeyEntry {
    pub id: String,
    pub project: usize,
    /// `None`: every model of the organization.
    pub allowed_models: Option<HashSet<String>>,
    /// 0: never.
    pub expires_at_us: i64,
}

#[derive(Debug)]
pub struct ProjectEntry {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub posture: Posture,
    pub default_model: String,
}

#[derive(Debug)]
pub struct DeploymentEntry {
    pub provider: usize,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
    /// Where this deployment's chat completions go, made once per snapshot: the provider's
    /// `/chat/completions`, or for Azure OpenAI the deployment's own URL with `api-version`.
    pub chat_completions_uri: http::Uri,
    /// The same for embeddings.
    pub embeddings_uri: http::Uri,
    /// The Responses API (OpenAI providers only).
    pub responses_uri: http::Uri,
    /// Anthropic's Messages API (Anthropic providers only).
    pub messages_uri: http::Uri,
    /// Gemini's `models/{model}:generateContent` and `:streamGenerateContent?alt=sse` for this
    /// deployment's model (Google providers only).
    pub generate_uri: http::Uri,
    pub stream_generate_uri: http::Uri,
}

/// How a provider key travels to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialHeader {
    /// `Authorization: Bearer <key>` (OpenAI, vLLM, custom).
    Bearer,
    /// The key as the whole value of a named header (`api-key` for Azure OpenAI).
    Named(HeaderName),
}

#[derive(Debug)]
pub struct ModelEntry {
    pub id: String,
    pub name: String,
    /// Sorted by priority, lowest (tried first) first.
    pub deployments: Vec<DeploymentEntry>,
    pub input_price_micros_per_mtok: i64,
    /// Input tokens the provider served from its prompt cache (the input price if unset).
    pub cached_input_price_micros_per_mtok: i64,
    pub output_price_micros_per_mtok: i64,
    pub context_window: u32,
    pub created_at_s: i64,
}

#[derive(Debug)]
pub struct ProviderKeyEntry {
    pub id: String,
    pub retiring: bool,
    sealed_secret: Vec<u8>,
}

#[derive(Debug)]
pub struct ProviderEntry {
    pub id: String,
    pub name: String,
    pub provider_type: ProviderType,
    /// The base URL without a trailing slash; paths are appended to it.
    pub base_url: String,
    /// `base_url` + `/chat/completions`, parsed once per snapshot rather than per request.
    pub chat_completions_uri: http::Uri,
    /// `base_url` + `/embeddings`.
    pub embeddings_uri: http::Uri,
    /// `base_url` + `/responses`.
    pub responses_uri: http::Uri,
    /// `base_url` + `/v1/messages` (Anthropic's Messages API).
    pub messages_uri: http::Uri,
    pub credential_header: CredentialHeader,
    /// vLLM and custom upstreams may need no key at all.
    pub keyless: bool,
    /// The `Host` header for that URI, made once rather than formatted by the client per request.
    pub host_header: HeaderValue,
    pub host: String,
    pub api_version: String,
    pub timeout: Duration,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Active keys first, then retiring ones.
    pub keys: Vec<ProviderKeyEntry>,
}

#[derive(Debug)]
pub struct RoutingTables {
    pub version: u64,
    pub generated_at_us: i64,
    keys: HashMap<[u8; 32], VirtualKeyEntry>,
    pub projects: Vec<ProjectEntry>,
    pub models: Vec<ModelEntry>,
    models_by_org: HashMap<String, HashMap<String, usize>>,
    pub providers: Vec<ProviderEntry>,
    /// HARD budgets, enforced with leases.
    pub budgets: Vec<BudgetEntry>,
    /// Budgets by the organisation, project or virtual key id they cover.
    budgets_by_scope: HashMap<String, Vec<usize>>,
    opener: SecretOpener,
}

#[derive(Debug, Clone)]
pub struct BudgetEntry {
    pub id: String,
    pub window: Window,
    /// How an operator names it, for refusal messages: e.g. `acme/web (month)`.
    pub name: String,
}

impl RoutingTables {
    /// Validates `snapshot` completely and indexes it. `upstream_hosts`, when not empty, is the
    /// proxy's own allowlist of hosts it will call.
    pub fn build(
        snapshot: &pb::Snapshot,
        sealing: &SealingKeyPair,
        upstream_hosts: &[String],
    ) -> Result<Self, InvalidSnapshot> {
        if snapshot.version == 0 {
            return Err(invalid("snapshot version 0 is not a version"));
        }
        let opener = sealing
            .opener(&snapshot.sealing_public_key)
            .map_err(|e| invalid(format!("sealing key: {e}")))?;

        let mut providers = Vec::with_capacity(snapshot.providers.len());
        let mut provider_index = HashMap::new();
        for p in &snapshot.providers {
            let entry = provider(p, &opener, upstream_hosts)?;
            if provider_index
                .insert(p.id.clone(), providers.len())
                .is_some()
            {
                return Err(invalid(format!("provider id {} appears twice", p.id)));
            }
            providers.push(entry);
        }

        let mut projects = Vec::with_capacity(snapshot.projects.len());
        let mut project_index = HashMap::new();
        for p in &snapshot.projects {
            let posture = match p.posture {
                1 => Posture::Mock,
                2 => Posture::Live,
                other => {
                    return Err(invalid(format!(
                        "project {}: unknown posture {other}",
                        p.id
                    )));
                }
            };
            if project_index.insert(p.id.clone(), projects.len()).is_some() {
                return Err(invalid(format!("project id {} appears twice", p.id)));
            }
            projects.push(ProjectEntry {
                id: p.id.clone(),
                org_id: p.organization_id.clone(),
                name: p.name.clone(),
                posture,
                default_model: p.default_model.clone(),
            });
        }

        let mut models = Vec::with_capacity(snapshot.models.len());
        let mut models_by_org: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for m in &snapshot.models {
            let by_name = models_by_org.entry(m.organization_id.clone()).or_default();
            if by_name.insert(m.name.clone(), models.len()).is_some() {
                return Err(invalid(format!(
                    "model name {} appears twice in organization {}",
                    m.name, m.organization_id
                )));
            }
            let mut deployments = Vec::with_capacity(m.deployments.len());
            for d in &m.deployments {
                // A deployment on an inactive provider (absent from the snapshot) is unusable,
                // not an error: the model may still have others.
                if let Some(&provider) = provider_index.get(&d.provider_id) {
                    if d.upstream_model.is_empty() {
                        return Err(invalid(format!(
                            "model {}: a deployment has no upstream model",
                            m.name
                        )));
                    }
                    let on = &providers[provider];
                    deployments.push(DeploymentEntry {
                        provider,
                        upstream_model: d.upstream_model.clone(),
                        weight: d.weight.max(1),
                        priority: d.priority,
                        chat_completions_uri: deployment_uri(
                            on,
                            &d.upstream_model,
                            &on.chat_completions_uri,
                            "chat/completions",
                        )?,
                        embeddings_uri: deployment_uri(
                            on,
                            &d.upstream_model,
                            &on.embeddings_uri,
                            "embeddings",
                        )?,
                        responses_uri: on.responses_uri.clone(),
                        messages_uri: on.messages_uri.clone(),
                        generate_uri: gemini_uri(on, &d.upstream_model, "generateContent")?,
                        stream_generate_uri: gemini_uri(
                            on,
                            &d.upstream_model,
                            "streamGenerateContent",
                        )?,
                    });
                }
            }
            deployments.sort_by_key(|d| d.priority);
            let cached_input_price = m
                .cached_input_price_micros_per_mtok
                .unwrap_or(m.input_price_micros_per_mtok);
            if m.input_price_micros_per_mtok < 0
                || m.output_price_micros_per_mtok < 0
                || cached_input_price < 0
            {
                return Err(invalid(format!("model {}: negative price", m.name)));
            }
            models.push(ModelEntry {
                id: m.id.clone(),
                name: m.name.clone(),
                deployments,
                input_price_micros_per_mtok: m.input_price_micros_per_mtok,
                cached_input_price_micros_per_mtok: cached_input_price,
                output_price_micros_per_mtok: m.output_price_micros_per_mtok,
                context_window: m.context_window,
                created_at_s: snapshot.generated_at_us / 1_000_000,
            });
        }

        let mut keys = HashMap::with_capacity(snapshot.virtual_keys.len());
        for v in &snapshot.virtual_keys {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&v.key_hash, &mut hash).map_err(|_| {
                invalid(format!(
                    "virtual key {}: key_hash is not 64 hex digits",
                    v.id
                ))
            })?;
            let project = *project_index.get(&v.project_id).ok_or_else(|| {
                invalid(format!(
                    "virtual key {} names missing project {}",
                    v.id, v.project_id
                ))
            })?;
            let allowed_models = (!v.allowed_models.is_empty())
                .then(|| v.allowed_models.iter().cloned().collect::<HashSet<_>>());
            let entry = VirtualKeyEntry {
                id: v.id.clone(),
                project,
                allowed_models,
                expires_at_us: v.expires_at_us,
            };
            if keys.insert(hash, entry).is_some() {
                return Err(invalid(format!(
                    "virtual key hash of {} appears twice",
                    v.id
                )));
            }
        }

        let mut budgets = Vec::with_capacity(snapshot.budgets.len());
        let mut budgets_by_scope: HashMap<String, Vec<usize>> = HashMap::new();
        for b in &snapshot.budgets {
            let window = match b.period {
                1 => Window::Day,
                2 => Window::Month,
                3 => Window::Total,
                other => {
                    return Err(invalid(format!("budget {}: unknown period {other}", b.id)));
                }
            };
            if b.id.is_empty() || b.scope_id.is_empty() {
                return Err(invalid("a budget without an id or a scope"));
            }
            budgets_by_scope
                .entry(b.scope_id.clone())
                .or_default()
                .push(budgets.len());
            budgets.push(BudgetEntry {
                id: b.id.clone(),
                window,
                name: b.name.clone(),
            });
        }

        Ok(Self {
            version: snapshot.version,
            generated_at_us: snapshot.generated_at_us,
            keys,
            projects,
            models,
            models_by_org,
            providers,
            budgets,
            budgets_by_scope,
            opener,
        })
    }

    /// The virtual key whose SHA-256 is `hash`.
    pub fn virtual_key(&self, hash: &[u8; 32]) -> Option<&VirtualKeyEntry> {
        self.keys.get(hash)
    }

    pub fn model(&self, org_id: &str, name: &str) -> Option<&ModelEntry> {
        self.models_by_org
            .get(org_id)?
            .get(name)
            .map(|&i| &self.models[i])
    }

    /// Every model of an organization, for `GET /v1/models`.
    pub fn org_models(&self, org_id: &str) -> impl Iterator<Item = &ModelEntry> {
        self.models_by_org
            .get(org_id)
            .into_iter()
            .flat_map(|by_name| by_name.values().map(|&i| &self.models[i]))
    }

    /// Opens one provider key for one request. The plaintext lives only as long as the caller
    /// keeps the returned secret.
    pub fn open_key(
        &self,
        key: &ProviderKeyEntry,
    ) -> Result<SecretString, sluice_shared::sealing::SealingError> {
        self.opener.open(&key.id, &key.sealed_secret)
    }

    /// The HARD budgets that cover a request of this organisation, project and key.
    pub fn budgets_for<'a>(
        &'a self,
        scope_ids: [&str; 3],
    ) -> impl Iterator<Item = &'a BudgetEntry> {
        scope_ids
            .into_iter()
            .filter_map(|id| self.budgets_by_scope.get(id))
            .flatten()
            .map(|&i| &self.budgets[i])
    }

    pub fn virtual_key_count(&self) -> usize {
        self.keys.len()
    }
}

/// An Azure OpenAI deployment's URL for an operation: `{base}/openai/deployments/{deployment}/
/// {operation}?api-version={version}`; every other provider serves the operation at its own
/// `provider_uri`.
fn deployment_uri(
    provider: &ProviderEntry,
    upstream_model: &str,
    provider_uri: &http::Uri,
    operation: &str,
) -> Result<http::Uri, InvalidSnapshot> {
    if provider.provider_type != ProviderType::AzureOpenAi {
        return Ok(provider_uri.clone());
    }
    let mut segments = vec!["openai", "deployments", upstream_model];
    segments.extend(operation.split('/'));
    provider_url(
        provider,
        upstream_model,
        &segments,
        Some(("api-version", &provider.api_version)),
    )
}

/// `{base}/v1beta/models/{model}:{method}` (streams with `alt=sse`, so the answer is
/// server-sent events).
fn gemini_uri(
    provider: &ProviderEntry,
    upstream_model: &str,
    method: &str,
) -> Result<http::Uri, InvalidSnapshot> {
    let last = format!("{upstream_model}:{method}");
    let query = (method == "streamGenerateContent").then_some(("alt", "sse"));
    provider_url(
        provider,
        upstream_model,
        &["v1beta", "models", &last],
        query,
    )
}

/// The provider's base URL with `segments` appended (each percent-encoded) and an optional
/// query pair.
fn provider_url(
    provider: &ProviderEntry,
    upstream_model: &str,
    segments: &[&str],
    query: Option<(&str, &str)>,
) -> Result<http::Uri, InvalidSnapshot> {
    let bad = || {
        invalid(format!(
            "provider {}: cannot make a URL for model {upstream_model}",
            provider.name
        ))
    };
    let mut url = url::Url::parse(&provider.base_url).map_err(|_| bad())?;
    url.path_segments_mut()
        .map_err(|_| bad())?
        .pop_if_empty()
        .extend(segments);
    if let Some((name, value)) = query {
        url.query_pairs_mut().append_pair(name, value);
    }
    url.as_str().parse().map_err(|_| bad())
}

fn provider(
    p: &pb::ProviderConfig,
    opener: &SecretOpener,
    upstream_hosts: &[String],
) -> Result<ProviderEntry, InvalidSnapshot> {
    let provider_type = match p.r#type {
        1 => ProviderType::OpenAi,
        2 => ProviderType::Anthropic,
        3 => ProviderType::Google,
        4 => ProviderType::AzureOpenAi,
        5 => ProviderType::Vllm,
        6 => ProviderType::Custom,
        other => {
            return Err(invalid(format!(
                "provider {}: unknown type {other}",
                p.name
            )));
        }
    };
    let url = url::Url::parse(&p.base_url)
        .map_err(|e| invalid(format!("provider {}: base_url: {e}", p.name)))?;
    if !matches!(url.scheme(), "https" | "http")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(invalid(format!(
            "provider {}: base_url is not a plain http(s) URL",
            p.name
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid(format!("provider {}: base_url has no host", p.name)))?
        .to_ascii_lowercase();
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !upstream_hosts.is_empty()
        && !upstream_hosts
            .iter()
            .any(|allowed| *allowed == bare_host || *allowed == host)
    {
        return Err(invalid(format!(
            "provider {}: host {host} is not in this proxy's upstream allowlist (SLUICE_PROXY_UPSTREAM_HOSTS)",
            p.name
        )));
    }
    let mut extra_headers = Vec::with_capacity(p.extra_headers.len());
    for (name, value) in &p.extra_headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("provider {}: bad header name {name}", p.name)))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("provider {}: bad value for header {name}", p.name)))?;
        extra_headers.push((name, value));
    }
    let mut keys = Vec::with_capacity(p.keys.len());
    for k in &p.keys {
        let retiring = match k.state {
            1 => false,
            2 => true,
            3 => continue,
            other => {
                return Err(invalid(format!(
                    "provider key {}: unknown state {other}",
                    k.id
                )));
            }
        };
        // Proven to open now, so a request never meets a key that cannot; dropped at once.
        opener
            .open(&k.id, &k.sealed_secret)
            .map_err(|e| invalid(format!("provider key {} of {}: {e}", k.id, p.name)))?;
        keys.push(ProviderKeyEntry {
            id: k.id.clone(),
            retiring,
            sealed_secret: k.sealed_secret.clone(),
        });
    }
    keys.sort_by_key(|k| k.retiring);
    let operation_uri = |operation: &str| -> Result<http::Uri, InvalidSnapshot> {
        format!("{}/{operation}", p.base_url.trim_end_matches('/'))
            .parse()
            .map_err(|_| {
                invalid(format!(
                    "provider {}: base_url does not make a valid URI",
                    p.name
                ))
            })
    };
    let chat_completions_uri = operation_uri("chat/completions")?;
    let embeddings_uri = operation_uri("embeddings")?;
    let responses_uri = operation_uri("responses")?;
    let messages_uri = operation_uri("v1/messages")?;
    if provider_type == ProviderType::Anthropic
        && !extra_headers
            .iter()
            .any(|(name, _)| name.as_str() == "anthropic-version")
    {
        let version = if p.api_version.is_empty() {
            ANTHROPIC_VERSION
        } else {
            p.api_version.as_str()
        };
        let value = HeaderValue::from_str(version)
            .map_err(|_| invalid(format!("provider {}: bad api_version", p.name)))?;
        extra_headers.push((HeaderName::from_static("anthropic-version"), value));
    }
    let host_header = chat_completions_uri
        .authority()
        .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        .ok_or_else(|| invalid(format!("provider {}: base_url has no host", p.name)))?;
    if provider_type == ProviderType::AzureOpenAi && p.api_version.is_empty() {
        return Err(invalid(format!(
            "provider {}: Azure OpenAI needs an api_version",
            p.name
        )));
    }
    Ok(ProviderEntry {
        id: p.id.clone(),
        name: p.name.clone(),
        provider_type,
        chat_completions_uri,
        embeddings_uri,
        responses_uri,
        messages_uri,
        credential_header: match provider_type {
            ProviderType::AzureOpenAi => {
                CredentialHeader::Named(HeaderName::from_static("api-key"))
            }
            ProviderType::Anthropic => {
                CredentialHeader::Named(HeaderName::from_static("x-api-key"))
            }
            ProviderType::Google => {
                CredentialHeader::Named(HeaderName::from_static("x-goog-api-key"))
            }
            _ => CredentialHeader::Bearer,
        },
        keyless: matches!(provider_type, ProviderType::Vllm | ProviderType::Custom),
        host_header,
        base_url: p.base_url.trim_end_matches('/').to_owned(),
        host,
        api_version: p.api_version.clone(),
        timeout: Duration::from_millis(u64::from(p.timeout_ms.clamp(1, 600_000))),
        extra_headers,
        keys,
    })
}
