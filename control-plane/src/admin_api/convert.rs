//! Domain ↔ proto, at the edge only.

use sluice_proto::admin::v1 as pb;
use sluice_proto::common::v1 as common;
use tonic::Status;

use crate::store::{self, HealthSource, KeyHealth, KeyState, Posture, ProviderKind, TokenScope};

impl From<store::Organization> for pb::Organization {
    fn from(o: store::Organization) -> Self {
        Self {
            id: o.id,
            name: o.name,
            display_name: o.display_name,
            created_at_us: o.created_at_us,
            updated_at_us: o.updated_at_us,
        }
    }
}

impl From<store::Project> for pb::Project {
    fn from(p: store::Project) -> Self {
        Self {
            id: p.id,
            organization: p.organization,
            name: p.name,
            display_name: p.display_name,
            posture: posture_to_proto(p.posture) as i32,
            default_model: p.default_model,
            content_capture_bytes: p.content_capture_bytes,
            metrics_by_key: p.metrics_by_key,
            created_at_us: p.created_at_us,
            updated_at_us: p.updated_at_us,
        }
    }
}

impl From<store::Provider> for pb::Provider {
    fn from(p: store::Provider) -> Self {
        Self {
            id: p.id,
            organization: p.organization,
            name: p.name,
            r#type: kind_to_proto(p.kind) as i32,
            base_url: p.base_url,
            api_version: p.api_version,
            timeout_ms: p.timeout_ms,
            extra_headers: p.extra_headers.into_iter().collect(),
            active: p.active,
            allow_private_network: p.allow_private_network,
            created_at_us: p.created_at_us,
            updated_at_us: p.updated_at_us,
            retry: Some(p.retry.into()),
            timeouts: Some(p.timeouts.into()),
            send_trace_context: p.send_trace_context,
        }
    }
}

/// `From` both ways between two structs whose fields carry the same names and types.
macro_rules! convert_fields {
    ($a:ty, $b:ty, $($field:ident),+) => {
        impl From<$a> for $b {
            fn from(from: $a) -> Self {
                Self { $($field: from.$field),+ }
            }
        }
        impl From<$b> for $a {
            fn from(from: $b) -> Self {
                Self { $($field: from.$field),+ }
            }
        }
    };
}

convert_fields!(
    store::RetrySettings,
    common::RetryPolicy,
    max_attempts,
    attempts_per_deployment,
    attempts_per_key,
    backoff_base_ms,
    backoff_max_ms,
    max_retry_after_ms
);

convert_fields!(
    store::TimeoutSettings,
    common::TimeoutPolicy,
    connect_ms,
    first_byte_ms,
    idle_ms,
    total_ms
);

impl From<store::ProviderKey> for pb::ProviderKey {
    fn from(k: store::ProviderKey) -> Self {
        Self {
            id: k.id,
            organization: k.organization,
            provider: k.provider,
            name: k.name,
            state: match k.state {
                KeyState::Active => pb::ProviderKeyState::Active,
                KeyState::Retiring => pb::ProviderKeyState::Retiring,
                KeyState::Revoked => pb::ProviderKeyState::Revoked,
            } as i32,
            last_four: k.last_four,
            fingerprint: k.fingerprint,
            health: match k.health {
                KeyHealth::Unknown => pb::ProviderKeyHealth::Unknown,
                KeyHealth::Valid => pb::ProviderKeyHealth::Valid,
                KeyHealth::InvalidCredentials => pb::ProviderKeyHealth::InvalidCredentials,
                KeyHealth::NoModelAccess => pb::ProviderKeyHealth::NoModelAccess,
                KeyHealth::Unreachable => pb::ProviderKeyHealth::Unreachable,
                KeyHealth::Unexpected => pb::ProviderKeyHealth::Unexpected,
            } as i32,
            master_key_version: k.master_key_version,
            created_at_us: k.created_at_us,
            updated_at_us: k.updated_at_us,
            health_learned_at_us: k.health_learned_at_us,
            health_source: match k.health_source {
                None => pb::HealthSource::Unspecified,
                Some(HealthSource::KeyTest) => pb::HealthSource::KeyTest,
                Some(HealthSource::Traffic) => pb::HealthSource::Traffic,
            } as i32,
        }
    }
}

impl From<store::Deployment> for pb::Deployment {
    fn from(d: store::Deployment) -> Self {
        Self {
            provider: d.provider,
            upstream_model: d.upstream_model,
            weight: d.weight,
            priority: d.priority,
        }
    }
}

impl From<store::Model> for pb::Model {
    fn from(m: store::Model) -> Self {
        Self {
            id: m.id,
            organization: m.organization,
            name: m.name,
            deployments: m.deployments.into_iter().map(Into::into).collect(),
            input_price_micros_per_mtok: m.input_price_micros_per_mtok,
            output_price_micros_per_mtok: m.output_price_micros_per_mtok,
            context_window: m.context_window,
            created_at_us: m.created_at_us,
            updated_at_us: m.updated_at_us,
            cached_input_price_micros_per_mtok: m.cached_input_price_micros_per_mtok,
            price_source: match m.price_source {
                store::PriceSource::Catalog => pb::PriceSource::Catalog,
                store::PriceSource::Operator => pb::PriceSource::Operator,
            } as i32,
            catalog_id: m.catalog_id,
            retry: Some(m.retry.into()),
            timeouts: Some(m.timeouts.into()),
        }
    }
}

impl From<store::VirtualKey> for pb::VirtualKey {
    fn from(v: store::VirtualKey) -> Self {
        Self {
            id: v.id,
            organization: v.organization,
            project: v.project,
            name: v.name,
            prefix: v.prefix,
            allowed_models: v.allowed_models,
            expires_at_us: v.expires_at_us,
            revoked_at_us: v.revoked_at_us,
            created_at_us: v.created_at_us,
            updated_at_us: v.updated_at_us,
        }
    }
}

impl From<store::AdminToken> for pb::AdminToken {
    fn from(t: store::AdminToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scope: scope_to_proto(t.scope) as i32,
            prefix: t.prefix,
            created_at_us: t.created_at_us,
            revoked_at_us: t.revoked_at_us,
            organization: t.organization.unwrap_or_default(),
        }
    }
}

impl From<store::AuditEvent> for pb::AuditEvent {
    fn from(e: store::AuditEvent) -> Self {
        Self {
            id: e.id,
            at_us: e.at_us,
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
        }
    }
}

impl From<store::ProxyStatus> for pb::Proxy {
    fn from(p: store::ProxyStatus) -> Self {
        Self {
            proxy_id: p.proxy_id,
            address: p.address,
            connected: p.connected,
            acked_version: p.acked_version,
            nacked_version: p.nacked_version,
            nack_reason: p.nack_reason,
            last_seen_at_us: p.last_seen_us,
            first_seen_at_us: p.first_seen_us,
            left_out: p
                .left_out
                .iter()
                .map(|out| {
                    format!(
                        "{} {} until {}",
                        out.kind,
                        out.name,
                        sluice_shared::time::rfc3339(out.until_us)
                    )
                })
                .collect(),
        }
    }
}

pub fn scope_to_proto(scope: TokenScope) -> pb::TokenScope {
    match scope {
        TokenScope::Admin => pb::TokenScope::Admin,
        TokenScope::ReadOnly => pb::TokenScope::ReadOnly,
        TokenScope::DataPlane => pb::TokenScope::DataPlane,
        TokenScope::OrgAdmin => pb::TokenScope::OrgAdmin,
        TokenScope::OrgReadOnly => pb::TokenScope::OrgReadOnly,
    }
}

pub fn posture_to_proto(posture: Posture) -> pb::Posture {
    match posture {
        Posture::Mock => pb::Posture::Mock,
        Posture::Live => pb::Posture::Live,
    }
}

fn kind_to_proto(kind: ProviderKind) -> pb::ProviderType {
    match kind {
        ProviderKind::OpenAi => pb::ProviderType::Openai,
        ProviderKind::Anthropic => pb::ProviderType::Anthropic,
        ProviderKind::Google => pb::ProviderType::Google,
        ProviderKind::AzureOpenAi => pb::ProviderType::AzureOpenai,
        ProviderKind::Vllm => pb::ProviderType::Vllm,
        ProviderKind::Custom => pb::ProviderType::Custom,
    }
}

fn unspecified(field: &str) -> Status {
    Status::invalid_argument(format!("{field}: is required"))
}

pub fn posture_from_proto(field: &str, value: i32) -> Result<Posture, Status> {
    match pb::Posture::try_from(value) {
        Ok(pb::Posture::Mock) => Ok(Posture::Mock),
        Ok(pb::Posture::Live) => Ok(Posture::Live),
        Ok(pb::Posture::Unspecified) => Err(unspecified(field)),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: unknown value {value}"
        ))),
    }
}

pub fn kind_from_proto(field: &str, value: i32) -> Result<ProviderKind, Status> {
    match pb::ProviderType::try_from(value) {
        Ok(pb::ProviderType::Openai) => Ok(ProviderKind::OpenAi),
        Ok(pb::ProviderType::Anthropic) => Ok(ProviderKind::Anthropic),
        Ok(pb::ProviderType::Google) => Ok(ProviderKind::Google),
        Ok(pb::ProviderType::AzureOpenai) => Ok(ProviderKind::AzureOpenAi),
        Ok(pb::ProviderType::Vllm) => Ok(ProviderKind::Vllm),
        Ok(pb::ProviderType::Custom) => Ok(ProviderKind::Custom),
        Ok(pb::ProviderType::Unspecified) => Err(unspecified(field)),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: unknown value {value}"
        ))),
    }
}

pub fn scope_from_proto(field: &str, value: i32) -> Result<TokenScope, Status> {
    match pb::TokenScope::try_from(value) {
        Ok(pb::TokenScope::Admin) => Ok(TokenScope::Admin),
        Ok(pb::TokenScope::ReadOnly) => Ok(TokenScope::ReadOnly),
        Ok(pb::TokenScope::DataPlane) => Ok(TokenScope::DataPlane),
        Ok(pb::TokenScope::OrgAdmin) => Ok(TokenScope::OrgAdmin),
        Ok(pb::TokenScope::OrgReadOnly) => Ok(TokenScope::OrgReadOnly),
        Ok(pb::TokenScope::Unspecified) => Err(unspecified(field)),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: unknown value {value}"
        ))),
    }
}
