//! `GET /v1/models`: the models the caller's key may use, in OpenAI's list shape. OpenAI's
//! SDKs send the key as a Bearer token; errors in OpenAI's shape.

use http::{HeaderMap, HeaderValue, Response, header};
use serde_json::json;
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;
use crate::gateway::Gateway;
use crate::http_body::{Body, full};
use crate::pipeline::identify::authenticate_key;

pub fn list(gateway: &Gateway, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let tables = gateway.tables.load_full().ok_or_else(|| {
        GatewayError::new(
            ErrorCode::NotReady,
            "this proxy has no config yet; retry shortly",
        )
    })?;
    let key = crate::pipeline::identify::bearer(headers);
    let caller = authenticate_key(&tables, key, sluice_shared::time::now_us())?;
    let mut data: Vec<_> = tables
        .org_models(&caller.project.org_id)
        .filter(|m| caller.key.allowed_models.as_ref().is_none_or(|allowed| allowed.contains(&m.name)))
        .map(|m| json!({"id": m.name, "object": "model", "created": m.created_at_s, "owned_by": "sluice"}))
        .collect();
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let mut response = Response::new(full(json!({"object": "list", "data": data}).to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
