//! Turns the store into config snapshots for proxies.
//!
//! The [`ConfigPublisher`] watches for changes — a nudge from the admin API after each write,
//! and a poll of the config version for changes made by other control-plane replicas — waits
//! for a quiet moment (100 ms, at most 1 s after the first change), loads the whole config in
//! one consistent read and publishes it on a `watch` channel. Streams read the newest value;
//! a slow stream skips versions instead of queueing them.
//!
//! Per proxy, [`seal_snapshot`] converts that state to the wire form, sealing every provider key
//! to the proxy's own public key.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::common::v1 as common;
use sluice_proto::config::v1 as pb;
use sluice_shared::sealing::{SealingError, SecretSealer};
use tokio::sync::{Notify, watch};

use crate::store::{BudgetPeriod, ConfigState, KeyState, Posture, ProviderKind, Store};
use crate::vault::Vault;

const QUIET: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// How often to look for changes another replica committed.
const POLL: Duration = Duration::from_secs(1);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// The newest config state, shared by every stream.
pub type ConfigWatch = watch::Receiver<Option<Arc<ConfigState>>>;

pub struct ConfigPublisher<S> {
    store: Arc<S>,
    changed: Arc<Notify>,
    sender: watch::Sender<Option<Arc<ConfigState>>>,
}

impl<S: Store> ConfigPublisher<S> {
    pub fn new(store: Arc<S>, changed: Arc<Notify>) -> Self {
        let (sender, _) = watch::channel(None);
        Self {
            store,
            changed,
            sender,
        }
    }

    pub fn subscribe(&self) -> ConfigWatch {
        self.sender.subscribe()
    }

    /// Publishes the first state, then keeps publishing until the task is dropped.
    pub async fn run(self) {
        let mut published = None;
        loop {
            match self.store.config_version().await {
                Ok(version) if Some(version) != published => match self.store.load_config().await {
                    Ok(state) => {
                        published = Some(state.version);
                        tracing::debug!(version = state.version, "publishing config");
                        self.sender.send_replace(Some(Arc::new(state)));
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot load config; retrying");
                        tokio::time::sleep(RETRY_AFTER_ERROR).await;
                        continue;
                    }
                },
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot read the config version; retrying");
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                    continue;
                }
            }
            self.wait_for_change().await;
        }
    }

    /// Returns after a change and a quiet period, or after the poll interval.
    async fn wait_for_change(&self) {
        tokio::select! {
            _ = self.changed.notified() => {}
            _ = tokio::time::sleep(POLL) => return,
        }
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            tokio::select! {
                _ = self.changed.notified() => {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                }
                _ = tokio::time::sleep(QUIET) => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot seal provider keys for this proxy: {0}")]
    Sealing(#[from] SealingError),
}

/// The wire snapshot of `state` for the proxy holding `proxy_public_key`. A provider key the
/// vault cannot open is left out (and logged), never sent broken.
pub fn seal_snapshot(
    state: &ConfigState,
    vault: &Vault,
    proxy_public_key: &[u8],
) -> Result<pb::Snapshot, SnapshotError> {
    let sealer = SecretSealer::for_recipient(proxy_public_key)?;
    let mut providers: Vec<pb::ProviderConfig> = state
        .providers
        .iter()
        .map(|p| pb::ProviderConfig {
            id: p.id.clone(),
            organization_id: p.organization.clone(),
            name: p.name.clone(),
            r#type: provider_type(p.kind),
            base_url: p.base_url.clone(),
            api_version: p.api_version.clone(),
            timeout_ms: p.timeout_ms,
            extra_headers: p.extra_headers.clone().into_iter().collect(),
            keys: Vec::new(),
            allow_private_network: p.allow_private_network,
        })
        .collect();
    for key in &state.provider_keys {
        let Some(provider) = providers.iter_mut().find(|p| p.id == key.provider_id) else {
            continue;
        };
        let secret = match vault.open_provider_key(&key.id, &key.org_id, &key.sealed_secret) {
            Ok(secret) => secret,
            Err(error) => {
                tracing::error!(provider_key_id = %key.id, %error, "provider key cannot be opened; left out of the snapshot");
                continue;
            }
        };
        provider.keys.push(pb::ProviderKeyConfig {
            id: key.id.clone(),
            state: match key.state {
                KeyState::Active => common::ProviderKeyState::Active,
                KeyState::Retiring => common::ProviderKeyState::Retiring,
                KeyState::Revoked => common::ProviderKeyState::Revoked,
            } as i32,
            sealed_secret: sealer.seal(&key.id, &secret)?,
        });
    }
    Ok(pb::Snapshot {
        version: state.version,
        generated_at_us: sluice_shared::time::now_us(),
        projects: state
            .projects
            .iter()
            .map(|p| pb::ProjectConfig {
                id: p.id.clone(),
                organization_id: p.org_id.clone(),
                name: p.name.clone(),
                posture: match p.posture {
                    Posture::Mock => common::Posture::Mock,
                    Posture::Live => common::Posture::Live,
                } as i32,
                default_model: p.default_model.clone(),
            })
            .collect(),
        providers,
        models: state
            .models
            .iter()
            .map(|m| pb::ModelConfig {
                id: m.id.clone(),
                organization_id: m.org_id.clone(),
                name: m.name.clone(),
                deployments: m
                    .deployments
                    .iter()
                    .map(|d| pb::DeploymentConfig {
                        provider_id: d.provider_id.clone(),
                        upstream_model: d.upstream_model.clone(),
                        weight: d.weight,
                        priority: d.priority,
                    })
                    .collect(),
                input_price_micros_per_mtok: m.input_price_micros_per_mtok,
                output_price_micros_per_mtok: m.output_price_micros_per_mtok,
                context_window: m.context_window,
                cached_input_price_micros_per_mtok: m.cached_input_price_micros_per_mtok,
            })
            .collect(),
        virtual_keys: state
            .virtual_keys
            .iter()
            .map(|v| pb::VirtualKeyConfig {
                id: v.id.clone(),
                project_id: v.project_id.clone(),
                key_hash: v.key_hash.clone(),
                allowed_models: v.allowed_models.clone(),
                expires_at_us: v.expires_at_us,
            })
            .collect(),
        sealing_public_key: sealer.sender_public().to_vec(),
        budgets: state
            .budgets
            .iter()
            .map(|b| pb::BudgetConfig {
                id: b.id.clone(),
                scope_id: b.scope_id.clone(),
                period: match b.period {
                    BudgetPeriod::Day => common::BudgetPeriod::Day,
                    BudgetPeriod::Month => common::BudgetPeriod::Month,
                    BudgetPeriod::Total => common::BudgetPeriod::Total,
                } as i32,
                name: b.name.clone(),
            })
            .collect(),
    })
}

fn provider_type(kind: ProviderKind) -> i32 {
    let kind = match kind {
        ProviderKind::OpenAi => common::ProviderType::Openai,
        ProviderKind::Anthropic => common::ProviderType::Anthropic,
        ProviderKind::Google => common::ProviderType::Google,
        ProviderKind::AzureOpenAi => common::ProviderType::AzureOpenai,
        ProviderKind::Vllm => common::ProviderType::Vllm,
        ProviderKind::Custom => common::ProviderType::Custom,
    };
    kind as i32
}
