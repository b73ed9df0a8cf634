//! The one response body type: a whole buffer or a stream passed through chunk by chunk.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Header lines rendered once for an answer (`name: value\r\n` each), carried in its
/// extensions beside its `HeaderMap`: the HTTP/1.1 writer copies them out as they are, HTTP/2
/// turns them into headers. For values that change with every answer (its rate-limit
/// standing), a fraction of the cost of as many `HeaderMap` entries.
#[derive(Debug, Clone)]
pub struct HeaderLines(pub Bytes);

impl HeaderLines {
    /// The lines as entries of `headers`, for whoever needs a `HeaderMap`.
    pub fn move_into(&self, headers: &mut http::HeaderMap) {
        for line in self.0.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
