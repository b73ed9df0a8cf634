//! Virtual-key authentication: one SHA-256 and one hash-map lookup in the current tables.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;
use crate::routing::tables::{ProjectEntry, RoutingTables, VirtualKeyEntry};

/// The caller, resolved against one version of the tables.
pub struct Caller<'t> {
    pub key: &'t VirtualKeyEntry,
    pub project: &'t ProjectEntry,
}

pub fn authenticate<'t>(
    tables: &'t RoutingTables,
    headers: &HeaderMap,
    now_us: i64,
) -> Result<Caller<'t>, GatewayError> {
    authenticate_key(tables, bearer(headers), now_us)
}

/// For Anthropic's native endpoint: its SDKs send the key as `x-api-key`; `Authorization:
/// Bearer` works too.
pub fn authenticate_anthropic<'t>(
    tables: &'t RoutingTables,
    headers: &HeaderMap,
    now_us: i64,
) -> Result<Caller<'t>, GatewayError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| bearer(headers));
    authenticate_key(tables, key, now_us)
}

/// For Gemini's native endpoints: its SDKs send the key as `x-goog-api-key` or `?key=`;
/// `Authorization: Bearer` works too. The key never travels further (the upstream URL is the
/// provider's, without this query).
pub fn authenticate_gemini<'t>(
    tables: &'t RoutingTables,
    headers: &http::HeaderMap,
    uri: &http::Uri,
    now_us: i64,
) -> Result<Caller<'t>, GatewayError> {
    let from_query = uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .filter(|k| !k.is_empty())
    });
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or(from_query)
        .or_else(|| bearer(headers));
    authenticate_key(tables, key, now_us)
}

fn authenticate_key<'t>(
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, Uri};

    use super::*;
    use crate::routing::tests::{VIRTUAL_KEY, fixture};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    /// Where each endpoint's SDK puts the virtual key: OpenAI's as a Bearer token; Anthropic's
    /// as `x-api-key` (or Bearer); Gemini's as `x-goog-api-key`, `?key=` or Bearer.
    #[test]
    fn each_endpoint_finds_the_key_where_its_sdk_sends_it() {
        let fixture = fixture();
        let tables = RoutingTables::build(&fixture.snapshot, &fixture.sealing, &[]).unwrap();
        let bearer = format!("Bearer {VIRTUAL_KEY}");
        let plain = Uri::from_static("/v1beta/models/m:generateContent");
        let query: Uri = format!("/v1beta/models/m:generateContent?key={VIRTUAL_KEY}")
            .parse()
            .unwrap();
        let found =
            |result: Result<Caller<'_>, GatewayError>| result.map(|c| c.key.id.clone()).ok();

        assert_eq!(
            found(authenticate(
                &tables,
                &headers(&[("authorization", &bearer)]),
                0
            )),
            Some("v1".into())
        );
        assert_eq!(
            found(authenticate(
                &tables,
                &headers(&[("x-api-key", VIRTUAL_KEY)]),
                0
            )),
            None
        );

        assert_eq!(
            found(authenticate_anthropic(
                &tables,
                &headers(&[("x-api-key", VIRTUAL_KEY)]),
                0
            )),
            Some("v1".into())
        );
        assert_eq!(
            found(authenticate_anthropic(
                &tables,
                &headers(&[("authorization", &bearer)]),
                0
            )),
            Some("v1".into())
        );

        assert_eq!(
            found(authenticate_gemini(
                &tables,
                &headers(&[("x-goog-api-key", VIRTUAL_KEY)]),
                &plain,
                0
            )),
            Some("v1".into())
        );
        assert_eq!(
            found(authenticate_gemini(&tables, &HeaderMap::new(), &query, 0)),
            Some("v1".into())
        );
        assert_eq!(
            found(authenticate_gemini(
                &tables,
                &headers(&[("authorization", &bearer)]),
                &plain,
                0
            )),
            Some("v1".into())
        );

        for refused in [
            authenticate(&tables, &HeaderMap::new(), 0),
            authenticate(
                &tables,
                &headers(&[("authorization", "Bearer sk-sluice-wrong")]),
                0,
            ),
            authenticate_gemini(&tables, &HeaderMap::new(), &plain, 0),
        ] {
            assert_eq!(
                refused.err().map(|e| e.code),
                Some(ErrorCode::InvalidApiKey)
            );
        }
    }
}
