//! An answer's head and body framing as HTTP/1.1 writes them: the status line, the headers
//! the request path set (hop-by-hop ones are this layer's to write), `date`, and how the body
//! ends — by its length when the body knows it, in chunks when it streams, or by closing the
//! connection for an HTTP/1.0 client that cannot read chunks.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, StatusCode, header};

use crate::http_body::HeaderLines;

/// How the body of an answer ends on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// A status that has no body (1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client: the body ends where the connection does.
    UntilClose,
}

impl BodyFraming {
    /// How an answer of `status` whose body knows its length (`exact`, if it does) is framed
    /// for a client speaking `http11`.
    pub fn choose(status: StatusCode, exact: Option<u64>, http11: bool) -> Self {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyFraming::None
        } else if let Some(length) = exact {
            BodyFraming::Length(length)
        } else if http11 {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    }
}

/// Headers that describe one connection, not the answer: written here, never copied.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == header::UPGRADE
        || name == header::TE
        || name == header::TRAILER
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Appends the head of an answer to `out`. `close` says the connection ends after it;
/// `http10_keep_alive` that an HTTP/1.0 client asked to keep it and may.
pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    lines: Option<&HeaderLines>,
    framing: BodyFraming,
    close: bool,
    http10_keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if hop_by_hop(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(lines) = lines {
        out.extend_from_slice(&lines.0);
    }
    match framing {
        BodyFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{length}");
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10_keep_alive {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"date: ");
    append_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    // By hand: a stream writes one per event, and `format_args!` cost several times this.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(DIGITS[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

pub const CHUNK_END: &[u8] = b"\r\n";
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The interim answer a client that sent `Expect: 100-continue` waits for.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

thread_local! {
    /// The `date` value of the current second, formatted once a second per serving thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn append_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            *cached_second = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(status: u16, framing: BodyFraming, close: bool, keep_alive_10: bool) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("r1"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        encode_head(
            &mut out,
            status,
            &headers,
            None,
            framing,
            close,
            keep_alive_10,
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_head_frames_the_body_and_drops_what_the_request_path_may_not_set() {
        let sized = head(200, BodyFraming::Length(12), false, false);
        assert!(
            sized
                .starts_with("HTTP/1.1 200 OK\r\nx-request-id: r1\r\ncontent-length: 12\r\ndate: ")
        );
        assert!(sized.ends_with(" GMT\r\n\r\n"), "{sized}");
        assert!(
            !sized.contains("999") && !sized.contains("upgrade"),
            "{sized}"
        );
        let chunked = head(429, BodyFraming::Chunked, true, false);
        assert!(chunked.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(chunked.contains("transfer-encoding: chunked\r\nconnection: close\r\n"));
        let old = head(200, BodyFraming::Length(0), false, true);
        assert!(old.contains("connection: keep-alive\r\n"));
        for len in [0, 1, 15, 16, 300, 0xffff, usize::MAX] {
            let mut line = Vec::new();
            chunk_start(&mut line, len);
            assert_eq!(line, format!("{len:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn bodies_are_framed_by_what_the_status_and_the_client_allow() {
        assert_eq!(
            BodyFraming::choose(StatusCode::NO_CONTENT, Some(0), true),
            BodyFraming::None
        );
        assert_eq!(
            BodyFraming::choose(StatusCode::OK, Some(5), false),
            BodyFraming::Length(5)
        );
        assert_eq!(
            BodyFraming::choose(StatusCode::OK, None, true),
            BodyFraming::Chunked
        );
        assert_eq!(
            BodyFraming::choose(StatusCode::OK, None, false),
            BodyFraming::UntilClose
        );
    }
}
