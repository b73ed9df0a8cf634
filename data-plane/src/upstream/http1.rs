//! HTTP/1.1 to an upstream, written for the one exchange the proxy makes: a POST with a body
//! it holds whole, and an answer read head first and then body as it arrives. Driven by the
//! request's own task, with one buffer per connection: a request is one vectored write and an
//! answer's body leaves as slices of what was read. The answer is hostile input: its head is
//! bounded and parsed by `httparse`, and its framing follows RFC 9112 §6.3 strictly — a
//! length that is not a number, two lengths that differ, or a chunk that breaks the format
//! fail the answer rather than guess.

use std::future::Future as _;
use std::io::{IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroize;

use super::pool::{self, Io, PoolKey};
use crate::framing::{self, Framing, Malformed, Step, decode_ready};

/// An answer's head may be this long at most (hyper's default limit too).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Room made in a connection's buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the provider closed the connection {0}")]
    Closed(&'static str),
    #[error("the provider's answer is malformed: {0}")]
    Malformed(&'static str),
}

impl From<Malformed> for Http1Error {
    fn from(Malformed(what): Malformed) -> Self {
        Http1Error::Malformed(what)
    }
}

/// A connection and what has been read from it but not consumed yet.
pub struct Http1Connection {
    /// Boxed once per connection: a TLS session is a kilobyte, and the connection moves
    /// between the pool, the request and its body.
    io: Box<TokioIo<Io>>,
    buffer: BytesMut,
}

/// An answer's status and headers, and how its body is framed.
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request once the body has been read.
    reusable: bool,
}

impl Http1Connection {
    pub fn new(io: Io) -> Self {
        Self {
            io: Box::new(TokioIo::new(io)),
            buffer: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry another request: its peer has not closed it and
    /// sent nothing unasked.
    pub async fn still_open(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        std::future::poll_fn(|cx| match self.poll_fill(cx) {
            Poll::Pending => Poll::Ready(true),
            Poll::Ready(_) => Poll::Ready(false),
        })
        .await
    }

    /// Writes a request: `head` (which it wipes afterwards: it holds the credential) and
    /// `body`.
    pub async fn send(&mut self, mut head: Vec<u8>, body: &[u8]) -> std::io::Result<()> {
        let written = self.write_both(&head, body).await;
        head.zeroize();
        written?;
        self.io.flush().await
    }

    async fn write_both(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        let (mut head, mut body) = (head, body);
        while !head.is_empty() || !body.is_empty() {
            let slices = [IoSlice::new(head), IoSlice::new(body)];
            let mut written = self.io.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_head = written.min(head.len());
            head = &head[from_head..];
            written -= from_head;
            body = &body[written..];
        }
        Ok(())
    }

    /// Reads the answer's head (skipping interim 1xx answers).
    pub async fn read_head(&mut self) -> Result<Head, Http1Error> {
        loop {
            if let Some(head) = self.parse_head()? {
                if head.status.is_informational() {
                    continue;
                }
                return Ok(head);
            }
            if self.buffer.len() >= MAX_HEAD_BYTES {
                return Err(Http1Error::Malformed("its head is larger than 64 KiB"));
            }
            self.buffer.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return Err(Http1Error::Closed(if self.buffer.is_empty() {
                    "before answering"
                } else {
                    "inside the answer's head"
                }));
            }
        }
    }

    fn parse_head(&mut self) -> Result<Option<Head>, Http1Error> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.buffer,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Http1Error::Malformed("it has more than 100 headers"));
            }
            Err(_) => return Err(Http1Error::Malformed("its head is not HTTP/1.1")),
        };
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or(Http1Error::Malformed("its status code"))?;
        // One copy of the head backs every header value (one allocation, not one per value),
        // and leaves the read buffer this connection's alone.
        let head = Bytes::copy_from_slice(&self.buffer[..len]);
        let start = self.buffer.as_ptr() as usize;
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        let mut close = response.version != Some(1);
        for header in response.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| Http1Error::Malformed("a header name"))?;
            let offset = header.value.as_ptr() as usize - start;
            let value =
                framing::parsed_header_value(head.slice(offset..offset + header.value.len()));
            if name == http::header::CONTENT_LENGTH {
                let parsed = framing::content_length(header.value)
                    .ok_or(Http1Error::Malformed("its content-length"))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(Http1Error::Malformed(
                        "two different content-length headers",
                    ));
                }
                length = Some(parsed);
            } else if name == http::header::TRANSFER_ENCODING {
                encoded = true;
                // Only the last coding says how the message ends.
                chunked = framing::ends_chunked(header.value);
            } else if name == http::header::CONNECTION {
                close |= framing::has_token(header.value, b"close");
            }
            headers.append(name, value);
        }
        self.buffer.advance(len);
        let framing = if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Done
        } else if encoded {
            // A length beside a transfer coding is ignored, and the connection not reused
            // (RFC 9112 §6.3): it may be an attempt to smuggle a second answer.
            close |= length.is_some();
            if chunked {
                Framing::CHUNKED
            } else {
                Framing::UntilClose
            }
        } else {
            match length {
                Some(0) => Framing::Done,
                Some(length) => Framing::Sized(length),
                None => Framing::UntilClose,
            }
        };
        Ok(Some(Head {
            status,
            headers,
            framing,
            reusable: !close && framing != Framing::UntilClose,
        }))
    }

    /// Reads more into the buffer: `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.buffer.reserve(READ_CHUNK);
        std::pin::pin!(self.io.read_buf(&mut self.buffer)).poll(cx)
    }
}

/// An HTTP/1.1 answer's body, read from its connection in the reader's task. Read to its end,
/// the connection goes back to this thread's pool if it may carry another request.
pub struct Http1Body {
    connection: Option<Http1Connection>,
    framing: Framing,
    reusable: bool,
    key: PoolKey,
}

impl Http1Body {
    pub fn new(connection: Http1Connection, head: &Head, key: PoolKey) -> Self {
        Self {
            connection: Some(connection),
            framing: head.framing,
            reusable: head.reusable,
            key,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Sized(left) => Some(left),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        loop {
            let Some(connection) = &mut self.connection else {
                return Poll::Ready(None);
            };
            match decode_ready(&mut self.framing, &mut connection.buffer) {
                Ok(Step::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(Step::End) => {
                    self.release();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(error) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            match connection.poll_fill(cx) {
                Poll::Ready(Ok(0)) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    self.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(Http1Error::Closed("before the answer's end"))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    self.connection = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Http1Body {
    /// The body has been read to its end: the connection goes back to the pool if it may
    /// carry another request and holds nothing more.
    fn release(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.reusable
            && connection.buffer.is_empty()
        {
            pool::check_in(self.key.clone(), connection);
        }
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        // A body known to be over (an answer without one) keeps its connection even when
        // nobody read it; any other closes it, since the rest of it would still arrive.
        if self.framing == Framing::Done {
            self.release();
        }
    }
}

/// The request head for a POST of `body_len` bytes to `path` with `headers`.
pub fn encode_head<'a>(
    path: &str,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    body_len: usize,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: ");
    // Writing to a Vec cannot fail.
    let _ = write!(head, "{body_len}");
    head.extend_from_slice(b"\r\n\r\n");
    head
}
