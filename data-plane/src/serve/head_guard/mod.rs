//! Reads every HTTP/1 request head on a connection before hyper does, so that a head hyper
//! would refuse on its own — with an empty-body 400 or 431 that carries no `x-request-id` and
//! no error a client can act on — is refused by Sluice instead, like every other request.
//!
//! The guard sits between the socket and hyper. It holds a head's bytes until the head is
//! complete and judged by the same parser hyper uses (`httparse`) and the same framing rules
//! (RFC 9112 §6, as hyper applies them), then hands them on; a request body passes by its
//! length or its chunks, so the next head is found where hyper will look for it. A head that
//! fails is replaced by a small synthetic request to [`refused_path`] with `Connection: close`,
//! and the connection's remaining input is dropped: hyper serves it in turn, after any request
//! already under way, and the router answers it with a typed error in the endpoint's shape.
//! It is stricter than hyper in one way: a request with both `Content-Length` and
//! `Transfer-Encoding` is refused (the shape of request smuggling). An HTTP/2 connection (its
//! preface) and anything after an upgrade or `CONNECT` pass untouched.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error_response::ErrorShape;

/// A head larger than this is refused (431) before hyper's own 64 KiB buffer limit is reached.
pub const MAX_HEAD_BYTES: usize = 60 * 1024;
/// hyper's default, which Sluice keeps.
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 8 * 1024;
/// After a refusal, what the client is still sending is read and dropped before the
/// connection closes — so the close is clean and the client reads its answer instead of a
/// reset — up to this much and this long.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    const ALL: [Refusal; 11] = [
        Refusal::Method,
        Refusal::Target,
        Refusal::Version,
        Refusal::HeaderName,
        Refusal::HeaderValue,
        Refusal::LineBreak,
        Refusal::TooManyHeaders,
        Refusal::HeadTooLarge,
        Refusal::ContentLength,
        Refusal::TransferEncoding,
        Refusal::AmbiguousLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Method => "method",
            Refusal::Target => "target",
            Refusal::Version => "version",
            Refusal::HeaderName => "header-name",
            Refusal::HeaderValue => "header-value",
            Refusal::LineBreak => "line-break",
            Refusal::TooManyHeaders => "too-many-headers",
            Refusal::HeadTooLarge => "head-too-large",
            Refusal::ContentLength => "content-length",
            Refusal::TransferEncoding => "transfer-encoding",
            Refusal::AmbiguousLength => "ambiguous-length",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

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

/// A per-process secret in the synthetic request's path, so a client cannot fake a refusal's
/// wording by asking for that path itself.
fn nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| hex::encode(rand::random::<[u8; 16]>()))
}

/// The path prefix of synthetic refusal requests.
pub fn refused_path() -> String {
    format!("/.sluice/refused/{}/", nonce())
}

/// A synthetic refusal's reason and error shape, if `path` is one this process made.
pub fn read_refused(path: &str) -> Option<(Refusal, ErrorShape)> {
    let rest = path.strip_prefix("/.sluice/refused/")?;
    let (given, rest) = rest.split_once('/')?;
    if given != nonce() {
        return None;
    }
    let (reason, shape) = rest.split_once('/')?;
    let shape = match shape {
        "anthropic" => ErrorShape::Anthropic,
        "gemini" => ErrorShape::Gemini,
        _ => ErrorShape::OpenAi,
    };
    Some((Refusal::parse(reason)?, shape))
}

/// The error shape of the endpoint a (partly read) request targets.
fn shape_of(path: Option<&str>) -> &'static str {
    match path {
        Some(path) if path == "/v1/messages" || path.starts_with("/v1/messages?") => "anthropic",
        Some(path) if path.starts_with("/v1beta/") || path.contains(":generateContent") => "gemini",
        Some(path) if path.contains(":streamGenerateContent") => "gemini",
        _ => "openai",
    }
}

/// Where the framer stands in the connection's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Looking for the next request head (at the connection's start: maybe HTTP/2's preface).
    Head {
        first: bool,
    },
    /// A body of this many bytes still to pass.
    Sized(u64),
    Chunked(Chunk),
    /// HTTP/2, an upgrade, or a body the framer cannot follow: everything passes.
    Opaque,
    /// A refusal was handed on: nothing more is read.
    Refused,
}

/// Where a chunked body's framing stands (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace or an extension after the size, up to the line's CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or of the final empty line).
    TrailerLineStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
}

/// What the framer decided about the buffered input.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// This many bytes may be handed on.
    Pass(usize),
    NeedMore,
    Refuse(Refusal, &'static str),
}

/// The framing state machine, apart from I/O so it can be tested byte by byte.
#[derive(Debug)]
struct Framer {
    stage: Stage,
    /// How much of the current head has been looked at. A head is parsed again only once a
    /// new line has arrived, while it is small, or each time it doubles, so a head sent a
    /// byte at a time costs a parse per line, not per byte — and bytes that are no HTTP at
    /// all (a TLS hello on the plaintext port) are still refused at once.
    scanned: usize,
    /// The size at which an unfinished line is parsed again.
    checkpoint: usize,
}

/// Heads up to this size are parsed on every read: cheap, and it catches garbage early.
const ALWAYS_PARSED: usize = 1024;

impl Framer {
    fn new() -> Self {
        Self {
            stage: Stage::Head { first: true },
            scanned: 0,
            checkpoint: 2 * ALWAYS_PARSED,
        }
    }

    fn step(&mut self, input: &[u8]) -> Step {
        match self.stage {
            Stage::Opaque => Step::Pass(input.len()),
            Stage::Refused => Step::Pass(0),
            Stage::Sized(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let left = left - n as u64;
                self.stage = if left == 0 {
                    Stage::Head { first: false }
                } else {
                    Stage::Sized(left)
                };
                if n == 0 {
                    Step::NeedMore
                } else {
                    Step::Pass(n)
                }
            }
            Stage::Chunked(chunk) => self.chunked(chunk, input),
            Stage::Head { first } => self.head(first, input),
        }
    }

    fn head(&mut self, first: bool, input: &[u8]) -> Step {
        if input.is_empty() {
            return Step::NeedMore;
        }
        if first && H2_PREFACE.starts_with(&input[..input.len().min(H2_PREFACE.len())]) {
            if input.len() < H2_PREFACE.len() {
                return Step::NeedMore;
            }
            self.stage = Stage::Opaque;
            return Step::Pass(input.len());
        }
        let fresh = &input[self.scanned.min(input.len())..];
        self.scanned = input.len();
        let due = fresh.contains(&b'\n')
            || input.len() <= ALWAYS_PARSED
            || input.len() >= MAX_HEAD_BYTES
            || input.len() >= self.checkpoint;
        if !due {
            return Step::NeedMore;
        }
        while self.checkpoint <= input.len() {
            self.checkpoint *= 2;
        }
        // Uninitialised, as hyper does it: zeroing room for 100 headers costs more than a parse.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = request.parse_with_uninit_headers(input, &mut headers);
        let path = request.path;
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                if len > MAX_HEAD_BYTES {
                    return Step::Refuse(Refusal::HeadTooLarge, shape_of(path));
                }
                match self.framing(&request) {
                    Ok(next) => {
                        self.stage = next;
                        self.scanned = 0;
                        self.checkpoint = 2 * ALWAYS_PARSED;
                        Step::Pass(len)
                    }
                    Err(refusal) => Step::Refuse(refusal, shape_of(path)),
                }
            }
            Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD_BYTES => {
                Step::Refuse(Refusal::HeadTooLarge, shape_of(path))
            }
            Ok(httparse::Status::Partial) => Step::NeedMore,
            Err(error) => {
                let refusal = match error {
                    httparse::Error::Token if request.method.is_none() => Refusal::Method,
                    httparse::Error::Token => Refusal::Target,
                    httparse::Error::HeaderName => Refusal::HeaderName,
                    httparse::Error::HeaderValue => Refusal::HeaderValue,
                    httparse::Error::NewLine => Refusal::LineBreak,
                    httparse::Error::TooManyHeaders => Refusal::TooManyHeaders,
                    httparse::Error::Version | httparse::Error::Status => Refusal::Version,
                };
                Step::Refuse(refusal, shape_of(path))
            }
        }
    }

    /// How the body of a complete head is framed, by the rules hyper applies — and refused
    /// where hyper would refuse it, or where the length is ambiguous.
    fn framing(&self, request: &httparse::Request<'_, '_>) -> Result<Stage, Refusal> {
        let path = request.path.unwrap_or_default();
        if path.len() >= usize::from(u16::MAX) - 1 || http::Uri::try_from(path).is_err() {
            return Err(Refusal::Target);
        }
        if http::Method::from_bytes(request.method.unwrap_or_default().as_bytes()).is_err() {
            return Err(Refusal::Method);
        }
        let http11 = request.version == Some(1);
        let mut length: Option<u64> = None;
        let mut chunked: Option<bool> = None;
        let mut upgrade = request.method == Some("CONNECT");
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                if !http11 {
                    return Err(Refusal::TransferEncoding);
                }
                let last = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|value| value.rsplit(',').next());
                chunked = Some(last.is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked")));
            } else if header.name.eq_ignore_ascii_case("content-length") {
                let value = digits(header.value).ok_or(Refusal::ContentLength)?;
                if length.is_some_and(|earlier| earlier != value) {
                    return Err(Refusal::ContentLength);
                }
                length = Some(value);
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade |= http11;
            }
        }
        let stage = match (chunked, length) {
            (Some(_), Some(_)) => return Err(Refusal::AmbiguousLength),
            (Some(false), None) => return Err(Refusal::TransferEncoding),
            (Some(true), None) => Stage::Chunked(Chunk::Size { digits: 0, size: 0 }),
            (None, Some(n)) if n >= u64::MAX - 1 => return Err(Refusal::ContentLength),
            (None, Some(0)) | (None, None) => Stage::Head { first: false },
            (None, Some(n)) => Stage::Sized(n),
        };
        // What follows an upgrade or CONNECT is not HTTP/1 framing for the guard to follow.
        Ok(if upgrade { Stage::Opaque } else { stage })
    }

    /// Follows a chunked body over `input`; passes up to its end (or all of `input`).
    fn chunked(&mut self, mut chunk: Chunk, input: &[u8]) -> Step {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            chunk = match chunk {
                Chunk::Data(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - at);
                    at += n;
                    let left = left - n as u64;
                    chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::Size { digits, size } => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 16 => Chunk::Size {
                        digits: digits + 1,
                        size: size * 16 + u64::from(hex_value(byte)),
                    },
                    b'\t' | b' ' | b';' if digits > 0 => Chunk::Extension { size },
                    b'\r' if digits > 0 => Chunk::SizeLf { size },
                    _ => return self.give_up(input),
                },
                Chunk::Extension { size } => match byte {
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => return self.give_up(input),
                    _ => Chunk::Extension { size },
                },
                Chunk::SizeLf { size } => match (byte, size) {
                    (b'\n', 0) => Chunk::TrailerLineStart,
                    (b'\n', size) => Chunk::Data(size),
                    _ => return self.give_up(input),
                },
                Chunk::DataCr => match byte {
                    b'\r' => Chunk::DataLf,
                    _ => return self.give_up(input),
                },
                Chunk::DataLf => match byte {
                    b'\n' => Chunk::Size { digits: 0, size: 0 },
                    _ => return self.give_up(input),
                },
                Chunk::TrailerLineStart => match byte {
                    b'\r' => Chunk::TrailerLf { empty: true },
                    b'\n' => return self.give_up(input),
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerLine => match byte {
                    b'\r' => Chunk::TrailerLf { empty: false },
                    b'\n' => return self.give_up(input),
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerLf { empty } => match byte {
                    b'\n' if empty => {
                        self.stage = Stage::Head { first: false };
                        return Step::Pass(at + 1);
                    }
                    b'\n' => Chunk::TrailerLineStart,
                    _ => return self.give_up(input),
                },
            };
            at += 1;
        }
        self.stage = Stage::Chunked(chunk);
        if at == 0 {
            Step::NeedMore
        } else {
            Step::Pass(at)
        }
    }

    /// A chunked body the guard cannot follow is hyper's to refuse (as a body error, which
    /// the endpoint answers, and then closes the connection): everything passes from here on.
    fn give_up(&mut self, input: &[u8]) -> Step {
        self.stage = Stage::Opaque;
        Step::Pass(input.len())
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

/// A `Content-Length` value as hyper reads one: ASCII digits only, no sign, no overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0_u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The request a refusal becomes: hyper reads it like any other and the router answers it.
fn synthetic_request(refusal: Refusal, shape: &str) -> Vec<u8> {
    format!(
        "GET {}{}/{shape} HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n\r\n",
        refused_path(),
        refusal.as_str()
    )
    .into_bytes()
}

/// A connection's socket, its input judged head by head on the way to hyper.
pub struct HeadGuard<T> {
    inner: T,
    framer: Framer,
    /// Read from the socket, not yet handed on.
    input: BytesMut,
    /// How much of `input`'s front may be handed on now.
    passable: usize,
    eof: bool,
    /// After a refusal: how much has been drained, and until when draining may go on.
    drained: usize,
    drain_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How long a head may take to arrive once it has begun. hyper times heads itself, but
    /// sees none of a head this guard still holds — and at a connection's start not even its
    /// first bytes — so a client that sends half a head and stops is cut off here.
    head_timeout: Duration,
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> HeadGuard<T> {
    pub fn new(inner: T, head_timeout: Duration) -> Self {
        Self {
            inner,
            framer: Framer::new(),
            input: BytesMut::new(),
            passable: 0,
            eof: false,
            drained: 0,
            drain_deadline: None,
            head_timeout,
            head_deadline: None,
        }
    }
}

impl<T: AsyncRead + Unpin> HeadGuard<T> {
    /// Reads and drops what a refused client is still sending, up to [`DRAIN_BYTES`]: ready
    /// once the client stopped (or the bound was reached), pending while more may come.
    fn poll_drain_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.framer.stage != Stage::Refused || self.eof {
            return Poll::Ready(());
        }
        let mut scratch = [0_u8; 4096];
        while self.drained < DRAIN_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.drained += buf.filled().len();
                }
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.eof = true;
        Poll::Ready(())
    }

    /// Before the connection closes after a refusal: the drain, for at most [`DRAIN_TIME`].
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_drain_input(cx).is_ready() {
            return Poll::Ready(());
        }
        let deadline = self
            .drain_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIME)));
        deadline.as_mut().poll(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.passable > 0 {
                let n = this.passable.min(out.remaining());
                out.put_slice(&this.input[..n]);
                this.input.advance(n);
                this.passable -= n;
                return Poll::Ready(Ok(()));
            }
            if this.framer.stage == Stage::Refused {
                // Never the end of input: hyper would drop the connection unanswered on an
                // end that arrives while it serves the refusal. What the client still sends
                // is read and dropped meanwhile (bounded); `Connection: close` ends it.
                let _ = this.poll_drain_input(cx);
                return Poll::Pending;
            }
            // Nothing held back: the rest of the connection goes straight through.
            if this.framer.stage == Stage::Opaque && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            if !this.input.is_empty() || this.eof {
                match this.framer.step(&this.input) {
                    Step::Pass(n) if n > 0 => {
                        this.passable = n;
                        continue;
                    }
                    Step::Refuse(refusal, shape) => {
                        this.framer.stage = Stage::Refused;
                        this.input.clear();
                        this.input
                            .extend_from_slice(&synthetic_request(refusal, shape));
                        this.passable = this.input.len();
                        continue;
                    }
                    Step::Pass(_) | Step::NeedMore => {}
                }
            }
            if this.eof {
                // What is left is an incomplete head: hyper sees the end of the input.
                return Poll::Ready(Ok(()));
            }
            let head_begun =
                matches!(this.framer.stage, Stage::Head { .. }) && !this.input.is_empty();
            if !head_begun {
                this.head_deadline = None;
            }
            this.input.reserve(READ_CHUNK);
            let spare = this.input.spare_capacity_mut();
            let mut buf = ReadBuf::uninit(spare);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        this.eof = true;
                    }
                    // SAFETY: `n` bytes of the spare capacity were just initialised by the read.
                    unsafe { this.input.set_len(this.input.len() + n) };
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending if head_begun => {
                    let timeout = this.head_timeout;
                    let deadline = this
                        .head_deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the request head did not arrive in time",
                        )));
                    }
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_drain(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
