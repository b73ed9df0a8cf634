//! Reading a request body: bounded, in one piece when it arrived in one, and a refused body
//! drained before its error is answered.

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;

/// The whole request body, at most `limit` bytes (413 beyond, after draining the rest).
pub async fn read(
    limit: usize,
    headers: &http::HeaderMap,
    mut body: Incoming,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorCode::RequestTooLarge,
            format!("request body over {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain_refused(body).await;
        return Err(too_large());
    }
    // The common case, a body that arrives as one chunk, is kept as it is: no copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            GatewayError::new(
                ErrorCode::InvalidRequest,
                "the request body could not be read",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                drain_refused(body).await;
                return Err(too_large());
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                None => joined.extend_from_slice(&data),
                Some(earlier) => {
                    joined.extend_from_slice(&earlier);
                    joined.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.into()))
}

/// Most of a refused body that a client may still be sending is read and discarded.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
const MAX_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of a refused request body (bounded in bytes and time) before the error
/// is answered: a socket closed with the client's data unread is reset, and the client would
/// see a broken connection instead of the 413.
pub async fn drain_refused(mut body: Incoming) {
    let drained = async {
        let mut left = MAX_DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let read = frame.data_ref().map_or(0, Bytes::len);
            if read >= left {
                break;
            }
            left -= read;
        }
    };
    let _ = tokio::time::timeout(MAX_DRAIN_TIME, drained).await;
}
