//! Who is calling: the virtual key (found where the endpoint's SDKs send it) checked with one
//! SHA-256 and one hash-map lookup in the current tables, and the model the caller may use.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;
use crate::request::metadata::RequestMetadata;
use crate::routing::tables::{ModelEntry, RoutingTables};

/// Finds the virtual key in a request's head, if it carries one.
pub type KeyLocation = for<'r> fn(&'r http::request::Parts) -> Option<&'r str>;

pub use crate::routing::tables::Caller;

/// Who is calling (by the family's way of carrying the key) and the request's metadata headers.
pub fn identify<'t>(
    tables: &'t RoutingTables,
    parts: &http::request::Parts,
    key: KeyLocation,
) -> Result<(Caller<'t>, RequestMetadata), GatewayError> {
    let caller = authenticate_key(tables, key(parts), sluice_shared::time::now_us())?;
    Ok((caller, crate::request::metadata::read(&parts.headers)?))
}

pub fn authenticate_key<'t>(
    tables: &'t RoutingTables,
    key: Option<&str>,
    now_us: i64,
) -> Result<Caller<'t>, GatewayError> {
    let key = key.ok_or_else(|| {
        GatewayError::new(
            ErrorCode::InvalidApiKey,
            "missing virtual key: send `Authorization: Bearer sk-sluice-...`",
        )
    })?;
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let entry = tables.virtual_key(&hash).ok_or_else(|| {
        GatewayError::new(ErrorCode::InvalidApiKey, "invalid or revoked virtual key: check the key, or create one with `sluicectl vkey create`")
    })?;
    if entry.expires_at_us != 0 && entry.expires_at_us <= now_us {
        return Err(GatewayError::new(
            ErrorCode::InvalidApiKey,
            "this virtual key has expired: create a new one",
        ));
    }
    let project = tables
        .projects
        .get(entry.project)
        .ok_or_else(|| GatewayError::new(ErrorCode::Internal, "virtual key without project"))?;
    Ok(Caller {
        key: entry,
        project,
    })
}

/// The token of `Authorization: Bearer <token>`, the way OpenAI's SDKs (and most others)
/// send a key.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The model a request names (`default`: the project's), if its key may use it.
pub fn resolve_model<'t>(
    tables: &'t RoutingTables,
    caller: &Caller<'t>,
    requested: &str,
) -> Result<&'t ModelEntry, GatewayError> {
    let name = if requested == "default" {
        if caller.project.default_model.is_empty() {
            return Err(GatewayError::new(
                ErrorCode::UnsupportedModel,
                "this project has no default model: name a model, or set one with `sluicectl project update --default-model`",
            )
            .with_param("model"));
        }
        caller.project.default_model.as_str()
    } else {
        requested
    };
    if caller
        .key
        .allowed_models
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(name))
    {
        return Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            format!("this virtual key may not use model '{name}'"),
        )
        .with_param("model"));
    }
    tables.model(&caller.project.org_id, name).ok_or_else(|| {
        GatewayError::new(
            ErrorCode::UnsupportedModel,
            format!("model '{name}' does not exist: list models with GET /v1/models"),
        )
        .with_param("model")
    })
}
