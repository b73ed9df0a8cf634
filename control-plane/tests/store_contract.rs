//! One story, run against every store backend: SQLite in a temp dir, and PostgreSQL on
//! 127.0.0.1:5432 in a database created for this test and dropped after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use sluice_control_plane::store::postgres::PostgresStore;
use sluice_control_plane::store::sqlite::SqliteStore;
use sluice_control_plane::store::*;
use sluice_shared::ids::new_id;
use sqlx::Connection;

const INJECTIONS: &[&str] = &[
    "'; DROP TABLE organizations; --",
    "\" OR 1=1 --",
    "x' OR '1'='1",
    "%' UNION SELECT token_hash, 1, 1, 1, 1 FROM admin_tokens --",
    "\\'; DELETE FROM audit_events; --",
    "$1",
];

fn audit(action: &'static str, target: &str) -> Audit {
    Audit::new("test", action, target)
}

fn new_key(name: &str, fill: u8) -> NewProviderKey {
    NewProviderKey {
        id: new_id(),
        name: name.to_owned(),
        sealed_secret: vec![fill; 40],
        master_key_version: 1,
        last_four: "abcd".to_owned(),
        fingerprint: format!("fp-{fill}"),
    }
}

async fn story<S: Store>(store: &S) {
    assert_eq!(store.config_version().await.unwrap(), 0);

    // Organizations.
    let org = store
        .create_organization(
            NewOrganization {
                name: "acme".into(),
                display_name: "Acme Inc".into(),
            },
            audit("organization.create", "acme"),
        )
        .await
        .unwrap();
    assert_eq!(org.name, "acme");
    assert_eq!(store.config_version().await.unwrap(), 1);
    let duplicate = store
        .create_organization(
            NewOrganization {
                name: "acme".into(),
                display_name: String::new(),
            },
            audit("organization.create", "acme"),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists { .. })),
        "{duplicate:?}"
    );
    assert_eq!(
        store.config_version().await.unwrap(),
        1,
        "a failed change bumps nothing"
    );
    assert!(matches!(
        store.get_organization("nope").await,
        Err(StoreError::NotFound { .. })
    ));
    let updated = store
        .update_organization(
            "acme",
            Some("Acme Corp".into()),
            audit("organization.update", "acme"),
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Acme Corp");
    assert_eq!(store.list_organizations("ac").await.unwrap().len(), 1);
    assert_eq!(store.list_organizations("zz").await.unwrap().len(), 0);

    // Providers and keys.
    let mut headers = BTreeMap::new();
    headers.insert("x-team".to_owned(), "research".to_owned());
    let provider = store
        .create_provider(
            "acme",
            NewProvider {
                name: "openai".into(),
                kind: ProviderKind::OpenAi,
                base_url: "https://api.openai.com/v1".into(),
                api_version: String::new(),
                timeout_ms: 30_000,
                extra_headers: headers.clone(),
                allow_private_network: false,
                send_trace_context: true,
                retry: RetrySettings {
                    attempts_per_key: Some(3),
                    ..RetrySettings::default()
                },
                timeouts: TimeoutSettings {
                    idle_ms: Some(20_000),
                    ..TimeoutSettings::default()
                },
            },
            audit("provider.create", "acme/openai"),
        )
        .await
        .unwrap();
    assert_eq!(provider.extra_headers, headers);
    assert_eq!(provider.retry.attempts_per_key, Some(3));
    assert_eq!(provider.timeouts.idle_ms, Some(20_000));
    assert!(provider.active);
    let patched = store
        .update_provider(
            "acme",
            "openai",
            ProviderPatch {
                timeout_ms: Some(5_000),
                ..Default::default()
            },
            audit("provider.update", "acme/openai"),
        )
        .await
        .unwrap();
    assert_eq!(patched.timeout_ms, 5_000);
    assert_eq!(patched.base_url, provider.base_url);
    assert_eq!(patched.retry, provider.retry, "left as it was");
    let retried = RetrySettings {
        max_attempts: Some(6),
        backoff_base_ms: Some(50),
        max_retry_after_ms: Some(0),
        ..RetrySettings::default()
    };
    let patched = store
        .update_provider(
            "acme",
            "openai",
            ProviderPatch {
                retry: Some(retried),
                ..Default::default()
            },
            audit("provider.update", "acme/openai"),
        )
        .await
        .unwrap();
    assert_eq!(patched.retry, retried, "replaced whole");
    assert_eq!(patched.timeout_ms, 5_000);
    assert_eq!(patched.timeouts, provider.timeouts, "left as it was");
    let timeouts = TimeoutSettings {
        connect_ms: Some(900),
        total_ms: Some(120_000),
        ..TimeoutSettings::default()
    };
    let patched = store
        .update_provider(
            "acme",
            "openai",
            ProviderPatch {
                timeouts: Some(timeouts),
                ..Default::default()
            },
            audit("provider.update", "acme/openai"),
        )
        .await
        .unwrap();
    assert_eq!(patched.timeouts, timeouts, "replaced whole");
    assert_eq!(patched.retry, retried);
    assert!(patched.send_trace_context);
    let patched = store
        .update_provider(
            "acme",
            "openai",
            ProviderPatch {
                send_trace_context: Some(false),
                ..Default::default()
            },
            audit("provider.update", "acme/openai"),
        )
        .await
        .unwrap();
    assert!(!patched.send_trace_context);
    assert_eq!(patched.timeouts, timeouts, "left as it was");

    let key = store
        .create_provider_key(
            "acme",
            "openai",
            new_key("main", 1),
            audit("k", "acme/openai/main"),
        )
        .await
        .unwrap();
    assert_eq!(key.state, KeyState::Active);
    assert_eq!(key.health, KeyHealth::Unknown);
    assert_eq!(key.provider, "openai");
    assert!(matches!(
        store
            .create_provider_key("acme", "openai", new_key("main", 2), audit("k", "x"))
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let (retiring, active) = store
        .rotate_provider_key(
            "acme",
            "openai",
            "main",
            new_key("main-2", 3),
            audit("k", "x"),
        )
        .await
        .unwrap();
    assert_eq!(retiring.state, KeyState::Retiring);
    assert_eq!(active.state, KeyState::Active);
    assert!(matches!(
        store
            .rotate_provider_key(
                "acme",
                "openai",
                "main",
                new_key("main-3", 4),
                audit("k", "x")
            )
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store
            .delete_provider_key("acme", "openai", "main-2", audit("k", "x"))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let revoked = store
        .revoke_provider_key("acme", "openai", "main", audit("k", "x"))
        .await
        .unwrap();
    assert_eq!(revoked.state, KeyState::Revoked);
    store
        .delete_provider_key("acme", "openai", "main", audit("k", "x"))
        .await
        .unwrap();
    assert_eq!(store.list_provider_keys("acme", "").await.unwrap().len(), 1);

    // Rewrap bookkeeping: compare-and-set on the sealed value.
    let pending = store.sealed_keys_not_under(2, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sealed_secret, vec![3; 40]);
    assert!(
        !store
            .replace_sealed_secret(&pending[0].id, &[9; 40], vec![5; 40], 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_sealed_secret(&pending[0].id, &[3; 40], vec![5; 40], 2)
            .await
            .unwrap()
    );
    assert!(store.sealed_keys_not_under(2, 10).await.unwrap().is_empty());
    assert_eq!(
        store.provider_keys_per_master_key_version().await.unwrap(),
        vec![(2, 1)]
    );

    // Models with deployments.
    let model = store
        .create_model(
            "acme",
            NewModel {
                name: "gpt-4o-mini".into(),
                deployments: vec![Deployment {
                    provider: "openai".into(),
                    upstream_model: "gpt-4o-mini-2024-07-18".into(),
                    weight: 1,
                    priority: 0,
                }],
                input_price_micros_per_mtok: 150_000,
                output_price_micros_per_mtok: 600_000,
                context_window: 128_000,
                cached_input_price_micros_per_mtok: Some(75_000),
                price_source: PriceSource::Catalog,
                catalog_id: "gpt-4o-mini".into(),
                retry: RetrySettings {
                    max_attempts: Some(2),
                    ..RetrySettings::default()
                },
                timeouts: TimeoutSettings {
                    first_byte_ms: Some(45_000),
                    ..TimeoutSettings::default()
                },
            },
            audit("model.create", "acme/gpt-4o-mini"),
        )
        .await
        .unwrap();
    assert_eq!(model.deployments.len(), 1);
    assert_eq!(
        model.deployments[0].upstream_model,
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(model.retry.max_attempts, Some(2));
    assert_eq!(model.timeouts.first_byte_ms, Some(45_000));
    assert!(matches!(
        store
            .create_model(
                "acme",
                NewModel {
                    name: "broken".into(),
                    deployments: vec![Deployment {
                        provider: "missing".into(),
                        upstream_model: "x".into(),
                        weight: 1,
                        priority: 0,
                    }],
                    input_price_micros_per_mtok: 0,
                    output_price_micros_per_mtok: 0,
                    context_window: 0,
                    cached_input_price_micros_per_mtok: None,
                    price_source: PriceSource::Operator,
                    catalog_id: String::new(),
                    retry: RetrySettings::default(),
                    timeouts: TimeoutSettings::default(),
                },
                audit("model.create", "x"),
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_model("acme", "broken").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(model.cached_input_price_micros_per_mtok, Some(75_000));
    assert_eq!(model.price_source, PriceSource::Catalog);
    assert_eq!(model.catalog_id, "gpt-4o-mini");
    let repriced = store
        .update_model(
            "acme",
            "gpt-4o-mini",
            ModelPatch {
                output_price_micros_per_mtok: Some(700_000),
                cached_input_price_micros_per_mtok: Some(None),
                price_source: Some(PriceSource::Operator),
                catalog_id: Some(String::new()),
                ..Default::default()
            },
            audit("model.update", "x"),
        )
        .await
        .unwrap();
    assert_eq!(repriced.output_price_micros_per_mtok, 700_000);
    assert_eq!(repriced.input_price_micros_per_mtok, 150_000);
    assert_eq!(repriced.cached_input_price_micros_per_mtok, None);
    assert_eq!(repriced.price_source, PriceSource::Operator);
    assert_eq!(repriced.deployments, model.deployments);
    assert!(matches!(
        store
            .delete_provider("acme", "openai", audit("provider.delete", "x"))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));

    // Projects, readiness, virtual keys.
    let project = store
        .create_project(
            "acme",
            NewProject {
                name: "web".into(),
                display_name: String::new(),
                default_model: "gpt-4o-mini".into(),
                content_capture_bytes: 0,
                metrics_by_key: false,
            },
            audit("project.create", "acme/web"),
        )
        .await
        .unwrap();
    assert_eq!(project.posture, Posture::Mock, "nothing is live by default");
    assert!(matches!(
        store
            .create_project(
                "acme",
                NewProject {
                    name: "other".into(),
                    display_name: String::new(),
                    default_model: "missing".into(),
                    content_capture_bytes: 0,
                    metrics_by_key: false,
                },
                audit("project.create", "x"),
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let readiness = store
        .project_model_readiness("acme", "web", None)
        .await
        .unwrap();
    assert_eq!(
        readiness,
        vec![ModelReadiness {
            model: "gpt-4o-mini".into(),
            usable_keys: 1
        }]
    );
    let live = store
        .update_project(
            "acme",
            "web",
            ProjectPatch {
                posture: Some(Posture::Live),
                content_capture_bytes: Some(4096),
                metrics_by_key: Some(true),
                ..Default::default()
            },
            audit("project.set_posture", "acme/web"),
        )
        .await
        .unwrap();
    assert_eq!(live.posture, Posture::Live);
    assert_eq!(live.content_capture_bytes, 4096);
    assert!(live.metrics_by_key);
    assert_eq!(
        store
            .get_project("acme", "web")
            .await
            .unwrap()
            .content_capture_bytes,
        4096,
        "the opt-in into content capture is stored"
    );
    let config = store.load_config(VirtualKeysRead::All).await.unwrap();
    assert_eq!(
        config
            .projects
            .iter()
            .find(|p| p.id == live.id)
            .map(|p| (p.content_capture_bytes, p.metrics_by_key)),
        Some((4096, true)),
        "and reaches the proxies"
    );

    let vkey = store
        .create_virtual_key(
            "acme",
            "web",
            NewVirtualKey {
                id: new_id(),
                name: "ci".into(),
                prefix: "sk-sluice-AbCd".into(),
                key_hash: "hash-1".into(),
                allowed_models: vec!["gpt-4o-mini".into()],
                expires_at_us: 0,
            },
            audit("virtual_key.create", "acme/web/ci"),
        )
        .await
        .unwrap();
    assert_eq!(vkey.allowed_models, vec!["gpt-4o-mini".to_owned()]);
    assert!(matches!(
        store
            .create_virtual_key(
                "acme",
                "web",
                NewVirtualKey {
                    id: new_id(),
                    name: "bad".into(),
                    prefix: "sk-sluice-x".into(),
                    key_hash: "hash-2".into(),
                    allowed_models: vec!["unknown".into()],
                    expires_at_us: 0,
                },
                audit("virtual_key.create", "x"),
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store
            .list_virtual_keys("acme", "web", "sk-sluice-Ab")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .list_virtual_keys("acme", "web", "sk-sluice-Zz")
            .await
            .unwrap()
            .len(),
        0
    );
    let revoked = store
        .revoke_virtual_key("acme", "web", "ci", audit("virtual_key.revoke", "x"))
        .await
        .unwrap();
    assert!(revoked.revoked_at_us > 0);
    assert!(matches!(
        store
            .delete_project("acme", "web", audit("project.delete", "x"))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));

    // Admin tokens.
    store
        .create_admin_token(
            NewAdminToken {
                id: new_id(),
                name: "ops".into(),
                scope: TokenScope::ReadOnly,
                organization_id: None,
                prefix: "sluice-admin-abcd".into(),
                token_hash: "token-hash".into(),
            },
            audit("admin_token.create", "ops"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .find_admin_token("token-hash")
            .await
            .unwrap()
            .unwrap()
            .scope,
        TokenScope::ReadOnly
    );
    store
        .revoke_admin_token("ops", audit("admin_token.revoke", "ops"))
        .await
        .unwrap();
    assert!(
        store
            .find_admin_token("token-hash")
            .await
            .unwrap()
            .is_none()
    );

    // A token limited to one organisation comes back with its name; one that names no
    // organisation, or a global one that names one, is refused by the schema.
    let acme_id = store.get_organization("acme").await.unwrap().id;
    let limited = store
        .create_admin_token(
            NewAdminToken {
                id: new_id(),
                name: "acme-ci".into(),
                scope: TokenScope::OrgAdmin,
                organization_id: Some(acme_id.clone()),
                prefix: "sluice-admin-efgh".into(),
                token_hash: "acme-hash".into(),
            },
            audit("admin_token.create", "acme-ci"),
        )
        .await
        .unwrap();
    assert_eq!(limited.organization.as_deref(), Some("acme"));
    let found = store.find_admin_token("acme-hash").await.unwrap().unwrap();
    assert_eq!(
        (found.scope, found.organization.as_deref()),
        (TokenScope::OrgAdmin, Some("acme"))
    );
    for (scope, organization_id) in [
        (TokenScope::OrgReadOnly, None),
        (TokenScope::Admin, Some(acme_id)),
    ] {
        let refused = store
            .create_admin_token(
                NewAdminToken {
                    id: new_id(),
                    name: format!("bad-{}", scope.as_str()),
                    scope,
                    organization_id,
                    prefix: "sluice-admin-ijkl".into(),
                    token_hash: format!("bad-{}", scope.as_str()),
                },
                audit("admin_token.create", "bad"),
            )
            .await;
        assert!(refused.is_err(), "{scope:?}");
    }
    // The audit log narrowed to an organisation: its resources' events, never the tokens'.
    let acme_events = store
        .list_audit_events(AuditFilter {
            organization: "acme".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!acme_events.is_empty());
    assert!(
        acme_events
            .iter()
            .all(|e| (e.target == "acme" || e.target.starts_with("acme/"))
                && !e.action.starts_with("admin_token.")),
        "{acme_events:?}"
    );
    store
        .revoke_admin_token("acme-ci", audit("admin_token.revoke", "acme-ci"))
        .await
        .unwrap();

    // Audit: every successful change left one event, newest first.
    let events = store
        .list_audit_events(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len() as u64, store.config_version().await.unwrap());
    assert_eq!(events[0].action, "admin_token.revoke");
    let filtered = store
        .list_audit_events(AuditFilter {
            action: "provider.create".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);

    // Vault checks are insert-once.
    store.add_vault_check(1, vec![1, 2, 3]).await.unwrap();
    store.add_vault_check(1, vec![9, 9, 9]).await.unwrap();
    assert_eq!(
        store.vault_checks().await.unwrap(),
        vec![(1, vec![1, 2, 3])]
    );
}

/// Every name or filter parameter passes through as data: stored text comes back unchanged,
/// filters match nothing, and no table is touched.
async fn injection<S: Store>(store: &S) {
    let before = store
        .list_audit_events(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for payload in INJECTIONS {
        let org = store
            .create_organization(
                NewOrganization {
                    name: format!("org-{}", new_id()),
                    display_name: payload.to_string(),
                },
                audit("organization.create", payload),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_organization(&org.name)
                .await
                .unwrap()
                .display_name,
            *payload
        );
        assert!(matches!(
            store.get_organization(payload).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.list_organizations(payload).await.unwrap().is_empty());
        assert!(matches!(
            store.list_projects(payload).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.get_provider_key(payload, payload, payload).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.list_virtual_keys(&org.name, payload, payload).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.find_admin_token(payload).await.unwrap().is_none());
        let events = store
            .list_audit_events(AuditFilter {
                actor: payload.to_string(),
                action: String::new(),
                target_prefix: String::new(),
                organization: payload.to_string(),
                limit: 10,
            })
            .await
            .unwrap();
        assert!(events.is_empty());
        let by_target = store
            .list_audit_events(AuditFilter {
                target_prefix: payload.to_string(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_target.len(), 1, "{payload}");
        assert_eq!(by_target[0].target, *payload);
    }
    let after = store
        .list_audit_events(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), before.len() + INJECTIONS.len());
    assert_eq!(
        store.list_organizations("").await.unwrap().len(),
        INJECTIONS.len() + 1
    );
}

/// The fleet view: versions only go up; a NACK keeps the acked version.
async fn fleet_versions<S: Store>(store: &S) {
    store
        .record_proxy_connection("edge-1", "127.0.0.1:1", true)
        .await
        .unwrap();
    store.record_proxy_ack("edge-1", 7).await.unwrap();
    store.record_proxy_ack("edge-1", 5).await.unwrap();
    store
        .record_proxy_nack("edge-1", 8, "bad snapshot")
        .await
        .unwrap();
    let proxy = store
        .list_proxies()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.proxy_id == "edge-1")
        .unwrap();
    assert_eq!(
        proxy.acked_version, 7,
        "a stale ACK lowered the recorded version"
    );
    assert_eq!(
        (proxy.nacked_version, proxy.nack_reason.as_str()),
        (8, "bad snapshot")
    );
    assert!(proxy.connected);
    assert!(proxy.left_out.is_empty());
    let left_out = vec![LeftOut {
        kind: "deployment".into(),
        name: "openai:gpt-4o".into(),
        until_us: 1_700_000_000_000_000,
    }];
    store
        .record_proxy_left_out("edge-1", &left_out)
        .await
        .unwrap();
    store
        .record_proxy_connection("edge-1", "127.0.0.1:1", false)
        .await
        .unwrap();
    let proxy = &store.list_proxies().await.unwrap()[0];
    assert!(!proxy.connected);
    assert_eq!(proxy.left_out, left_out);
    store.record_proxy_left_out("edge-1", &[]).await.unwrap();
    assert!(store.list_proxies().await.unwrap()[0].left_out.is_empty());
}

/// The publisher's incremental read: only the keys changed since a version, and the ids of
/// those revoked or deleted since.
async fn config_reads<S: Store>(store: &S) {
    let create = |name: &'static str| {
        store.create_virtual_key(
            "acme",
            "web",
            NewVirtualKey {
                id: new_id(),
                name: name.into(),
                prefix: "sk-sluice-cfg".into(),
                key_hash: format!("hash-{name}"),
                allowed_models: Vec::new(),
                expires_at_us: 0,
            },
            audit("virtual_key.create", name),
        )
    };
    let a = create("cfg-a").await.unwrap();
    let b = create("cfg-b").await.unwrap();
    let whole = store.load_config(VirtualKeysRead::All).await.unwrap();
    let whole_ids: Vec<&str> = whole.virtual_keys.iter().map(|k| k.id.as_str()).collect();
    assert!(whole_ids.contains(&a.id.as_str()) && whole_ids.contains(&b.id.as_str()));
    assert!(whole_ids.is_sorted());
    assert!(whole.removed_virtual_keys.is_empty());
    let nothing = store
        .load_config(VirtualKeysRead::ChangedSince(whole.version))
        .await
        .unwrap();
    assert_eq!(nothing.version, whole.version);
    assert!(nothing.virtual_keys.is_empty() && nothing.removed_virtual_keys.is_empty());
    assert_eq!(
        nothing.projects, whole.projects,
        "the other tables come whole"
    );

    store
        .update_virtual_key(
            "acme",
            "web",
            "cfg-a",
            VirtualKeyPatch {
                allowed_models: Some(vec!["gpt-4o-mini".into()]),
                expires_at_us: None,
            },
            audit("virtual_key.update", "cfg-a"),
        )
        .await
        .unwrap();
    let c = create("cfg-c").await.unwrap();
    store
        .revoke_virtual_key("acme", "web", "cfg-b", audit("virtual_key.revoke", "cfg-b"))
        .await
        .unwrap();
    let changes = store
        .load_config(VirtualKeysRead::ChangedSince(whole.version))
        .await
        .unwrap();
    let mut expected = vec![a.id.clone(), c.id.clone()];
    expected.sort();
    let changed: Vec<&str> = changes.virtual_keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(changed, expected);
    let updated = changes.virtual_keys.iter().find(|k| k.id == a.id).unwrap();
    assert_eq!(updated.allowed_models, ["gpt-4o-mini"]);
    assert_eq!(changes.removed_virtual_keys, std::slice::from_ref(&b.id));

    store
        .delete_virtual_key("acme", "web", "cfg-c", audit("virtual_key.delete", "cfg-c"))
        .await
        .unwrap();
    let deleted = store
        .load_config(VirtualKeysRead::ChangedSince(changes.version))
        .await
        .unwrap();
    assert!(deleted.virtual_keys.is_empty());
    assert_eq!(deleted.removed_virtual_keys, std::slice::from_ref(&c.id));
    let after = store.load_config(VirtualKeysRead::All).await.unwrap();
    let live: Vec<&str> = after.virtual_keys.iter().map(|k| k.id.as_str()).collect();
    assert!(live.contains(&a.id.as_str()));
    assert!(!live.contains(&b.id.as_str()) && !live.contains(&c.id.as_str()));
}

/// Many writers at once all succeed: none may fail because another holds the write lock.
async fn concurrent_writers<S: Store>(store: std::sync::Arc<S>) {
    let before = store.config_version().await.unwrap();
    let writers: Vec<_> = (0..64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_organization(
                        NewOrganization {
                            name: format!("parallel-{n}"),
                            display_name: String::new(),
                        },
                        audit("organization.create", "parallel"),
                    )
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(store.config_version().await.unwrap(), before + 64);
}

/// Usage batches: committed once with all their records (over several insert chunks), a
/// repeat is a no-op, the same id with another payload is refused and changes nothing.
async fn usage_ledger<S: Store>(store: &S) {
    let records: Vec<UsageRecord> = (0..1_234)
        .map(|n| UsageRecord {
            request_id: format!("req-{n:05}"),
            started_at_us: 1_000 + n,
            project_id: "ledger-project".into(),
            virtual_key_id: "vk".into(),
            model: "gpt-4o-mini".into(),
            provider_id: "p".into(),
            input_tokens: n,
            output_tokens: 2 * n,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            cost_micros: n * 3,
            latency_ms: 5,
            http_status: 200,
            source: if n % 2 == 0 {
                UsageSource::ProviderReported
            } else {
                UsageSource::Estimated
            },
            run_id: if n % 3 == 0 {
                format!("run-{n}")
            } else {
                String::new()
            },
            task_id: String::new(),
            tags: if n % 3 == 0 {
                vec![
                    ("env".into(), "prod".into()),
                    ("team".into(), "search".into()),
                ]
            } else {
                Vec::new()
            },
            lease_epoch: n % 2,
            attempts: 0,
        })
        .collect();
    assert_eq!(
        store
            .commit_usage_batch(
                "batch-1",
                "proxy-a",
                "hash-1",
                Delivery::MayRepeat,
                NewUsageBatch::from_records(records.clone())
            )
            .await
            .unwrap()
            .outcome,
        BatchOutcome::Committed
    );
    assert_eq!(
        store
            .commit_usage_batch(
                "batch-1",
                "proxy-a",
                "hash-1",
                Delivery::MayRepeat,
                NewUsageBatch::from_records(records.clone())
            )
            .await
            .unwrap()
            .outcome,
        BatchOutcome::Duplicate
    );
    assert_eq!(
        store
            .commit_usage_batch(
                "batch-1",
                "proxy-a",
                "hash-2",
                Delivery::MayRepeat,
                NewUsageBatch::from_records(records[..1].to_vec())
            )
            .await
            .unwrap()
            .outcome,
        BatchOutcome::Conflict
    );
    let stored = store.list_usage_records("ledger-project").await.unwrap();
    assert_eq!(stored, records, "every record once, exactly as sent");
    assert_eq!(
        store
            .commit_usage_batch(
                "batch-2",
                "proxy-a",
                "hash-3",
                Delivery::First,
                NewUsageBatch::from_records(Vec::new())
            )
            .await
            .unwrap()
            .outcome,
        BatchOutcome::Committed
    );
}

fn spend(request_id: &str, project_id: &str, key_id: &str, at_us: i64, cost: i64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.into(),
        started_at_us: at_us,
        project_id: project_id.into(),
        virtual_key_id: key_id.into(),
        model: "gpt-4o-mini".into(),
        provider_id: "p".into(),
        input_tokens: 1,
        output_tokens: 1,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        cost_micros: cost,
        latency_ms: 1,
        http_status: 200,
        source: UsageSource::ProviderReported,
        run_id: String::new(),
        task_id: String::new(),
        tags: Vec::new(),
        lease_epoch: 0,
        attempts: 0,
    }
}

/// The (target, percent) of each alert a commit raised, sorted.
fn alerted(commit: &BatchCommit) -> Vec<(String, u32)> {
    let mut alerts: Vec<(String, u32)> = commit
        .alerts
        .iter()
        .map(|a| (a.target.clone(), a.percent))
        .collect();
    alerts.sort();
    alerts
}

/// Budgets: spend rolls up per target and window in the usage transaction, counts a re-sent
/// record once, starts from past usage, resets at UTC day and month boundaries (clock given
/// explicitly), and raises each alert threshold once per window.
async fn budgets<S: Store>(store: &S) {
    use sluice_shared::time::{day_us, days_from_civil};
    let day = |y, m, d| days_from_civil(y, m, d) * day_us();
    store
        .create_organization(
            NewOrganization {
                name: "spendco".into(),
                display_name: String::new(),
            },
            audit("organization.create", "spendco"),
        )
        .await
        .unwrap();
    let project = store
        .create_project(
            "spendco",
            NewProject {
                name: "app".into(),
                display_name: String::new(),
                default_model: String::new(),
                content_capture_bytes: 0,
                metrics_by_key: false,
            },
            audit("project.create", "spendco/app"),
        )
        .await
        .unwrap();
    let key = store
        .create_virtual_key(
            "spendco",
            "app",
            NewVirtualKey {
                id: new_id(),
                name: "ci".into(),
                prefix: "sk-sluice-Bu".into(),
                key_hash: "budget-key-hash".into(),
                allowed_models: Vec::new(),
                expires_at_us: 0,
            },
            audit("virtual_key.create", "spendco/app/ci"),
        )
        .await
        .unwrap();
    let target = |project: Option<&str>, key: Option<&str>| BudgetTarget {
        organization: "spendco".into(),
        project: project.map(str::to_owned),
        virtual_key: key.map(str::to_owned),
    };
    // 2026-11-30, the last day of a month.
    let today = day(2026, 11, 30) + 3_600_000_000;
    // Spend before any budget exists is picked up when one is created.
    store
        .commit_usage_batch(
            "budget-batch-0",
            "proxy-a",
            "h0",
            Delivery::First,
            NewUsageBatch::from_records(vec![spend("b-0", &project.id, &key.id, today, 100)]),
        )
        .await
        .unwrap();
    let new = |target: BudgetTarget, period, limit| NewBudget {
        target,
        period,
        limit_micros: limit,
        posture: BudgetPosture::Hard,
        alert_percents: vec![50, 100],
    };
    let org_day = store
        .create_budget(
            new(target(None, None), BudgetPeriod::Day, 1_000),
            today,
            audit("budget.create", "x"),
        )
        .await
        .unwrap();
    assert_eq!(
        org_day.spent_micros, 100,
        "a new budget starts from the window's past usage"
    );
    for (t, period) in [
        (target(Some("app"), None), BudgetPeriod::Month),
        (target(Some("app"), Some("ci")), BudgetPeriod::Total),
    ] {
        store
            .create_budget(new(t, period, 1_000), today, audit("budget.create", "x"))
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .create_budget(
                new(target(None, None), BudgetPeriod::Day, 5),
                today,
                audit("budget.create", "x")
            )
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store
            .create_budget(
                new(target(Some("nope"), None), BudgetPeriod::Day, 5),
                today,
                audit("budget.create", "x")
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // 400 more today crosses 50 % of each budget: one alert each.
    let commit = store
        .commit_usage_batch(
            "budget-batch-1",
            "proxy-a",
            "h1",
            Delivery::First,
            NewUsageBatch::from_records(vec![
                spend("b-1", &project.id, &key.id, today, 150),
                spend("b-2", &project.id, &key.id, today + 1, 250),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(commit.outcome, BatchOutcome::Committed);
    assert_eq!(
        alerted(&commit),
        [
            ("spendco".to_owned(), 50),
            ("spendco/app".to_owned(), 50),
            ("spendco/app/ci".to_owned(), 50)
        ]
    );
    // A record re-sent in another batch (after a proxy crash) is neither stored nor counted.
    let again = store
        .commit_usage_batch(
            "budget-batch-2",
            "proxy-a",
            "h2",
            Delivery::MayRepeat,
            NewUsageBatch::from_records(vec![spend("b-2", &project.id, &key.id, today + 1, 250)]),
        )
        .await
        .unwrap();
    assert!(again.alerts.is_empty());
    let spent = |budgets: &[Budget], period| {
        budgets
            .iter()
            .find(|b| b.period == period)
            .map(|b| (b.spent_micros, b.requests))
            .unwrap()
    };
    let now = store.list_budgets("spendco", today).await.unwrap();
    assert_eq!(now.len(), 3);
    for period in [BudgetPeriod::Day, BudgetPeriod::Month, BudgetPeriod::Total] {
        assert_eq!(spent(&now, period), (500, 3), "{period:?}");
    }
    let every = store.every_budget(today, 1000).await.unwrap();
    let by_id = |budgets: &[Budget]| {
        let mut spends: Vec<(String, i64)> = budgets
            .iter()
            .map(|b| (b.id.clone(), b.spent_micros))
            .collect();
        spends.sort();
        spends
    };
    assert_eq!(
        by_id(&every),
        by_id(&now),
        "every organisation's budgets, with their spend, for /metrics"
    );
    assert_eq!(store.every_budget(today, 2).await.unwrap().len(), 2);
    let audit_alerts = store
        .list_audit_events(AuditFilter {
            action: "budget.alert".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(audit_alerts, 3);

    // Tomorrow is a new day and a new month: those windows start empty; total does not reset.
    let tomorrow = day(2026, 12, 1) + 60_000_000;
    let next = store.list_budgets("spendco", tomorrow).await.unwrap();
    assert_eq!(spent(&next, BudgetPeriod::Day), (0, 0));
    assert_eq!(spent(&next, BudgetPeriod::Month), (0, 0));
    assert_eq!(spent(&next, BudgetPeriod::Total), (500, 3));
    let commit = store
        .commit_usage_batch(
            "budget-batch-3",
            "proxy-a",
            "h3",
            Delivery::First,
            NewUsageBatch::from_records(vec![spend("b-3", &project.id, &key.id, tomorrow, 600)]),
        )
        .await
        .unwrap();
    // The new day crosses 50 % again (its own window); total crosses 100 %.
    assert_eq!(
        alerted(&commit),
        [
            ("spendco".to_owned(), 50),
            ("spendco/app".to_owned(), 50),
            ("spendco/app/ci".to_owned(), 100)
        ]
    );
    let next = store.list_budgets("spendco", tomorrow).await.unwrap();
    assert_eq!(spent(&next, BudgetPeriod::Day), (600, 1));
    assert_eq!(spent(&next, BudgetPeriod::Total), (1_100, 4));
    // Yesterday's window is untouched by today's spend.
    let before = store.list_budgets("spendco", today).await.unwrap();
    assert_eq!(spent(&before, BudgetPeriod::Day), (500, 3));

    // Raising a limit and deleting a budget.
    let raised = store
        .update_budget(
            &target(Some("app"), Some("ci")),
            BudgetPeriod::Total,
            BudgetPatch {
                limit_micros: Some(10_000),
                posture: Some(BudgetPosture::Soft),
                alert_percents: None,
            },
            tomorrow,
            audit("budget.update", "x"),
        )
        .await
        .unwrap();
    assert_eq!(
        (raised.limit_micros, raised.posture),
        (10_000, BudgetPosture::Soft)
    );
    assert_eq!(raised.alert_percents, vec![50, 100]);
    store
        .delete_budget(
            &target(None, None),
            BudgetPeriod::Day,
            audit("budget.delete", "x"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.list_budgets("spendco", tomorrow).await.unwrap().len(),
        2
    );
}

/// Usage queries: filters by name and run, groups, and estimates and failures kept apart.
async fn usage_queries<S: Store>(store: &S) {
    use sluice_shared::time::{day_us, days_from_civil};
    let day = days_from_civil(2028, 1, 5) * day_us();
    let project = store.get_project("spendco", "app").await.unwrap();
    let key = store.get_virtual_key("spendco", "app", "ci").await.unwrap();
    let mut records = Vec::new();
    for (n, (model, cost, source, status, at)) in [
        ("model-a", 100, UsageSource::ProviderReported, 200, day),
        ("model-b", 50, UsageSource::Estimated, 200, day + 1),
        (
            "model-a",
            20,
            UsageSource::ProviderReported,
            500,
            day + day_us(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = spend(&format!("q-{n}"), &project.id, &key.id, at, cost);
        record.model = model.into();
        record.source = source;
        record.http_status = status;
        record.run_id = "q-run".into();
        records.push(record);
    }
    store
        .commit_usage_batch(
            "query-batch",
            "proxy-a",
            "qh",
            Delivery::First,
            NewUsageBatch::from_records(records),
        )
        .await
        .unwrap();
    let query = |group_by: Vec<UsageGroup>| UsageQuery {
        organization: "spendco".into(),
        run_id: Some("q-run".into()),
        from_us: 0,
        to_us: i64::MAX,
        group_by,
        limit: 100,
        ..Default::default()
    };
    let (rows, total) = store
        .query_usage(query(vec![UsageGroup::Model]))
        .await
        .unwrap();
    assert_eq!(
        (
            total.requests,
            total.cost_micros,
            total.estimated_cost_micros,
            total.failed_requests
        ),
        (3, 170, 50, 1)
    );
    // The run's calls one by one, newest first, their ids named; another organisation's
    // name finds none of them, and the limit keeps the newest.
    let (calls, truncated) = store.run_calls("spendco", "q-run", 10).await.unwrap();
    assert!(!truncated);
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .windows(2)
            .all(|pair| pair[0].record.started_at_us >= pair[1].record.started_at_us)
    );
    assert!(calls.iter().all(|call| call.project == project.name));
    assert!(calls.iter().all(|call| call.virtual_key == key.name));
    let (newest, truncated) = store.run_calls("spendco", "q-run", 1).await.unwrap();
    assert!(truncated);
    assert_eq!(newest[0].record.request_id, calls[0].record.request_id);
    assert!(
        store
            .run_calls("spendco", "no-such-run", 10)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let by_model: Vec<(Vec<String>, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.keys.clone(),
                r.requests,
                r.cost_micros,
                r.estimated_requests,
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [
            (vec!["model-a".to_owned()], 2, 120, 0),
            (vec!["model-b".to_owned()], 1, 50, 1)
        ],
        "largest cost first"
    );
    let (rows, _) = store
        .query_usage(query(vec![UsageGroup::Day, UsageGroup::Source]))
        .await
        .unwrap();
    let keys: Vec<Vec<String>> = rows.iter().map(|r| r.keys.clone()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&vec![day.to_string(), "ESTIMATED".to_owned()]));
    assert!(keys.contains(&vec![
        (day + day_us()).to_string(),
        "PROVIDER_REPORTED".to_owned()
    ]));
    // Filters by name and time; a name that matches nothing sums to nothing.
    let (_, total) = store
        .query_usage(UsageQuery {
            project: Some("app".into()),
            virtual_key: Some("ci".into()),
            model: Some("model-a".into()),
            from_us: day,
            to_us: day + day_us(),
            ..query(vec![
                UsageGroup::Provider,
                UsageGroup::VirtualKey,
                UsageGroup::Project,
                UsageGroup::Run,
            ])
        })
        .await
        .unwrap();
    assert_eq!((total.requests, total.cost_micros), (1, 100));
    let (rows, total) = store
        .query_usage(UsageQuery {
            model: Some("nope' OR 1=1 --".into()),
            ..query(vec![UsageGroup::Model])
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(total.requests, 0);
    assert!(matches!(
        store
            .query_usage(UsageQuery {
                organization: "nobody".into(),
                ..query(Vec::new())
            })
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Spend queries read the hourly roll-up for whole hours and raw records at the ends of their
/// range: whatever the range, they answer exactly what the records stored once each add up to,
/// also when a batch re-sends records another batch stored.
async fn usage_rollup_matches_records<S: Store>(store: &S) {
    use sluice_shared::time::{day_us, days_from_civil};
    let hour = 3_600_000_000_i64;
    let start = days_from_civil(2029, 6, 1) * day_us();
    let project = store.get_project("spendco", "app").await.unwrap();
    let key = store.get_virtual_key("spendco", "app", "ci").await.unwrap();
    let records: Vec<UsageRecord> = (0..600_i64)
        .map(|n| {
            // Irregular steps across five hours, so hour edges fall between records.
            let mut record = spend(
                &format!("roll-{n:04}"),
                &project.id,
                &key.id,
                start + n * 29_999_777,
                n % 7 + 1,
            );
            record.model = if n % 3 == 0 { "model-a" } else { "model-b" }.into();
            record.source = if n % 4 == 0 {
                UsageSource::Estimated
            } else {
                UsageSource::ProviderReported
            };
            record.http_status = if n % 10 == 0 { 503 } else { 200 };
            record.input_tokens = n;
            record.output_tokens = 2 * n;
            record.cached_input_tokens = n / 2;
            record
        })
        .collect();
    store
        .commit_usage_batch(
            "roll-1",
            "proxy-a",
            "r1",
            Delivery::First,
            NewUsageBatch::from_records(records[..400].to_vec()),
        )
        .await
        .unwrap();
    // A second batch re-sends a hundred stored records, one of its own twice, and new ones.
    let mut resent = records[300..600].to_vec();
    resent.push(records[550].clone());
    store
        .commit_usage_batch(
            "roll-2",
            "proxy-a",
            "r2",
            Delivery::MayRepeat,
            NewUsageBatch::from_records(resent),
        )
        .await
        .unwrap();
    // requests, input, cached input, output, cost, estimated cost, failed + 1000 × estimated.
    type Sums = (i64, i64, i64, i64, i64, i64, i64);
    let expected = |from: i64, to: i64| -> BTreeMap<String, Sums> {
        let mut sums = BTreeMap::new();
        for r in records
            .iter()
            .filter(|r| r.started_at_us >= from && r.started_at_us < to)
        {
            let sum = sums.entry(r.model.clone()).or_insert((0, 0, 0, 0, 0, 0, 0));
            let estimated = r.source == UsageSource::Estimated;
            sum.0 += 1;
            sum.1 += r.input_tokens;
            sum.2 += r.cached_input_tokens;
            sum.3 += r.output_tokens;
            sum.4 += r.cost_micros;
            sum.5 += if estimated { r.cost_micros } else { 0 };
            sum.6 += i64::from(r.http_status >= 400) + if estimated { 1_000 } else { 0 };
        }
        sums
    };
    for (from, to) in [
        (start, start + 5 * hour),
        (start - hour, start + 6 * hour),
        (start + 17 * 60_000_000, start + 3 * hour + 5 * 60_000_000),
        (start + 10 * 60_000_000, start + 20 * 60_000_000),
        (start + hour - 1, start + 2 * hour + 1),
        (start + hour, start + hour + 1),
    ] {
        let (rows, total) = store
            .query_usage(UsageQuery {
                organization: "spendco".into(),
                from_us: from,
                to_us: to,
                group_by: vec![UsageGroup::Model],
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let answered: BTreeMap<String, Sums> = rows
            .iter()
            .map(|r| {
                (
                    r.keys[0].clone(),
                    (
                        r.requests,
                        r.input_tokens,
                        r.cached_input_tokens,
                        r.output_tokens,
                        r.cost_micros,
                        r.estimated_cost_micros,
                        r.failed_requests + 1_000 * r.estimated_requests,
                    ),
                )
            })
            .collect();
        let expected = expected(from, to);
        assert_eq!(answered, expected, "range [{from}, {to})");
        assert_eq!(
            total.requests,
            expected.values().map(|s| s.0).sum::<i64>(),
            "range [{from}, {to})"
        );
    }
}

/// Leases: grants never exceed what is left after every live lease's unspent allowance,
/// committed usage moves from a lease into spend, and an expired lease's room returns.
async fn leases<S: Store>(store: &S) {
    use sluice_shared::time::{day_us, days_from_civil};
    // After every usage record the budget story dated.
    let now = days_from_civil(2027, 3, 10) * day_us();
    let budget = store
        .create_budget(
            NewBudget {
                target: BudgetTarget {
                    organization: "spendco".into(),
                    project: Some("app".into()),
                    virtual_key: None,
                },
                period: BudgetPeriod::Day,
                limit_micros: 1_000,
                posture: BudgetPosture::Hard,
                alert_percents: vec![100],
            },
            now,
            audit("budget.create", "x"),
        )
        .await
        .unwrap();
    let policy = LeasePolicy {
        ttl_us: 10_000_000,
        share_divisor: 4,
    };
    let window = BudgetPeriod::Day.window().start_us(now);
    let ask = |used: i64, wanted: i64| {
        vec![LeaseUse {
            budget_id: budget.id.clone(),
            window_start_us: window,
            used_micros: used,
            wanted_micros: wanted,
        }]
    };
    let grant = |grants: Vec<LeaseGrant>| grants.into_iter().next().unwrap();
    let a = grant(
        store
            .acquire_leases("proxy-a", 1, ask(0, 0), now, policy)
            .await
            .unwrap(),
    );
    assert_eq!((a.allowance_micros, a.window_start_us), (250, window));
    let b = grant(
        store
            .acquire_leases("proxy-b", 7, ask(0, 0), now, policy)
            .await
            .unwrap(),
    );
    assert_eq!(
        b.allowance_micros, 125,
        "two live leases share what is left"
    );
    // Both keep asking: together they never hold more than the limit.
    let mut total = 0;
    for round in 0..20 {
        let a = grant(
            store
                .acquire_leases("proxy-a", 1, ask(0, 1), now, policy)
                .await
                .unwrap(),
        );
        let b = grant(
            store
                .acquire_leases("proxy-b", 7, ask(0, 1), now, policy)
                .await
                .unwrap(),
        );
        total = a.allowance_micros + b.allowance_micros;
        assert!(total <= 1_000, "round {round}: {total}");
        if a.exhausted && b.exhausted {
            break;
        }
    }
    assert_eq!(total, 1_000);
    let listed = store.list_budgets("spendco", now).await.unwrap();
    let listed = listed.iter().find(|x| x.id == budget.id).unwrap();
    assert_eq!((listed.leased_micros, listed.leases), (1_000, 2));
    // Proxy a's spend arrives: it leaves the lease and enters the spend, the sum unchanged.
    let project = store.get_project("spendco", "app").await.unwrap();
    let mut record = spend("lease-1", &project.id, "none", now, 300);
    record.lease_epoch = 1;
    store
        .commit_usage_batch(
            "lease-batch-1",
            "proxy-a",
            "lh1",
            Delivery::First,
            NewUsageBatch::from_records(vec![record]),
        )
        .await
        .unwrap();
    let listed = store.list_budgets("spendco", now).await.unwrap();
    let listed = listed.iter().find(|x| x.id == budget.id).unwrap();
    assert_eq!((listed.spent_micros, listed.leased_micros), (300, 700));
    // A lease not renewed expires, and what it did not spend can be granted again.
    let later = now + policy.ttl_us + 1;
    let c = grant(
        store
            .acquire_leases("proxy-c", 9, ask(0, 1), later, policy)
            .await
            .unwrap(),
    );
    assert!(c.allowance_micros > 0 && c.allowance_micros <= 700, "{c:?}");
    // A SOFT budget grants nothing: it is never enforced by proxies.
    store
        .update_budget(
            &BudgetTarget {
                organization: "spendco".into(),
                project: Some("app".into()),
                virtual_key: None,
            },
            BudgetPeriod::Day,
            BudgetPatch {
                posture: Some(BudgetPosture::Soft),
                ..Default::default()
            },
            later,
            audit("budget.update", "x"),
        )
        .await
        .unwrap();
    assert!(
        store
            .acquire_leases("proxy-c", 9, ask(0, 1), later, policy)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Rate limits: one per target, carried in the config; grants across proxies never let a
/// window's allowances sum past the limit, a raised limit grants more in the same window, and
/// a new window starts afresh.
async fn rate_limits<S: Store>(store: &S) {
    use sluice_shared::budget_window::Window;
    use sluice_shared::time::{day_us, days_from_civil};
    let now = days_from_civil(2027, 3, 10) * day_us() + 7_000_000;
    let target = RateLimitTarget {
        organization: "spendco".into(),
        project: Some("app".into()),
        ..Default::default()
    };
    let new = || NewRateLimit {
        target: target.clone(),
        requests_per_window: 100,
        tokens_per_window: 0,
        window_seconds: 60,
    };
    let limit = store
        .create_rate_limit(new(), now, audit("rate_limit.create", "x"))
        .await
        .unwrap();
    assert_eq!(limit.target, target);
    assert!(matches!(
        store
            .create_rate_limit(new(), now, audit("rate_limit.create", "x"))
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let config = store.load_config(VirtualKeysRead::All).await.unwrap();
    let carried = config
        .rate_limits
        .iter()
        .find(|r| r.id == limit.id)
        .unwrap();
    assert_eq!(
        (
            carried.requests_per_window,
            carried.window_seconds,
            carried.name.as_str()
        ),
        (100, 60, "spendco/app (60 s)")
    );
    let policy = LeasePolicy {
        ttl_us: 10_000_000,
        share_divisor: 4,
    };
    let window = Window::Seconds(60).start_us(now);
    let ask = |dimension: RateDimension, used: i64, wanted: i64| {
        vec![RateUse {
            rate_limit_id: limit.id.clone(),
            dimension,
            window_start_us: window,
            used,
            wanted,
        }]
    };
    let mut last = (None, None);
    for round in 0..100 {
        let a = store
            .acquire_rate_leases(
                "proxy-a",
                1,
                ask(RateDimension::Requests, 0, 1),
                now,
                policy,
            )
            .await
            .unwrap();
        let b = store
            .acquire_rate_leases(
                "proxy-b",
                7,
                ask(RateDimension::Requests, 0, 1),
                now,
                policy,
            )
            .await
            .unwrap();
        let (a, b) = (a[0].clone(), b[0].clone());
        assert_eq!(a.window_start_us, window);
        assert!(
            a.allowance + b.allowance <= 100,
            "round {round}: {a:?} {b:?}"
        );
        assert_eq!(b.unallocated, 100 - a.allowance - b.allowance);
        let done = a.exhausted && b.exhausted;
        last = (Some(a), Some(b));
        if done {
            break;
        }
    }
    let (Some(a), Some(b)) = last else {
        panic!("no grants")
    };
    assert_eq!(a.allowance + b.allowance, 100);
    let listed = store.list_rate_limits("spendco", now).await.unwrap();
    let listed = listed.iter().find(|r| r.id == limit.id).unwrap();
    assert_eq!((listed.requests_granted, listed.leases), (100, 2));
    // A limit without tokens grants no tokens lease.
    assert!(
        store
            .acquire_rate_leases("proxy-a", 1, ask(RateDimension::Tokens, 0, 5), now, policy)
            .await
            .unwrap()
            .is_empty()
    );
    // Raised: the rest can be granted in the same window.
    store
        .update_rate_limit(
            &target,
            RateLimitPatch {
                requests_per_window: Some(150),
                tokens_per_window: Some(1_000),
                ..Default::default()
            },
            now,
            audit("rate_limit.update", "x"),
        )
        .await
        .unwrap();
    let more = store
        .acquire_rate_leases(
            "proxy-a",
            1,
            ask(RateDimension::Requests, 0, 1),
            now,
            policy,
        )
        .await
        .unwrap();
    assert!(
        more[0].allowance > a.allowance && !more[0].exhausted,
        "{more:?}"
    );
    // Tokens used past the allowance are spoken for: what others get shrinks by them.
    let tokens = store
        .acquire_rate_leases(
            "proxy-a",
            1,
            ask(RateDimension::Tokens, 0, 100),
            now,
            policy,
        )
        .await
        .unwrap();
    let over = tokens[0].allowance + 400;
    store
        .acquire_rate_leases(
            "proxy-a",
            1,
            ask(RateDimension::Tokens, over, 0),
            now,
            policy,
        )
        .await
        .unwrap();
    let other = store
        .acquire_rate_leases("proxy-b", 7, ask(RateDimension::Tokens, 0, 1), now, policy)
        .await
        .unwrap();
    assert!(other[0].allowance + over <= 1_000, "{other:?}");
    assert_eq!(other[0].unallocated, 1_000 - over - other[0].allowance);
    // The next window starts afresh.
    let next = now + 60_000_000;
    let fresh = store
        .acquire_rate_leases(
            "proxy-b",
            7,
            ask(RateDimension::Requests, 0, 1),
            next,
            policy,
        )
        .await
        .unwrap();
    assert_eq!(fresh[0].window_start_us, window + 60_000_000);
    assert!(fresh[0].allowance >= 1 && fresh[0].allowance <= 150 / 4);
    // Deleting a limit ends its leases.
    store
        .delete_rate_limit(&target, audit("rate_limit.delete", "x"))
        .await
        .unwrap();
    assert!(
        store
            .acquire_rate_leases(
                "proxy-b",
                7,
                ask(RateDimension::Requests, 0, 1),
                next,
                policy
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .delete_rate_limit(&target, audit("rate_limit.delete", "x"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

// === SQLite ===

/// Every part of the contract, in order, on one store.
async fn whole_contract<S: Store + 'static>(store: std::sync::Arc<S>) {
    story(store.as_ref()).await;
    injection(store.as_ref()).await;
    usage_ledger(store.as_ref()).await;
    budgets(store.as_ref()).await;
    leases(store.as_ref()).await;
    rate_limits(store.as_ref()).await;
    usage_queries(store.as_ref()).await;
    usage_rollup_matches_records(store.as_ref()).await;
    fleet_versions(store.as_ref()).await;
    config_reads(store.as_ref()).await;
    concurrent_writers(store).await;
}

async fn sqlite_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_story() {
    let (_dir, store) = sqlite_store().await;
    whole_contract(std::sync::Arc::new(store)).await;
}

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_skips_applied_migrations() {
    let (dir, store) = sqlite_store().await;
    store
        .create_organization(
            NewOrganization {
                name: "kept".into(),
                display_name: String::new(),
            },
            audit("organization.create", "kept"),
        )
        .await
        .unwrap();
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let reopened = SqliteStore::open(&url).await.unwrap();
    assert_eq!(
        reopened.get_organization("kept").await.unwrap().name,
        "kept"
    );
}

/// A store from before usage was kept per batch: its records move into their batches when it
/// opens, and a batch resending one of them (a proxy's recovered spool) skips it.
#[tokio::test]
async fn sqlite_usage_kept_per_record_moves_into_its_batches() {
    let (dir, store) = sqlite_store().await;
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for statement in [
        "CREATE TABLE usage_records (request_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, \
         started_at_us BIGINT NOT NULL, project_id TEXT NOT NULL, virtual_key_id TEXT NOT NULL, \
         model TEXT NOT NULL, provider_id TEXT NOT NULL, input_tokens BIGINT NOT NULL, \
         output_tokens BIGINT NOT NULL, cached_input_tokens BIGINT NOT NULL, \
         reasoning_tokens BIGINT NOT NULL, cost_micros BIGINT NOT NULL, \
         latency_ms BIGINT NOT NULL, http_status BIGINT NOT NULL, source TEXT NOT NULL, \
         run_id TEXT NOT NULL DEFAULT '', task_id TEXT NOT NULL DEFAULT '', \
         tags TEXT NOT NULL DEFAULT '{}', lease_epoch BIGINT NOT NULL DEFAULT 0)",
        "INSERT INTO usage_batches (batch_id, proxy_id, payload_hash, record_count, \
         received_at_us) VALUES ('old-1', 'proxy-a', 'h1', 2, 1764000000000000), \
         ('old-2', 'proxy-a', 'h2', 1, 1764000000000000)",
        "INSERT INTO usage_records VALUES \
         ('r1', 'old-1', 1764000000000000, 'p', 'k', 'm', 'pr', 10, 20, 0, 0, 30, 5, 200, \
          'PROVIDER_REPORTED', 'run-1', 'task-1', '{\"env\":\"prod\"}', 7), \
         ('r2', 'old-1', 1764000000000001, 'p', 'k', 'm', 'pr', 1, 2, 0, 0, 3, 5, 200, \
          'ESTIMATED', '', '', '{}', 7), \
         ('r3', 'old-2', 1764000000000002, 'p', 'k', 'm', 'pr', 4, 5, 0, 0, 6, 5, 502, \
          'ESTIMATED', '', '', '{}', 7)",
    ] {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
    let store = SqliteStore::open(&url).await.unwrap();
    let stored = store.list_usage_records("p").await.unwrap();
    let ids: Vec<&str> = stored.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(stored[0].tags, [("env".to_owned(), "prod".to_owned())]);
    assert_eq!(stored[0].run_id, "run-1");
    assert_eq!(stored[2].http_status, 502);
    let mut resent = stored[2].clone();
    resent.request_id = "r4".into();
    let commit = store
        .commit_usage_batch(
            "new-1",
            "proxy-a",
            "h3",
            Delivery::MayRepeat,
            NewUsageBatch::from_records(vec![stored[1].clone(), resent]),
        )
        .await
        .unwrap();
    assert_eq!(commit.outcome, BatchOutcome::Committed);
    let ids: Vec<String> = store
        .list_usage_records("p")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    store.close().await;
    // Opened again, there is nothing left to move.
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(store.list_usage_records("p").await.unwrap().len(), 4);
}

// === PostgreSQL ===

/// A database of its own on the local server, dropped when the test ends.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    async fn create() -> (Self, String) {
        let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("sluice_test_{}", new_id().replace('-', ""));
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (see README: .ci/test starts it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad SLUICE_TEST_POSTGRES_URL"),
        };
        (Self { admin_url, name }, url)
    }

    async fn drop_database(self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_story() {
    let (database, url) = PostgresDatabase::create().await;
    let store = std::sync::Arc::new(PostgresStore::open(&url).await.unwrap());
    whole_contract(store.clone()).await;
    store.close().await;
    database.drop_database().await;
}

/// Two control-plane replicas (two stores on one database) grant leases on one budget
/// concurrently, to many proxies: together they never grant more than the budget (B3.6), and
/// a replica started later sees every lease already granted (B3.4).
async fn replicas_never_overgrant<S: Store + 'static>(
    first: std::sync::Arc<S>,
    second: std::sync::Arc<S>,
) {
    first
        .create_organization(
            NewOrganization {
                name: "replicas".into(),
                display_name: String::new(),
            },
            audit("organization.create", "replicas"),
        )
        .await
        .unwrap();
    let budget = first
        .create_budget(
            NewBudget {
                target: BudgetTarget {
                    organization: "replicas".into(),
                    project: None,
                    virtual_key: None,
                },
                period: BudgetPeriod::Total,
                limit_micros: 100_000,
                posture: BudgetPosture::Hard,
                alert_percents: vec![100],
            },
            sluice_shared::time::now_us(),
            audit("budget.create", "replicas"),
        )
        .await
        .unwrap();
    let policy = LeasePolicy {
        ttl_us: 60_000_000,
        share_divisor: 4,
    };
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let store = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let budget_id = budget.id.clone();
            tokio::spawn(async move {
                let mut allowance = 0;
                for _ in 0..5 {
                    let grants = store
                        .acquire_leases(
                            &format!("proxy-{}", n % 16),
                            1 + n / 16,
                            vec![LeaseUse {
                                budget_id: budget_id.clone(),
                                window_start_us: 0,
                                used_micros: allowance,
                                wanted_micros: 1_000,
                            }],
                            sluice_shared::time::now_us(),
                            policy,
                        )
                        .await
                        .unwrap();
                    allowance = grants[0].allowance_micros;
                }
                allowance
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert!(granted <= 100_000, "granted {granted} of 100 000");
    assert!(granted >= 90_000, "most of it was grantable: {granted}");
    let listed = second
        .list_budgets("replicas", sluice_shared::time::now_us())
        .await
        .unwrap();
    assert_eq!(listed[0].leased_micros, granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_replicas_never_overgrant() {
    let (dir, first) = sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let second = SqliteStore::open(&url).await.unwrap();
    replicas_never_overgrant(std::sync::Arc::new(first), std::sync::Arc::new(second)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_never_overgrant() {
    let (database, url) = PostgresDatabase::create().await;
    let first = std::sync::Arc::new(PostgresStore::open(&url).await.unwrap());
    let second = std::sync::Arc::new(PostgresStore::open(&url).await.unwrap());
    replicas_never_overgrant(first.clone(), second.clone()).await;
    first.close().await;
    second.close().await;
    database.drop_database().await;
}

// === PostgreSQL over TLS ===

/// Turns TLS on in the local cluster with a certificate for 127.0.0.1 and localhost from a CA
/// made here, and returns that CA's file (in `dir`). The server's files live in the cluster's
/// data directory, owned by its user, as PostgreSQL requires of a key; `ssl = on` changes
/// nothing for plaintext clients.
/// A throwaway CA.
fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn postgres_with_tls(admin_url: &str, dir: &std::path::Path) -> std::path::PathBuf {
    use rcgen::{CertificateParams, KeyPair};
    let ca = test_ca();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.join("postgres-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let (data_dir,): (String,) = sqlx::query_as("SHOW data_directory")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let data_dir = std::path::PathBuf::from(data_dir);
    let owner = std::fs::metadata(&data_dir).unwrap();
    let (uid, gid) = (
        std::os::unix::fs::MetadataExt::uid(&owner),
        std::os::unix::fs::MetadataExt::gid(&owner),
    );
    let place = |name: &str, contents: &str| {
        let path = data_dir.join(name);
        let staged = data_dir.join(format!("{name}.staged"));
        std::fs::write(&staged, contents).unwrap();
        std::os::unix::fs::chown(&staged, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::rename(&staged, &path).unwrap();
        path
    };
    let key_file = place("sluice-test-server.key", &key.serialize_pem());
    let cert_file = place("sluice-test-server.crt", &cert.pem());
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert_file.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_file.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    ca_file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_story_over_tls_with_verify_full() {
    let (database, url) = PostgresDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = postgres_with_tls(&database.admin_url, dir.path()).await;
    let tls_url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    // The reload is asynchronous: wait until the server offers TLS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut connection = loop {
        match sqlx::PgConnection::connect(&tls_url).await {
            Ok(connection) => break connection,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "no TLS: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(encrypted, "the session is not encrypted");
    connection.close().await.unwrap();

    // verify-full checks the certificate: a CA that did not issue it is refused.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = stranger_dir.path().join("stranger.crt");
    std::fs::write(&stranger, test_ca().pem()).unwrap();
    let refused = PostgresStore::open(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        stranger.display()
    ))
    .await;
    assert!(
        refused.is_err(),
        "a server certificate from an unknown CA was accepted"
    );

    let store = std::sync::Arc::new(PostgresStore::open(&tls_url).await.unwrap());
    whole_contract(store.clone()).await;
    store.close().await;
    database.drop_database().await;
}
