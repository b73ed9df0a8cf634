//! Snapshot → tables, table-driven like go-control-plane's consistency checks: a valid
//! snapshot builds, and each rule turns one mutation of it into a refusal that says what is
//! wrong (the text the NACK carries back to the control plane).

use sluice_proto::common::v1 as common;
use sluice_proto::config::v1 as pb;
use sluice_shared::sealing::{SealingKeyPair, SecretSealer};
use sluice_shared::secret::SecretString;

use super::tables::{InvalidSnapshot, RoutingTables};

/// The fixture's virtual key (its snapshot holds only the hash).
pub(crate) const VIRTUAL_KEY: &str = "sk-sluice-fixture";

/// A valid snapshot (one org, LIVE project, OpenAI provider with a key, model `m`, a virtual key
/// and a budget), and the proxy key pair its secrets are sealed to; other tests start from it.
pub(crate) struct Fixture {
    pub sealing: SealingKeyPair,
    pub snapshot: pb::Snapshot,
}

pub(crate) fn fixture() -> Fixture {
    let sealing = SealingKeyPair::generate();
    let sealer = SecretSealer::for_recipient(&sealing.public_bytes()).unwrap(); // infallible: a freshly generated key pair's public half is always a valid recipient
    let sealed = sealer
        .seal("k1", &SecretString::new("sk-test".into()))
        .unwrap(); // infallible: sealing a short secret to a valid recipient cannot fail
    let snapshot = pb::Snapshot {
        version: 3,
        generated_at_us: 1,
        sealing_public_key: sealer.sender_public().to_vec(),
        projects: vec![pb::ProjectConfig {
            id: "p1".into(),
            organization_id: "o1".into(),
            name: "web".into(),
            posture: common::Posture::Live as i32,
            default_model: "m".into(),
            content_capture_bytes: 0,
            metrics_by_key: false,
        }],
        providers: vec![pb::ProviderConfig {
            id: "pr1".into(),
            organization_id: "o1".into(),
            name: "openai".into(),
            r#type: common::ProviderType::Openai as i32,
            base_url: "https://api.openai.com/v1".into(),
            timeout_ms: 1000,
            keys: vec![pb::ProviderKeyConfig {
                id: "k1".into(),
                state: common::ProviderKeyState::Active as i32,
                sealed_secret: sealed,
            }],
            ..Default::default()
        }],
        models: vec![pb::ModelConfig {
            id: "m1".into(),
            organization_id: "o1".into(),
            name: "m".into(),
            deployments: vec![pb::DeploymentConfig {
                provider_id: "pr1".into(),
                upstream_model: "gpt-4o-mini".into(),
                weight: 1,
                priority: 0,
            }],
            ..Default::default()
        }],
        virtual_keys: vec![pb::VirtualKeyConfig {
            id: "v1".into(),
            project_id: "p1".into(),
            key_hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(VIRTUAL_KEY)),
            ..Default::default()
        }],
        budgets: vec![pb::BudgetConfig {
            id: "b1".into(),
            scope_id: "p1".into(),
            period: common::BudgetPeriod::Month as i32,
            name: "o1/web (month)".into(),
        }],
        base_version: 0,
        removed_key_hashes: Vec::new(),
        rate_limits: vec![pb::RateLimitConfig {
            id: "r1".into(),
            scope_id: "p1".into(),
            requests_per_window: 10,
            tokens_per_window: 0,
            window_seconds: 60,
            name: "o1/web (60 s)".into(),
        }],
    };
    Fixture { sealing, snapshot }
}

type Mutation = fn(&mut pb::Snapshot);

#[test]
fn every_rule_refuses_what_it_guards_and_says_so() -> Result<(), InvalidSnapshot> {
    let base = fixture();
    RoutingTables::build(&base.snapshot, &base.sealing, &[])?;
    let cases: &[(&str, Mutation, &str)] = &[
        ("version 0", |s| s.version = 0, "version 0"),
        (
            "no sealing key",
            |s| s.sealing_public_key.clear(),
            "sealing key",
        ),
        (
            "a provider twice",
            |s| s.providers.push(s.providers[0].clone()),
            "appears twice",
        ),
        (
            "a project twice",
            |s| s.projects.push(s.projects[0].clone()),
            "appears twice",
        ),
        (
            "unknown posture",
            |s| s.projects[0].posture = 9,
            "unknown posture",
        ),
        (
            "unspecified posture",
            |s| s.projects[0].posture = 0,
            "unknown posture",
        ),
        (
            "a rate limit without a window",
            |s| s.rate_limits[0].window_seconds = 0,
            "rate limit without",
        ),
        (
            "two rate limits on one scope",
            |s| {
                let mut second = s.rate_limits[0].clone();
                second.id = "r2".into();
                s.rate_limits.push(second);
            },
            "second limit on scope p1",
        ),
        (
            "unknown provider type",
            |s| s.providers[0].r#type = 42,
            "unknown type",
        ),
        (
            "base URL not http(s)",
            |s| s.providers[0].base_url = "ftp://x.example".into(),
            "plain http(s)",
        ),
        (
            "base URL with a query",
            |s| s.providers[0].base_url = "https://x.example/?k=1".into(),
            "plain http(s)",
        ),
        (
            "base URL unparsable",
            |s| s.providers[0].base_url = "::".into(),
            "base_url",
        ),
        (
            "bad header name",
            |s| {
                s.providers[0]
                    .extra_headers
                    .insert("bad header".into(), "v".into());
            },
            "bad header name",
        ),
        (
            "bad header value",
            |s| {
                s.providers[0]
                    .extra_headers
                    .insert("x-ok".into(), "line\nbreak".into());
            },
            "bad value for header",
        ),
        (
            "unknown key state",
            |s| s.providers[0].keys[0].state = 7,
            "unknown state",
        ),
        (
            "a sealed key that does not open",
            |s| s.providers[0].keys[0].sealed_secret = vec![1, 2, 3],
            "provider key k1",
        ),
        (
            "a model name twice",
            |s| s.models.push(s.models[0].clone()),
            "appears twice",
        ),
        (
            "a deployment without a model",
            |s| s.models[0].deployments[0].upstream_model.clear(),
            "no upstream model",
        ),
        (
            "a negative price",
            |s| s.models[0].input_price_micros_per_mtok = -1,
            "negative price",
        ),
        (
            "a key hash that is not hex",
            |s| s.virtual_keys[0].key_hash = "xyz".into(),
            "64 hex digits",
        ),
        (
            "a key for a missing project",
            |s| s.virtual_keys[0].project_id = "nope".into(),
            "missing project",
        ),
        (
            "a key hash twice",
            |s| {
                let mut twin = s.virtual_keys[0].clone();
                twin.id = "v2".into();
                s.virtual_keys.push(twin);
            },
            "appears twice",
        ),
        (
            "unknown budget period",
            |s| s.budgets[0].period = 0,
            "unknown period",
        ),
        (
            "a budget without a scope",
            |s| s.budgets[0].scope_id.clear(),
            "without an id or a scope",
        ),
    ];
    for (rule, mutate, says) in cases {
        let mut snapshot = base.snapshot.clone();
        mutate(&mut snapshot);
        let refused = RoutingTables::build(&snapshot, &base.sealing, &[])
            .err()
            .unwrap_or_else(|| panic!("{rule}: accepted"));
        assert!(refused.0.contains(says), "{rule}: {refused}");
    }
    // A proxy's own allowlist of upstream hosts is a rule too.
    let refused =
        RoutingTables::build(&base.snapshot, &base.sealing, &["api.anthropic.com".into()]).err();
    assert!(
        refused.as_ref().is_some_and(|r| r.0.contains("allowlist")),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn what_is_not_an_error_is_left_out_not_refused() -> Result<(), InvalidSnapshot> {
    let base = fixture();
    let mut snapshot = base.snapshot.clone();
    // A deployment on a provider absent from the snapshot (inactive) is unusable, not wrong;
    // a revoked key is not served.
    snapshot.models[0].deployments.push(pb::DeploymentConfig {
        provider_id: "gone".into(),
        upstream_model: "x".into(),
        weight: 1,
        priority: 1,
    });
    snapshot.providers[0].keys[0].state = common::ProviderKeyState::Revoked as i32;
    let tables = RoutingTables::build(&snapshot, &base.sealing, &[])?;
    assert_eq!(tables.models[0].deployments.len(), 1);
    assert!(tables.providers[0].keys.is_empty());
    Ok(())
}

fn virtual_key(id: &str, project: &str, secret: &str) -> pb::VirtualKeyConfig {
    pb::VirtualKeyConfig {
        id: id.into(),
        project_id: project.into(),
        key_hash: hash_hex(secret),
        ..Default::default()
    }
}

fn hash_hex(secret: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret))
}

fn hash(secret: &str) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(secret).into()
}

/// A snapshot in parts serves only whole; a difference keeps the served keys, drops the removed
/// ones, replaces the changed ones, and follows projects that moved.
#[test]
fn parts_and_differences_build_the_same_tables_as_a_whole_snapshot() -> Result<(), InvalidSnapshot>
{
    let base = fixture();
    let mut first = base.snapshot.clone();
    first.virtual_keys.push(virtual_key("v2", "p1", "second"));
    let mut builder = RoutingTables::begin(&first, None, &base.sealing, &[])?;
    let later = pb::Snapshot {
        version: first.version,
        virtual_keys: vec![virtual_key("v3", "p1", "third")],
        ..Default::default()
    };
    builder.add_keys(&later.virtual_keys)?;
    let duplicate = builder.add_keys(&[virtual_key("v9", "p1", "third")]);
    assert!(duplicate.unwrap_err().0.contains("appears twice"));
    let serving = builder.finish();
    assert_eq!(serving.virtual_key_count(), 3);

    // The difference: a new project sorted before the old one, v2 revoked, v3 given a model
    // list, v4 new in the new project.
    let mut difference = base.snapshot.clone();
    difference.version = 4;
    difference.base_version = 3;
    difference.projects.insert(
        0,
        pb::ProjectConfig {
            id: "p0".into(),
            organization_id: "o1".into(),
            name: "batch".into(),
            posture: common::Posture::Mock as i32,
            default_model: String::new(),
            content_capture_bytes: 0,
            metrics_by_key: false,
        },
    );
    difference.removed_key_hashes = vec![hash_hex("second")];
    let mut v3 = virtual_key("v3", "p1", "third");
    v3.allowed_models = vec!["m".into()];
    difference.virtual_keys = vec![v3, virtual_key("v4", "p0", "fourth")];
    let next = RoutingTables::begin(&difference, Some(&serving), &base.sealing, &[])?.finish();
    assert_eq!(next.version, 4);
    assert_eq!(next.virtual_key_count(), 3);
    assert!(next.virtual_key(&hash("second")).is_none(), "revoked");
    let kept = present(next.virtual_key(&hash(VIRTUAL_KEY)), "the kept key")?;
    assert_eq!(
        next.projects[kept.project].id, "p1",
        "moved with its project"
    );
    let changed = present(next.virtual_key(&hash("third")), "the changed key")?;
    assert!(
        changed
            .allowed_models
            .as_ref()
            .is_some_and(|models| models.contains("m"))
    );
    let added = present(next.virtual_key(&hash("fourth")), "the added key")?;
    assert_eq!(next.projects[added.project].id, "p0");

    // What is saved is the whole version again.
    let saved: Vec<pb::VirtualKeyConfig> = next.virtual_key_configs().collect();
    let mut whole = next.source().clone();
    assert_eq!(whole.base_version, 0);
    assert!(whole.removed_key_hashes.is_empty());
    whole.virtual_keys = saved;
    let rebuilt = RoutingTables::build(&whole, &base.sealing, &[])?;
    assert_eq!(rebuilt.virtual_key_count(), 3);
    assert_eq!(
        rebuilt.virtual_key(&hash("fourth")).map(|k| &*k.id),
        Some("v4")
    );

    // A difference from a version this proxy does not serve is refused.
    difference.base_version = 2;
    let refused = RoutingTables::begin(&difference, Some(&serving), &base.sealing, &[]);
    assert!(refusal(refused).contains("a difference from version 2"));
    difference.base_version = 3;
    let refused = RoutingTables::begin(&difference, None, &base.sealing, &[]);
    assert!(refusal(refused).contains("serves 0"));
    // A kept key whose project vanished is refused, not served without one.
    let mut orphaning = difference.clone();
    orphaning.projects.retain(|p| p.id != "p1");
    orphaning.virtual_keys.clear();
    let refused = RoutingTables::begin(&orphaning, Some(&serving), &base.sealing, &[]);
    assert!(refusal(refused).contains("its project is gone"));
    Ok(())
}

fn present<T>(found: Option<T>, what: &str) -> Result<T, InvalidSnapshot> {
    found.ok_or_else(|| InvalidSnapshot(format!("{what} is missing")))
}

/// Why `begin` refused, or nothing when it did not.
fn refusal<T>(begun: Result<T, InvalidSnapshot>) -> String {
    begun.err().map(|refused| refused.0).unwrap_or_default()
}

#[test]
fn a_rate_limit_counts_only_what_it_limits_for_its_scope() -> Result<(), InvalidSnapshot> {
    let base = fixture();
    let tables = RoutingTables::build(&base.snapshot, &base.sealing, &[])?;
    let counted: Vec<&str> = tables
        .rate_counters_for(["o1", "p1", "v1", "m1"])
        .map(|c| c.lease_id.as_str())
        .collect();
    // Its tokens are not limited (0), so only its requests are a count.
    assert_eq!(counted, ["r1/requests"]);
    assert_eq!(
        tables.rate_counters_for(["o2", "p2", "v2", "m2"]).count(),
        0
    );
    Ok(())
}
