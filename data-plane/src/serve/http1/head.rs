//! A request head read off the wire: parsed by `httparse` into the `http` types the request
//! path takes (one copy of the head backs the path and every header value), its body's
//! framing decided by RFC 9112 §6 — or refused with the reason a client can act on. It is
//! stricter than the RFC's leniencies in one way: a request with both `Content-Length` and
//! `Transfer-Encoding` is refused (the shape of request smuggling).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Uri, Version, request};

use crate::error_response::ErrorShape;
use crate::framing::{self, Framing};

/// A request line and headers larger than this are refused (431).
pub const MAX_HEAD_BYTES: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
/// Heads up to this size are parsed on every read: cheap, and it catches garbage early.
const ALWAYS_PARSED: usize = 1024;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Method,
    Target,
    Version,
    HeaderName,
    HeaderValue,
    LineBreak,
    TooManyHeaders,
    HeadTooLarge,
    ContentLength,
    TransferEncoding,
    AmbiguousLength,
}

impl Refusal {
    /// Whether the head was refused for its size (431) rather than its form (400).
    pub fn is_size(self) -> bool {
        matches!(self, Refusal::TooManyHeaders | Refusal::HeadTooLarge)
    }

    /// What the client is told.
    pub fn message(self) -> String {
        match self {
            Refusal::Method => "the request line's method is not a valid HTTP token".to_owned(),
            Refusal::Target => {
                "the request target is not a valid path: percent-encode spaces, controls and non-ASCII bytes".to_owned()
            }
            Refusal::Version => "only HTTP/1.0, HTTP/1.1 and HTTP/2 are served".to_owned(),
            Refusal::HeaderName => "a header name holds a character a header name may not".to_owned(),
            Refusal::HeaderValue => {
                "a header value holds a control character (only tab is allowed)".to_owned()
            }
            Refusal::LineBreak => "the request head has a malformed line break".to_owned(),
            Refusal::TooManyHeaders => format!("the request has more than {MAX_HEADERS} headers"),
            Refusal::HeadTooLarge => {
                format!("the request line and headers exceed {MAX_HEAD_BYTES} bytes")
            }
            Refusal::ContentLength => {
                "`Content-Length` must be one whole number (repeated only with the same value)".to_owned()
            }
            Refusal::TransferEncoding => {
                "`Transfer-Encoding` must end in `chunked`, and only on HTTP/1.1".to_owned()
            }
            Refusal::AmbiguousLength => {
                "the request has both `Content-Length` and `Transfer-Encoding`: send one".to_owned()
            }
        }
    }
}

/// A refused head: why, and the error shape of the endpoint it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub shape: ErrorShape,
}

/// A request head, parsed and judged.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: request::Parts,
    /// How the body ends (`Done`: it has none).
    pub body: Framing,
    /// The client may send another request on this connection after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// Reads heads from a connection's input as it grows. A head is parsed again only once a new
/// line has arrived, while it is small, or each time it doubles, so a head sent a byte at a
/// time costs a parse per line, not per byte — and bytes that are no HTTP at all (a TLS hello
/// on the plaintext port) are still refused at once.
#[derive(Debug)]
pub struct HeadReader {
    /// How much of the current head has been looked at.
    scanned: usize,
    /// The size at which an unfinished line is parsed again.
    checkpoint: usize,
}

impl Default for HeadReader {
    fn default() -> Self {
        Self {
            scanned: 0,
            checkpoint: 2 * ALWAYS_PARSED,
        }
    }
}

impl HeadReader {
    /// The head at the front of `input` and its length once it is complete; `None` while more
    /// must arrive.
    pub fn read(&mut self, input: &[u8]) -> Result<Option<(RequestHead, usize)>, Refused> {
        if input.is_empty() {
            return Ok(None);
        }
        let fresh = &input[self.scanned.min(input.len())..];
        self.scanned = input.len();
        let due = fresh.contains(&b'\n')
            || input.len() <= ALWAYS_PARSED
            || input.len() >= MAX_HEAD_BYTES
            || input.len() >= self.checkpoint;
        if !due {
            return Ok(None);
        }
        while self.checkpoint <= input.len() {
            self.checkpoint *= 2;
        }
        // Uninitialised, as hyper does it: zeroing room for 100 headers costs more than a parse.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = request.parse_with_uninit_headers(input, &mut slots);
        let refused = |refusal| Refused {
            refusal,
            shape: shape_of(request.path),
        };
        match parsed {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
                Err(refused(Refusal::HeadTooLarge))
            }
            Ok(httparse::Status::Complete(len)) => {
                let head = build(&request, &input[..len]).map_err(refused)?;
                *self = Self::default();
                Ok(Some((head, len)))
            }
            Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD_BYTES => {
                Err(refused(Refusal::HeadTooLarge))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(error) => Err(refused(match error {
                httparse::Error::Token if request.method.is_none() => Refusal::Method,
                httparse::Error::Token => Refusal::Target,
                httparse::Error::HeaderName => Refusal::HeaderName,
                httparse::Error::HeaderValue => Refusal::HeaderValue,
                httparse::Error::NewLine => Refusal::LineBreak,
                httparse::Error::TooManyHeaders => Refusal::TooManyHeaders,
                httparse::Error::Version | httparse::Error::Status => Refusal::Version,
            })),
        }
    }
}

/// The `http` request head of a complete parse of `raw`, and its body's framing.
fn build(request: &httparse::Request<'_, '_>, raw: &[u8]) -> Result<RequestHead, Refusal> {
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::Method)?;
    let http11 = request.version == Some(1);
    // One copy of the head backs the target and every header value.
    let head = Bytes::copy_from_slice(raw);
    let start = raw.as_ptr() as usize;
    let shared = |part: &[u8]| {
        let offset = part.as_ptr() as usize - start;
        head.slice(offset..offset + part.len())
    };
    let path = request.path.unwrap_or_default();
    if path.len() >= usize::from(u16::MAX) - 1 {
        return Err(Refusal::Target);
    }
    let uri = Uri::from_maybe_shared(shared(path.as_bytes())).map_err(|_| Refusal::Target)?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut close = !http11;
    let mut expects_continue = false;
    let mut upgrade = method == Method::CONNECT;
    for header in request.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| Refusal::HeaderName)?;
        let value = framing::parsed_header_value(shared(header.value));
        if name == http::header::TRANSFER_ENCODING {
            if !http11 {
                return Err(Refusal::TransferEncoding);
            }
            chunked = Some(framing::ends_chunked(header.value));
        } else if name == http::header::CONTENT_LENGTH {
            let value = framing::content_length(header.value).ok_or(Refusal::ContentLength)?;
            if length.is_some_and(|earlier| earlier != value) {
                return Err(Refusal::ContentLength);
            }
            length = Some(value);
        } else if name == http::header::CONNECTION {
            if framing::has_token(header.value, b"close") {
                close = true;
            } else if !http11 && framing::has_token(header.value, b"keep-alive") {
                close = false;
            }
        } else if name == http::header::EXPECT {
            expects_continue = http11 && header.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == http::header::UPGRADE {
            upgrade |= http11;
        }
        headers.append(name, value);
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => return Err(Refusal::AmbiguousLength),
        (Some(false), None) => return Err(Refusal::TransferEncoding),
        (Some(true), None) => Framing::CHUNKED,
        (None, Some(n)) if n >= u64::MAX - 1 => return Err(Refusal::ContentLength),
        (None, Some(0) | None) => Framing::Done,
        (None, Some(n)) => Framing::Sized(n),
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    parts.headers = headers;
    Ok(RequestHead {
        parts,
        body,
        // What follows an upgrade or `CONNECT` is no HTTP/1 this server speaks: it answers
        // the request and closes.
        keep_alive: !close && !upgrade,
        expects_continue,
    })
}

/// The error shape of the endpoint a (partly read) request targets.
pub fn shape_of(path: Option<&str>) -> ErrorShape {
    match path {
        Some(path) if path == "/v1/messages" || path.starts_with("/v1/messages?") => {
            ErrorShape::Anthropic
        }
        Some(path)
            if path.starts_with("/v1beta/")
                || path.contains(":generateContent")
                || path.contains(":streamGenerateContent") =>
        {
            ErrorShape::Gemini
        }
        _ => ErrorShape::OpenAi,
    }
}

#[cfg(test)]
mod tests;
