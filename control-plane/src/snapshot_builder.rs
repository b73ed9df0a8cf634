//! Turns the store into config snapshots for proxies.
//!
//! The [`ConfigPublisher`] watches for changes — a nudge from the admin API after each write,
//! and a poll of the config version for changes made by other control-plane replicas — and
//! publishes the newest state on a `watch` channel: the first change after a quiet spell at
//! once, later ones at most every 100 ms, so a burst of writes becomes one version. Each
//! version reads every table whole but only the virtual keys changed since the version before
//! (and shares the unchanged ones with it): with a hundred thousand keys, reading them all was
//! most of what a change cost. Streams read the newest value; a slow stream skips versions
//! instead of queueing them.
//!
//! Per proxy, [`seal_snapshot`] converts that state to the wire form, sealing every provider key
//! to the proxy's own public key, and either sends every virtual key or only the difference
//! from the version the proxy serves, in parts of [`KEYS_PER_PART`] keys.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::common::v1 as common;
use sluice_proto::config::v1 as pb;
use sluice_shared::sealing::{SealingError, SecretSealer};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::store::{
    BudgetPeriod, ConfigState, ConfigVirtualKey, KeyState, Posture, ProviderKind, Store,
    VirtualKeysRead,
};
use crate::vault::Vault;

/// The shortest time between two published versions.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How often to look for changes another replica committed.
const POLL: Duration = Duration::from_secs(1);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// After this long without a version, the next one reads every key again rather than the
/// changes (deleted keys are remembered for a day).
const FULL_READ_AFTER: Duration = Duration::from_secs(3600);
/// Virtual keys per message of a snapshot (about 1 MiB).
pub const KEYS_PER_PART: usize = 8192;

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
        let mut published: Option<(Arc<ConfigState>, Instant)> = None;
        loop {
            let held = published.as_ref().map(|(state, _)| state.version);
            match self.store.config_version().await {
                Ok(version) if Some(version) != held => {
                    let since = published.as_ref().and_then(|(state, at)| {
                        (state.version < version && at.elapsed() < FULL_READ_AFTER)
                            .then_some(state.clone())
                    });
                    let read = since.as_ref().map_or(VirtualKeysRead::All, |state| {
                        VirtualKeysRead::ChangedSince(state.version)
                    });
                    match self.store.load_config(read).await {
                        Ok(mut state) => {
                            if let Some(previous) = since {
                                state.virtual_keys = merge_keys(
                                    &previous.virtual_keys,
                                    std::mem::take(&mut state.virtual_keys),
                                    &std::mem::take(&mut state.removed_virtual_keys),
                                );
                            }
                            tracing::debug!(version = state.version, ?read, "publishing config");
                            let state = Arc::new(state);
                            self.sender.send_replace(Some(state.clone()));
                            published = Some((state, Instant::now()));
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot load config; retrying");
                            tokio::time::sleep(RETRY_AFTER_ERROR).await;
                            continue;
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot read the config version; retrying");
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                    continue;
                }
            }
            let last = published.as_ref().map(|(_, at)| *at);
            self.wait_for_change(last).await;
        }
    }

    /// Returns after a change (no sooner than [`MIN_INTERVAL`] after the last version), or
    /// after the poll interval.
    async fn wait_for_change(&self, last_published: Option<Instant>) {
        tokio::select! {
            _ = self.changed.notified() => {}
            _ = tokio::time::sleep(POLL) => return,
        }
        if let Some(last) = last_published {
            tokio::time::sleep_until(last + MIN_INTERVAL).await;
        }
    }
}

/// `previous` (sorted by id) with the keys in `removed` dropped and `changed` added or
/// replacing theirs; sorted by id.
fn merge_keys(
    previous: &[Arc<ConfigVirtualKey>],
    mut changed: Vec<Arc<ConfigVirtualKey>>,
    removed: &[String],
) -> Vec<Arc<ConfigVirtualKey>> {
    changed.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let gone: HashSet<&str> = removed.iter().map(String::as_str).collect();
    let mut merged = Vec::with_capacity(previous.len() + changed.len());
    let mut changed = changed.into_iter().peekable();
    for key in previous {
        while let Some(new) = changed.next_if(|new| new.id < key.id) {
            merged.push(new);
        }
        if changed
            .next_if(|new| new.id == key.id)
            .map(|new| merged.push(new))
            .is_none()
            && !gone.contains(key.id.as_str())
        {
            merged.push(key.clone());
        }
    }
    merged.extend(changed);
    merged
}

/// What a proxy serving `base` lacks of `newest` (both sorted by id): the keys to add or
/// replace, and the hashes to drop.
fn key_changes(
    base: &[Arc<ConfigVirtualKey>],
    newest: &[Arc<ConfigVirtualKey>],
) -> (Vec<Arc<ConfigVirtualKey>>, Vec<String>) {
    let mut upserts = Vec::new();
    let mut removed = Vec::new();
    let (mut old, mut new) = (base.iter().peekable(), newest.iter().peekable());
    loop {
        let order = match (old.peek(), new.peek()) {
            (Some(o), Some(n)) => o.id.cmp(&n.id),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match order {
            Ordering::Less => removed.extend(old.next().map(|o| o.key_hash.clone())),
            Ordering::Greater => upserts.extend(new.next().cloned()),
            Ordering::Equal => {
                let (Some(o), Some(n)) = (old.next(), new.next()) else {
                    break;
                };
                if !Arc::ptr_eq(o, n) && o != n {
                    if o.key_hash != n.key_hash {
                        removed.push(o.key_hash.clone());
                    }
                    upserts.push(n.clone());
                }
            }
        }
    }
    (upserts, removed)
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot seal provider keys for this proxy: {0}")]
    Sealing(#[from] SealingError),
}

/// A snapshot for one proxy, going out part by part: each item is a part and whether more
/// follow. The first carries every table; each carries at most [`KEYS_PER_PART`] keys.
pub struct SnapshotParts {
    head: Option<pb::Snapshot>,
    version: u64,
    keys: Vec<Arc<ConfigVirtualKey>>,
    sent: usize,
}

impl SnapshotParts {
    /// Whether this snapshot is a difference from a version the proxy serves.
    pub fn is_delta(&self) -> bool {
        self.head
            .as_ref()
            .is_some_and(|head| head.base_version != 0)
    }
}

impl Iterator for SnapshotParts {
    type Item = (pb::Snapshot, bool);

    fn next(&mut self) -> Option<Self::Item> {
        let mut part = match self.head.take() {
            Some(head) => head,
            None if self.sent < self.keys.len() => pb::Snapshot {
                version: self.version,
                ..Default::default()
            },
            None => return None,
        };
        let end = (self.sent + KEYS_PER_PART).min(self.keys.len());
        part.virtual_keys = self.keys[self.sent..end]
            .iter()
            .map(|v| pb::VirtualKeyConfig {
                id: v.id.clone(),
                project_id: v.project_id.clone(),
                key_hash: v.key_hash.clone(),
                allowed_models: v.allowed_models.clone(),
                expires_at_us: v.expires_at_us,
            })
            .collect();
        self.sent = end;
        Some((part, self.sent < self.keys.len()))
    }
}

/// The wire snapshot of `state` for the proxy holding `proxy_public_key`: every virtual key,
/// or with `serving` (the state the proxy serves) only what changed since. A provider key the
/// vault cannot open is left out (and logged), never sent broken.
pub fn seal_snapshot(
    state: &ConfigState,
    serving: Option<&ConfigState>,
    vault: &Vault,
    proxy_public_key: &[u8],
) -> Result<SnapshotParts, SnapshotError> {
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
            retry: Some(p.retry.into()),
            timeouts: Some(p.timeouts.into()),
            omit_trace_context: !p.send_trace_context,
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
    let (keys, removed_key_hashes, base_version) = match serving {
        Some(base) => {
            let (upserts, removed) = key_changes(&base.virtual_keys, &state.virtual_keys);
            (upserts, removed, base.version)
        }
        None => (state.virtual_keys.clone(), Vec::new(), 0),
    };
    let head = pb::Snapshot {
        version: state.version,
        base_version,
        removed_key_hashes,
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
                content_capture_bytes: p.content_capture_bytes,
                metrics_by_key: p.metrics_by_key,
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
                retry: Some(m.retry.into()),
                timeouts: Some(m.timeouts.into()),
            })
            .collect(),
        virtual_keys: Vec::new(),
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
        rate_limits: state
            .rate_limits
            .iter()
            .map(|r| pb::RateLimitConfig {
                id: r.id.clone(),
                scope_id: r.scope_id.clone(),
                requests_per_window: r.requests_per_window,
                tokens_per_window: r.tokens_per_window,
                window_seconds: r.window_seconds,
                name: r.name.clone(),
            })
            .collect(),
    };
    Ok(SnapshotParts {
        head: Some(head),
        version: state.version,
        keys,
        sent: 0,
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

#[cfg(test)]
mod tests {
    use sluice_shared::secret::SecretBytes;

    use super::*;

    fn key(n: u32, models: &[&str]) -> Arc<ConfigVirtualKey> {
        Arc::new(ConfigVirtualKey {
            id: format!("vk-{n:06}"),
            project_id: "p1".into(),
            key_hash: format!("{n:064x}"),
            allowed_models: models.iter().map(|m| m.to_string()).collect(),
            expires_at_us: 0,
        })
    }

    fn ids(keys: &[Arc<ConfigVirtualKey>]) -> Vec<&str> {
        keys.iter().map(|k| k.id.as_str()).collect()
    }

    #[test]
    fn changes_merge_into_the_previous_keys_in_order() {
        let previous: Vec<_> = [1, 3, 5, 7].map(|n| key(n, &[])).into();
        let changed = vec![key(8, &[]), key(3, &["m"]), key(0, &[])];
        let merged = merge_keys(
            &previous,
            changed,
            &["vk-000005".into(), "vk-000099".into()],
        );
        assert_eq!(
            ids(&merged),
            [
                "vk-000000",
                "vk-000001",
                "vk-000003",
                "vk-000007",
                "vk-000008"
            ]
        );
        assert_eq!(
            merged[2].allowed_models,
            ["m"],
            "the changed key replaces the old"
        );
        assert!(
            Arc::ptr_eq(&merged[1], &previous[0]),
            "unchanged keys are shared"
        );
    }

    #[test]
    fn a_difference_names_what_the_proxy_lacks() {
        let base: Vec<_> = [1, 2, 3, 4].map(|n| key(n, &[])).into();
        let mut rehashed = (*key(4, &[])).clone();
        rehashed.key_hash = format!("{:064x}", 44);
        let newest = vec![
            base[0].clone(),
            key(2, &["m"]),
            Arc::new(rehashed),
            key(5, &[]),
        ];
        let (upserts, removed) = key_changes(&base, &newest);
        assert_eq!(ids(&upserts), ["vk-000002", "vk-000004", "vk-000005"]);
        assert_eq!(removed, [format!("{:064x}", 3), format!("{:064x}", 4)]);
        let (upserts, removed) = key_changes(&newest, &newest);
        assert!(upserts.is_empty() && removed.is_empty());
        // Equal keys that are not the same allocation are no change either.
        let copies: Vec<_> = newest.iter().map(|k| Arc::new((**k).clone())).collect();
        assert_eq!(key_changes(&newest, &copies).0.len(), 0);
    }

    #[test]
    fn snapshots_go_in_bounded_parts_and_differences_carry_only_changes() {
        let vault = Vault::new(vec![(1, SecretBytes::new(vec![7; 32]))]).unwrap();
        let proxy = sluice_shared::sealing::SealingKeyPair::generate();
        let keys: Vec<_> = (0..(2 * KEYS_PER_PART as u32 + 5))
            .map(|n| key(n, &[]))
            .collect();
        let state = ConfigState {
            version: 9,
            virtual_keys: keys.clone(),
            ..Default::default()
        };
        let parts: Vec<_> = seal_snapshot(&state, None, &vault, &proxy.public_bytes())
            .unwrap()
            .collect();
        let sizes: Vec<(usize, bool)> = parts
            .iter()
            .map(|(part, more)| (part.virtual_keys.len(), *more))
            .collect();
        assert_eq!(
            sizes,
            [(KEYS_PER_PART, true), (KEYS_PER_PART, true), (5, false)]
        );
        assert!(parts.iter().all(|(part, _)| part.version == 9));
        assert_eq!(parts[0].0.base_version, 0);
        assert!(!parts[0].0.sealing_public_key.is_empty());
        assert!(parts[1].0.sealing_public_key.is_empty(), "tables go once");
        let sent: Vec<String> = parts
            .iter()
            .flat_map(|(part, _)| part.virtual_keys.iter().map(|k| k.id.clone()))
            .collect();
        assert_eq!(sent, ids(&keys));

        let mut next = state.clone();
        next.version = 10;
        next.virtual_keys.remove(3);
        let mut parts = seal_snapshot(&next, Some(&state), &vault, &proxy.public_bytes()).unwrap();
        assert!(parts.is_delta());
        let (difference, more) = parts.next().unwrap();
        assert!(!more && parts.next().is_none());
        assert_eq!(difference.base_version, 9);
        assert!(difference.virtual_keys.is_empty());
        assert_eq!(difference.removed_key_hashes, [keys[3].key_hash.clone()]);
    }
}
