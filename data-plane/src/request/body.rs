//! A request's body as the request path gets it: read whole by the HTTP/1.1 connection
//! before the request was routed (or refused there, for its size or its form), or read here
//! from HTTP/2 as it arrives — bounded, in one piece when it arrived in one, and a refused
//! one drained before its error is answered.

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;

/// A request body, by the protocol that carried it.
#[derive(Debug)]
pub enum RequestBody {
    /// HTTP/1.1: read whole by the connection.
    Whole(Bytes),
    /// HTTP/1.1: longer than the limit, and left unread.
    TooLarge,
    /// HTTP/1.1: its chunks broke their format, or the client sent no more.
    Unreadable,
    /// HTTP/1.1: it stopped arriving for longer than the body stall timeout.
    Stalled,
    /// HTTP/2: read as it arrives.
    Streaming(Incoming),
}

/// The whole request body, at most `limit` bytes (413 beyond, after draining the rest).
pub async fn read(
    limit: usize,
    headers: &http::HeaderMap,
    body: RequestBody,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorCode::RequestTooLarge,
            format!("request body over {limit} bytes"),
        )
    };
    let unreadable = || {
        GatewayError::new(
            ErrorCode::InvalidRequest,
            "the request body could not be read",
        )
    };
    let mut body = match body {
        RequestBody::Whole(bytes) => return Ok(bytes),
        RequestBody::TooLarge => return Err(too_large()),
        RequestBody::Unreadable => return Err(unreadable()),
        RequestBody::Stalled => {
            return Err(GatewayError::new(
                ErrorCode::RequestTimeout,
                "the request body stopped arriving before its end (body_stall_timeout_ms): send it again, whole",
            ));
        }
        RequestBody::Streaming(body) => body,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain_refused(RequestBody::Streaming(body)).await;
        return Err(too_large());
    }
    let mut joined = Joined::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| unreadable())?;
        if let Ok(data) = frame.into_data()
            && joined.push(data) > limit
        {
            drain_refused(RequestBody::Streaming(body)).await;
            return Err(too_large());
        }
    }
    Ok(joined.into_bytes())
}

/// A body's pieces joined as they arrive. The common case, a body that arrives in one piece,
/// is kept as it is: no copy.
#[derive(Default)]
pub struct Joined {
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
}

impl Joined {
    /// Adds a piece; the length so far.
    pub fn push(&mut self, data: Bytes) -> usize {
        self.len += data.len();
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            None => self.rest.extend_from_slice(&data),
            Some(earlier) => {
                self.rest.extend_from_slice(&earlier);
                self.rest.extend_from_slice(&data);
            }
        }
        self.len
    }

    pub fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.into())
    }
}

/// Most of a refused body that a client may still be sending is read and discarded.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
const MAX_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of a refused HTTP/2 request body (bounded in bytes and time) before the
/// error is answered. (An HTTP/1.1 connection drains an unread body itself before it closes.)
pub async fn drain_refused(body: RequestBody) {
    let RequestBody::Streaming(mut body) = body else {
        return;
    };
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
