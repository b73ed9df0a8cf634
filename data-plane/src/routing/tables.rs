//! Everything the request path reads, in one immutable value built from a validated snapshot.
//!
//! A snapshot is checked completely before any of it is used (go-control-plane's
//! `Consistent()`): a rejected snapshot is NACKed with the reason and the previous tables stay.
//! All indexes are built here, once per version, so a request does hash lookups only. Provider
//! keys stay sealed; a request opens the one it needs.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use sluice_proto::common::v1 as common;
use sluice_proto::config::v1 as pb;
use sluice_shared::budget_window::Window;
use sluice_shared::sealing::{SealingKeyPair, SecretOpener};
use sluice_shared::secret::SecretString;

use crate::budgets::leases::{LeaseCell, Leased};
use crate::families::{self, Family, ProviderRecord};
pub use crate::families::{CredentialHeader, ProviderType};
use crate::fast_hash::{FastMap, FastSet};
use crate::metrics::key_series::{KeySeries, KeySeriesBook};
use crate::metrics::series::{ModelSeries, SeriesBook};
use crate::operation::Operation;
use crate::resilience::outliers::{Health, HealthBook, Standing};
use crate::resilience::retry_policy::RetryPolicy;
use crate::resilience::timeout_policy::TimeoutPolicy;

/// Why a snapshot was refused; the text goes back to the control plane in the NACK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidSnapshot(pub String);

fn invalid(message: impl Into<String>) -> InvalidSnapshot {
    InvalidSnapshot(message.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posture {
    Mock,
    Live,
}

/// One virtual key: small, and cheap to carry from one version's tables to the next (a
/// hundred thousand of them make most of a proxy's memory).
#[derive(Debug, Clone)]
pub struct VirtualKeyEntry {
    pub id: Arc<str>,
    pub project: usize,
    /// `None`: every model of the organization.
    pub allowed_models: Option<Arc<FastSet<String>>>,
    /// 0: never.
    pub expires_at_us: i64,
}

/// A caller, resolved against one version of the tables: its virtual key and the key's
/// project.
pub struct Caller<'t> {
    pub key: &'t VirtualKeyEntry,
    pub project: &'t ProjectEntry,
}

#[derive(Debug)]
pub struct ProjectEntry {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub posture: Posture,
    pub default_model: String,
    /// The most bytes of prompt and of completion its sampled requests record on their
    /// spans; 0: none.
    pub content_capture_bytes: u32,
    /// Its requests, tokens and cost are counted per virtual key on `/metrics`.
    pub metrics_by_key: bool,
}

#[derive(Debug)]
pub struct DeploymentEntry {
    pub provider: usize,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
    /// How hard a request tries this deployment: its provider's and its model's settings
    /// over the defaults.
    pub retry: RetryPolicy,
    /// How long each part of a call to it may take, set as `retry` is.
    pub timeouts: TimeoutPolicy,
    /// Whether its upstream is ejected; shared by every model that names the same provider
    /// and upstream model, and with the next snapshot's tables.
    pub health: Arc<Health>,
    /// Where each operation goes on this deployment, made once per snapshot by its family;
    /// `None` where the family does not serve the operation in its own format.
    uris: [Option<http::Uri>; Operation::ALL.len()],
    /// The metrics of answers it gave, shared with the next snapshot's tables.
    pub series: Arc<ModelSeries>,
}

impl DeploymentEntry {
    pub fn uri(&self, operation: Operation) -> Option<&http::Uri> {
        self.uris[operation.index()].as_ref()
    }
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
    /// The metrics of its answers no provider gave (refusals, MOCK).
    pub series: Arc<ModelSeries>,
}

/// The output limit assumed for a model whose context window is not known: above any model's
/// today, and small enough that its cost at any price fits a reservation many times over.
pub const UNKNOWN_MODEL_OUTPUT_LIMIT: u64 = 1 << 21;

impl ModelEntry {
    /// The most output tokens a request to this model may ask for: no model produces more
    /// than its context window holds.
    pub fn output_token_limit(&self) -> u64 {
        match self.context_window {
            0 => UNKNOWN_MODEL_OUTPUT_LIMIT,
            window => u64::from(window),
        }
    }
}

#[derive(Debug)]
pub struct ProviderKeyEntry {
    pub id: String,
    pub retiring: bool,
    sealed_secret: Vec<u8>,
    /// Whether the upstream asked this key to wait; shared with the next snapshot's tables.
    pub health: Arc<Health>,
}

#[derive(Debug)]
pub struct ProviderEntry {
    pub id: String,
    pub name: String,
    pub provider_type: ProviderType,
    /// The base URL without a trailing slash; paths are appended to it.
    pub base_url: String,
    /// How this provider's upstream is reached.
    pub family: &'static dyn Family,
    pub credential_header: CredentialHeader,
    /// vLLM and custom upstreams may need no key at all.
    pub keyless: bool,
    /// The `Host` header for that URI, made once rather than formatted by the client per request.
    pub host_header: HeaderValue,
    pub host: String,
    pub api_version: String,
    /// Whether loopback and private addresses may be connected to (checked at connect time).
    pub allow_private_network: bool,
    /// Traced attempts send it `traceparent` / `tracestate`.
    pub send_trace_context: bool,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Active keys first, then retiring ones.
    pub keys: Vec<ProviderKeyEntry>,
    /// The provider's retry settings over the defaults (a model's go over these).
    pub retry: RetryPolicy,
    /// The provider's timeouts over the defaults (a model's go over these).
    pub timeouts: TimeoutPolicy,
}

#[derive(Debug)]
pub struct RoutingTables {
    pub version: u64,
    pub generated_at_us: i64,
    keys: FastMap<[u8; 32], VirtualKeyEntry>,
    pub projects: Vec<ProjectEntry>,
    pub models: Vec<ModelEntry>,
    models_by_org: FastMap<String, FastMap<String, usize>>,
    pub providers: Vec<ProviderEntry>,
    /// HARD budgets, enforced with leases.
    pub budgets: Vec<BudgetEntry>,
    /// Budgets by the organisation, project or virtual key id they cover.
    budgets_by_scope: ByScope,
    /// Each rate limit's limited counts, enforced with leases.
    pub rate_counters: Vec<RateCounter>,
    /// Rate counts by the organisation, project, virtual key or model id they count.
    rate_counters_by_scope: ByScope,
    /// Series per virtual key id, for the keys of projects counted by key.
    key_series: FastMap<Arc<str>, Arc<KeySeries>>,
    opener: SecretOpener,
    /// The snapshot's tables without its virtual keys, for the copy on disk.
    source: pb::Snapshot,
}

#[derive(Debug, Clone)]
pub struct BudgetEntry {
    pub id: String,
    pub window: Window,
    /// How an operator names it, for refusal messages: e.g. `acme/web (month)`.
    pub name: String,
}

/// Which count of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDimension {
    Requests,
    /// Input plus output tokens.
    Tokens,
}

impl RateDimension {
    /// What it counts, in messages and in lease ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// One limited count of a rate limit (its requests or its tokens), leased like a budget.
#[derive(Debug, Clone)]
pub struct RateCounter {
    /// `{limit id}/requests` or `{limit id}/tokens`: the book's key.
    pub lease_id: String,
    pub limit_id: String,
    pub dimension: RateDimension,
    /// Per window, at least 1.
    pub limit: u64,
    pub window: Window,
    /// How an operator names the limit, for refusals: e.g. `acme/web/ci (60 s)`.
    pub name: String,
    /// `limit`'s decimal digits, as its `x-ratelimit-limit-*` header carries them.
    pub limit_text: Box<str>,
    /// This process's lease cell for it, once a request has found it.
    pub cell: OnceLock<Arc<LeaseCell>>,
}

impl RateCounter {
    /// The id a count is leased under: its limit's id and what it counts.
    pub fn lease_id_of(limit_id: &str, dimension: RateDimension) -> String {
        format!("{limit_id}/{}", dimension.as_str())
    }
}

impl Leased for RateCounter {
    fn lease_id(&self) -> &str {
        &self.lease_id
    }

    fn window_start_us(&self, now_us: i64) -> i64 {
        self.window.start_us(now_us)
    }

    fn found_cell(&self) -> Option<&OnceLock<Arc<LeaseCell>>> {
        Some(&self.cell)
    }
}

/// Indexes into a table, by the organisation, project, key or model id they apply to.
type ByScope = FastMap<String, Vec<usize>>;

/// The snapshot's rate limits as counts, each limited dimension its own, indexed by scope.
fn rate_counters(
    limits: &[pb::RateLimitConfig],
) -> Result<(Vec<RateCounter>, ByScope), InvalidSnapshot> {
    let mut counters = Vec::with_capacity(limits.len() * 2);
    let mut by_scope = ByScope::default();
    for r in limits {
        if r.id.is_empty() || r.scope_id.is_empty() || r.window_seconds == 0 {
            return Err(invalid("a rate limit without an id, a scope or a window"));
        }
        if by_scope.contains_key(&r.scope_id) {
            return Err(invalid(format!(
                "rate limit {}: a second limit on scope {}",
                r.id, r.scope_id
            )));
        }
        for (dimension, limit) in [
            (RateDimension::Requests, r.requests_per_window),
            (RateDimension::Tokens, r.tokens_per_window),
        ] {
            if limit == 0 {
                continue;
            }
            by_scope
                .entry(r.scope_id.clone())
                .or_default()
                .push(counters.len());
            counters.push(RateCounter {
                lease_id: RateCounter::lease_id_of(&r.id, dimension),
                limit_id: r.id.clone(),
                dimension,
                limit,
                window: Window::Seconds(r.window_seconds),
                name: r.name.clone(),
                limit_text: limit.to_string().into_boxed_str(),
                cell: OnceLock::new(),
            });
        }
    }
    Ok((counters, by_scope))
}

impl Leased for BudgetEntry {
    fn lease_id(&self) -> &str {
        &self.id
    }

    fn window_start_us(&self, now_us: i64) -> i64 {
        self.window.start_us(now_us)
    }
}

/// Tables being built from a snapshot that arrives in parts: the first part's tables are
/// indexed by [`RoutingTables::begin`], each part's virtual keys added as it arrives, and
/// [`TablesBuilder::finish`] gives tables that serve only once every part has been checked.
pub struct TablesBuilder {
    tables: RoutingTables,
    project_index: HashMap<String, usize>,
    /// A difference may replace a key it keeps; a whole snapshot names each key once.
    replaces: bool,
}

impl RoutingTables {
    /// Validates a whole `snapshot` (one message) and indexes it. `upstream_hosts`, when not
    /// empty, is the proxy's own allowlist of hosts it will call.
    /// What is left out of attempts at `now_ms`: each ejected deployment (as
    /// `provider:upstream_model`) and each key an upstream asked to wait (by id), with when
    /// it is tried again (ms of UTC). For `/readyz` and the control plane.
    pub fn left_out(&self, now_ms: u64) -> LeftOut {
        let mut deployments = std::collections::BTreeMap::new();
        for model in &self.models {
            for deployment in &model.deployments {
                if let Standing::Out(until) = deployment.health.standing(now_ms) {
                    let provider = &self.providers[deployment.provider];
                    deployments.insert(
                        format!("{}:{}", provider.name, deployment.upstream_model),
                        until,
                    );
                }
            }
        }
        let keys = self
            .providers
            .iter()
            .flat_map(|provider| &provider.keys)
            .filter_map(|key| match key.health.standing(now_ms) {
                Standing::Out(until) => Some((key.id.clone(), until)),
                _ => None,
            })
            .collect();
        LeftOut {
            deployments: deployments.into_iter().collect(),
            keys,
        }
    }

    /// Hands every model and deployment the metric series the book holds for its labels, so
    /// that counters keep counting across snapshots.
    pub fn attach_series(&mut self, book: &SeriesBook) {
        book.adopt(self.models.iter_mut().flat_map(|model| {
            std::iter::once(&mut model.series)
                .chain(model.deployments.iter_mut().map(|d| &mut d.series))
        }));
    }

    /// Gives each virtual key of a project counted by key its series, as the book holds it;
    /// with no such project, nothing is walked and the book empties.
    pub fn attach_key_series(&mut self, book: &KeySeriesBook) {
        let projects = &self.projects;
        let counted = |entry: &VirtualKeyEntry| {
            projects
                .get(entry.project)
                .filter(|project| project.metrics_by_key)
        };
        self.key_series = if projects.iter().any(|project| project.metrics_by_key) {
            book.adopt(self.keys.values().filter_map(|entry| {
                counted(entry)
                    .map(|project| (&entry.id, project.name.as_str(), project.id.as_str()))
            }))
        } else {
            book.adopt([])
        };
    }

    /// The series of a virtual key of a project counted by key.
    pub fn key_series(&self, key_id: &str) -> Option<&Arc<KeySeries>> {
        self.key_series.get(key_id)
    }

    /// Hands every deployment and key the state the book holds for it (by provider and
    /// upstream model, and by key id), so that ejections outlive a snapshot.
    pub fn attach_health(&mut self, book: &HealthBook) {
        let deployments: Vec<String> = self
            .models
            .iter()
            .flat_map(|model| &model.deployments)
            .map(|deployment| deployment_name(&self.providers[deployment.provider], deployment))
            .collect();
        let keys: Vec<String> = self
            .providers
            .iter()
            .flat_map(|provider| &provider.keys)
            .map(|key| format!("key {}", key.id))
            .collect();
        let records = book.records(deployments.iter().chain(&keys).map(String::as_str));
        let deployment_slots = self
            .models
            .iter_mut()
            .flat_map(|model| &mut model.deployments);
        for (deployment, name) in deployment_slots.zip(&deployments) {
            if let Some(health) = records.get(name) {
                deployment.health = health.clone();
            }
        }
        let key_slots = self
            .providers
            .iter_mut()
            .flat_map(|provider| &mut provider.keys);
        for (key, name) in key_slots.zip(&keys) {
            if let Some(health) = records.get(name) {
                key.health = health.clone();
            }
        }
    }

    pub fn build(
        snapshot: &pb::Snapshot,
        sealing: &SealingKeyPair,
        upstream_hosts: &[String],
    ) -> Result<Self, InvalidSnapshot> {
        Self::begin(snapshot, None, sealing, upstream_hosts).map(TablesBuilder::finish)
    }

    /// Validates and indexes the first part of a snapshot, its keys included. A difference
    /// (`base_version` set) starts from the keys of `serving`, which must be that version.
    pub fn begin(
        snapshot: &pb::Snapshot,
        serving: Option<&RoutingTables>,
        sealing: &SealingKeyPair,
        upstream_hosts: &[String],
    ) -> Result<TablesBuilder, InvalidSnapshot> {
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
            let posture = match common::Posture::try_from(p.posture) {
                Ok(common::Posture::Mock) => Posture::Mock,
                Ok(common::Posture::Live) => Posture::Live,
                Ok(common::Posture::Unspecified) | Err(_) => {
                    let other = p.posture;
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
                content_capture_bytes: p
                    .content_capture_bytes
                    .min(sluice_shared::otel_settings::MAX_CONTENT_CAPTURE_BYTES),
                metrics_by_key: p.metrics_by_key,
            });
        }

        let mut models = Vec::with_capacity(snapshot.models.len());
        let mut models_by_org: FastMap<String, FastMap<String, usize>> = FastMap::default();
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
                        retry: on.retry.overlaid(m.retry.as_ref()),
                        timeouts: on.timeouts.overlaid(m.timeouts.as_ref()),
                        health: Arc::default(),
                        uris: deployment_uris(on, &d.upstream_model)?,
                        series: Arc::new(ModelSeries::new(
                            &m.name,
                            &on.name,
                            on.provider_type.gen_ai_provider_name(),
                        )),
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
                series: Arc::new(ModelSeries::new(&m.name, "", "")),
            });
        }

        let keys = match (snapshot.base_version, serving) {
            (0, _) => FastMap::default(),
            (base, Some(serving)) if serving.version == base => {
                serving.keys_for(&projects, &snapshot.removed_key_hashes)?
            }
            (base, serving) => {
                return Err(invalid(format!(
                    "a difference from version {base}, but this proxy serves {}",
                    serving.map_or(0, |t| t.version)
                )));
            }
        };
        let mut budgets = Vec::with_capacity(snapshot.budgets.len());
        let mut budgets_by_scope = ByScope::default();
        for b in &snapshot.budgets {
            let window = match common::BudgetPeriod::try_from(b.period) {
                Ok(common::BudgetPeriod::Day) => Window::Day,
                Ok(common::BudgetPeriod::Month) => Window::Month,
                Ok(common::BudgetPeriod::Total) => Window::Total,
                Ok(common::BudgetPeriod::Unspecified) | Err(_) => {
                    return Err(invalid(format!(
                        "budget {}: unknown period {}",
                        b.id, b.period
                    )));
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

        let (rate_counters, rate_counters_by_scope) = rate_counters(&snapshot.rate_limits)?;

        let replaces = snapshot.base_version != 0;
        let source = pb::Snapshot {
            version: snapshot.version,
            generated_at_us: snapshot.generated_at_us,
            projects: snapshot.projects.clone(),
            providers: snapshot.providers.clone(),
            models: snapshot.models.clone(),
            virtual_keys: Vec::new(),
            sealing_public_key: snapshot.sealing_public_key.clone(),
            budgets: snapshot.budgets.clone(),
            base_version: 0,
            removed_key_hashes: Vec::new(),
            rate_limits: snapshot.rate_limits.clone(),
        };
        let tables = Self {
            version: source.version,
            generated_at_us: source.generated_at_us,
            keys,
            projects,
            models,
            models_by_org,
            providers,
            budgets,
            budgets_by_scope,
            rate_counters,
            rate_counters_by_scope,
            key_series: FastMap::default(),
            opener,
            source,
        };
        let mut builder = TablesBuilder {
            tables,
            project_index,
            replaces,
        };
        builder.add_keys(&snapshot.virtual_keys)?;
        Ok(builder)
    }

    /// This version's keys for tables of `projects`, without those whose hash is in
    /// `removed` (hex): project positions follow the projects by id.
    fn keys_for(
        &self,
        projects: &[ProjectEntry],
        removed: &[String],
    ) -> Result<FastMap<[u8; 32], VirtualKeyEntry>, InvalidSnapshot> {
        let by_id: HashMap<&str, usize> = projects
            .iter()
            .enumerate()
            .map(|(at, p)| (p.id.as_str(), at))
            .collect();
        let moved: Vec<Option<usize>> = self
            .projects
            .iter()
            .map(|p| by_id.get(p.id.as_str()).copied())
            .collect();
        // Most differences keep the projects where they were: the map is copied whole, not
        // rebuilt key by key (the profile's top entry under key churn).
        let unmoved = moved.len() == projects.len()
            && moved.iter().enumerate().all(|(at, to)| *to == Some(at));
        let mut keys = if unmoved {
            self.keys.clone()
        } else {
            self.remapped_keys(&moved)?
        };
        for hex_hash in removed {
            keys.remove(&key_hash(hex_hash, "a removed key")?);
        }
        Ok(keys)
    }

    /// The keys with each project position replaced by `moved[position]`.
    fn remapped_keys(
        &self,
        moved: &[Option<usize>],
    ) -> Result<FastMap<[u8; 32], VirtualKeyEntry>, InvalidSnapshot> {
        let mut keys = FastMap::with_capacity_and_hasher(self.keys.len(), Default::default());
        for (hash, entry) in &self.keys {
            let project = moved.get(entry.project).copied().flatten().ok_or_else(|| {
                invalid(format!(
                    "virtual key {} kept, but its project is gone",
                    entry.id
                ))
            })?;
            keys.insert(
                *hash,
                VirtualKeyEntry {
                    project,
                    ..entry.clone()
                },
            );
        }
        Ok(keys)
    }

    /// Every virtual key as the snapshot names it, for the copy on disk.
    pub fn virtual_key_configs(&self) -> impl Iterator<Item = pb::VirtualKeyConfig> + '_ {
        self.keys.iter().map(|(hash, entry)| {
            let mut allowed_models: Vec<String> = entry
                .allowed_models
                .iter()
                .flat_map(|models| models.iter().cloned())
                .collect();
            allowed_models.sort_unstable();
            pb::VirtualKeyConfig {
                id: entry.id.to_string(),
                project_id: self
                    .projects
                    .get(entry.project)
                    .map(|p| p.id.clone())
                    .unwrap_or_default(),
                key_hash: hex::encode(hash),
                allowed_models,
                expires_at_us: entry.expires_at_us,
            }
        })
    }

    /// The snapshot's tables without virtual keys, as it arrived.
    pub fn source(&self) -> &pb::Snapshot {
        &self.source
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
    ) -> impl Iterator<Item = &'a BudgetEntry> + Clone {
        scope_ids
            .into_iter()
            .filter_map(|id| self.budgets_by_scope.get(id))
            .flatten()
            .map(|&i| &self.budgets[i])
    }

    /// The rate counts that a request of this organisation, project, key and model counts
    /// against.
    pub fn rate_counters_for<'a>(
        &'a self,
        scope_ids: [&str; 4],
    ) -> impl Iterator<Item = &'a RateCounter> + Clone {
        scope_ids
            .into_iter()
            .filter_map(|id| self.rate_counters_by_scope.get(id))
            .flatten()
            .map(|&i| &self.rate_counters[i])
    }

    pub fn virtual_key_count(&self) -> usize {
        self.keys.len()
    }
}

impl TablesBuilder {
    /// Checks and indexes one part's virtual keys.
    pub fn add_keys(&mut self, keys: &[pb::VirtualKeyConfig]) -> Result<(), InvalidSnapshot> {
        self.tables.keys.reserve(keys.len());
        for v in keys {
            let hash = key_hash(&v.key_hash, &v.id)?;
            let project = *self.project_index.get(&v.project_id).ok_or_else(|| {
                invalid(format!(
                    "virtual key {} names missing project {}",
                    v.id, v.project_id
                ))
            })?;
            let allowed_models = (!v.allowed_models.is_empty())
                .then(|| Arc::new(v.allowed_models.iter().cloned().collect::<FastSet<_>>()));
            let entry = VirtualKeyEntry {
                id: Arc::from(v.id.as_str()),
                project,
                allowed_models,
                expires_at_us: v.expires_at_us,
            };
            if self.tables.keys.insert(hash, entry).is_some() && !self.replaces {
                return Err(invalid(format!(
                    "virtual key hash of {} appears twice",
                    v.id
                )));
            }
        }
        Ok(())
    }

    /// The version this builder is building.
    pub fn version(&self) -> u64 {
        self.tables.version
    }

    pub fn finish(mut self) -> RoutingTables {
        self.tables.keys.shrink_to_fit();
        self.tables
    }
}

/// Deployments and keys left out of attempts, each with when it is tried again (ms of UTC).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub deployments: Vec<(String, u64)>,
    pub keys: Vec<(String, u64)>,
}

/// How a deployment is named in the health book: its provider (by id: names repeat across
/// organisations) and upstream model; models that share both share the upstream's health.
fn deployment_name(provider: &ProviderEntry, deployment: &DeploymentEntry) -> String {
    format!("deployment {}:{}", provider.id, deployment.upstream_model)
}

/// A SHA-256 given as 64 hex digits.
fn key_hash(hex_hash: &str, key: &str) -> Result<[u8; 32], InvalidSnapshot> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash)
        .map_err(|_| invalid(format!("virtual key {key}: key_hash is not 64 hex digits")))?;
    Ok(hash)
}

/// Each operation's URL for a deployment of `upstream_model`, as the provider's family makes it.
fn deployment_uris(
    provider: &ProviderEntry,
    upstream_model: &str,
) -> Result<[Option<http::Uri>; Operation::ALL.len()], InvalidSnapshot> {
    let record = ProviderRecord {
        base_url: &provider.base_url,
        api_version: &provider.api_version,
    };
    let mut uris: [Option<http::Uri>; Operation::ALL.len()] = Default::default();
    for operation in Operation::ALL {
        uris[operation.index()] = provider
            .family
            .url(&record, upstream_model, operation)
            .transpose()
            .map_err(|message| invalid(format!("provider {}: {message}", provider.name)))?;
    }
    Ok(uris)
}

fn provider(
    p: &pb::ProviderConfig,
    opener: &SecretOpener,
    upstream_hosts: &[String],
) -> Result<ProviderEntry, InvalidSnapshot> {
    let provider_type = match common::ProviderType::try_from(p.r#type) {
        Ok(common::ProviderType::Openai) => ProviderType::OpenAi,
        Ok(common::ProviderType::Anthropic) => ProviderType::Anthropic,
        Ok(common::ProviderType::Google) => ProviderType::Google,
        Ok(common::ProviderType::AzureOpenai) => ProviderType::AzureOpenAi,
        Ok(common::ProviderType::Vllm) => ProviderType::Vllm,
        Ok(common::ProviderType::Custom) => ProviderType::Custom,
        Ok(common::ProviderType::Unspecified) | Err(_) => {
            return Err(invalid(format!(
                "provider {}: unknown type {}",
                p.name, p.r#type
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
        let retiring = match common::ProviderKeyState::try_from(k.state) {
            Ok(common::ProviderKeyState::Active) => false,
            Ok(common::ProviderKeyState::Retiring) => true,
            Ok(common::ProviderKeyState::Revoked) => continue,
            Ok(common::ProviderKeyState::Unspecified) | Err(_) => {
                let other = k.state;
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
            health: Arc::default(),
        });
    }
    keys.sort_by_key(|k| k.retiring);
    let family = families::of(provider_type);
    let base_url = p.base_url.trim_end_matches('/').to_owned();
    family
        .prepare(
            &ProviderRecord {
                base_url: &base_url,
                api_version: &p.api_version,
            },
            &mut extra_headers,
        )
        .map_err(|message| invalid(format!("provider {}: {message}", p.name)))?;
    let host_header = base_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| {
            uri.authority()
                .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        })
        .ok_or_else(|| invalid(format!("provider {}: base_url has no host", p.name)))?;
    Ok(ProviderEntry {
        id: p.id.clone(),
        name: p.name.clone(),
        provider_type,
        family,
        credential_header: family.credential(),
        keyless: family.keyless(),
        host_header,
        base_url,
        host,
        api_version: p.api_version.clone(),
        allow_private_network: p.allow_private_network,
        send_trace_context: !p.omit_trace_context,
        extra_headers,
        keys,
        retry: RetryPolicy::default().overlaid(p.retry.as_ref()),
        timeouts: TimeoutPolicy::of_provider(p.timeout_ms).overlaid(p.timeouts.as_ref()),
    })
}
