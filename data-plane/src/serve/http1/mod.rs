//! HTTP/1.1 served by hand, in the connection's own task, the way the upstream client went:
//! one buffer per connection that heads and bodies are read from, the head parsed once into
//! the `http` types the request path takes, the body read whole before the request is routed
//! (the request path needs all of it, and a body over the limit is never read), and the
//! answer written as it comes — its head and a whole body in one write, a stream's events
//! gathered while more are ready, chunked when the body does not know its length.
//!
//! Every byte is hostile: a head is bounded in size and time and refused with a typed error
//! in the endpoint's shape (`head`), a body in size and in how long it may stall, and a client
//! that leaves while its request is served has the request dropped, so its usage is recorded
//! as abandoned. Keep-alive connections close after their idle time, and at once when the
//! serving thread drains. HTTP/2's preface hands the connection to hyper (`super::http2`).

pub mod head;
pub mod response;

use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::Body as _;
use sluice_shared::tls::accepted::Accepted;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use self::head::{HeadReader, Refused, RequestHead};
use self::response::{BodyFraming, CHUNK_END, CONTINUE, LAST_CHUNK, chunk_start, encode_head};
use crate::framing::{Framing, Step, decode};
use crate::gateway::Gateway;
use crate::http_body::{Body, HeaderLines};
use crate::request::body::{Joined, RequestBody};
use crate::serve::admission::ConnectionSlot;
use crate::serve::idle::{IdleConnections, IdleTicket};
use crate::serve::router;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Room made in the connection's buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// What a client may send ahead (a pipelined request) while its request is served; past
/// this the connection is not read until the answer has gone.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// An answer's bytes are gathered up to this much before they are written.
const MAX_WRITE: usize = 64 * 1024;
/// Body slices this large are written from where they lie rather than copied.
const WRITE_IN_PLACE: usize = 8 * 1024;
/// How long a write may wait for a client that takes nothing.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// Before a connection closes with a request body unread, what the client is still sending
/// is read and dropped — so the close is clean and the client reads its answer instead of a
/// reset — up to this much and this long.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How long a connection may take to send what it owes.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A new connection, until its first request's first byte.
    pub first_request: Duration,
    /// A request head, from its first byte to its end.
    pub head: Duration,
    /// Between requests on a kept-alive connection.
    pub idle: Duration,
    /// How long a request body may stop arriving before the request is refused.
    pub body_stall: Duration,
}

/// A connection that began with HTTP/2's preface: the socket and what was read of it.
pub struct Http2Start {
    pub stream: Accepted,
    pub input: BytesMut,
    pub slot: ConnectionSlot,
}

/// Serves HTTP/1.1 requests on `stream` until the client or the server ends it; a
/// connection that opens with HTTP/2's preface is handed back for hyper to serve.
pub async fn serve(
    stream: Accepted,
    slot: ConnectionSlot,
    gateway: Arc<Gateway>,
    timeouts: Timeouts,
    drain: watch::Receiver<bool>,
    idle: Arc<IdleConnections>,
) -> Option<Http2Start> {
    let mut connection = Connection::new(stream, slot, timeouts, drain, idle);
    let mut waiting_since = Instant::now();
    let mut first = true;
    loop {
        let head = match connection.next_head(waiting_since, first).await {
            Next::Head(head) => head,
            Next::Refused(refused) => {
                let answer = router::refused(&gateway, refused);
                let manner = Manner {
                    http11: true,
                    http10_keep_alive: false,
                    close: true,
                    head_only: false,
                };
                connection.respond(answer, manner).await;
                connection.drain_input().await;
                return None;
            }
            Next::Http2 => return Some(connection.into_http2()),
            Next::Closed => return None,
        };
        first = false;
        let http11 = head.parts.version == Version::HTTP_11;
        let head_only = head.parts.method == Method::HEAD;
        let http10_keep_alive = head.keep_alive && !http11;
        let (body, read_whole) = connection.read_body(&head, gateway.max_body_bytes).await;
        let keep_alive = head.keep_alive && read_whole;
        // A client that stopped sending has nothing left to drain before the close.
        let drain_before_close = !read_whole && !matches!(body, RequestBody::Stalled);
        let request = Request::from_parts(head.parts, body);
        // Polled where it lies: the request's whole state is in this future.
        let routed = pin!(router::route(&gateway, request));
        let Some(answer) = connection.dispatch(routed).await else {
            // The client left: the request was dropped, and its usage recorded so.
            return None;
        };
        let close = !keep_alive || *connection.drain.borrow();
        let manner = Manner {
            http11,
            http10_keep_alive,
            close,
            head_only,
        };
        let answered = connection.respond(answer, manner).await;
        if !answered || close {
            if drain_before_close {
                connection.drain_input().await;
            }
            return None;
        }
        waiting_since = Instant::now();
    }
}

/// How an answer goes back on this connection.
#[derive(Debug, Clone, Copy)]
struct Manner {
    http11: bool,
    /// An HTTP/1.0 client asked to keep the connection.
    http10_keep_alive: bool,
    /// The connection ends after this answer.
    close: bool,
    /// A `HEAD` request: the answer's head alone, its length as the body's would be.
    head_only: bool,
}

// Moved once per request; boxing the head would cost an allocation per request instead.
#[expect(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    Refused(Refused),
    Http2,
    Closed,
}

/// What waiting for more input ended in.
enum Filled {
    Read,
    Closed,
    TimedOut,
    Draining,
    /// Closed to make room for a new connection.
    Shed,
}

struct Connection {
    /// Declared before the socket, so the slot under the connection cap is free again
    /// before the socket closes: a client that sees its connection end can count on the
    /// capacity being back.
    slot: ConnectionSlot,
    stream: Accepted,
    /// Read from the socket, not yet consumed.
    input: BytesMut,
    heads: HeadReader,
    /// An answer's bytes on their way out.
    out: Vec<u8>,
    timeouts: Timeouts,
    /// One timer for the connection's life, moved on only when it fires early: setting a
    /// timer per request would cost a timer-wheel update for each.
    deadline: Option<Pin<Box<Sleep>>>,
    drain: watch::Receiver<bool>,
    /// Where the connection waits for its next request, to be shed when the proxy is full.
    idle: Arc<IdleConnections>,
    /// Resolves once the serving thread drains; made once, so waiting on it per request
    /// costs no allocation.
    draining: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Connection {
    fn new(
        stream: Accepted,
        slot: ConnectionSlot,
        timeouts: Timeouts,
        drain: watch::Receiver<bool>,
        idle: Arc<IdleConnections>,
    ) -> Self {
        let mut signal = drain.clone();
        Self {
            slot,
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            heads: HeadReader::default(),
            out: Vec::with_capacity(1024),
            timeouts,
            deadline: None,
            drain,
            idle,
            draining: Box::pin(async move {
                let _ = signal.wait_for(|draining| *draining).await;
            }),
        }
    }

    fn into_http2(self) -> Http2Start {
        Http2Start {
            stream: self.stream,
            input: self.input,
            slot: self.slot,
        }
    }

    /// The next request head: within the head timeout once it has begun (or from the
    /// connection's start), after at most the idle timeout between requests, and not at all
    /// once the thread drains and nothing of one has arrived.
    async fn next_head(&mut self, waiting_since: Instant, first: bool) -> Next {
        let mut began = (!self.input.is_empty()).then_some(waiting_since);
        loop {
            if first && H2_PREFACE.starts_with(&self.input[..self.input.len().min(24)]) {
                if self.input.len() >= H2_PREFACE.len() {
                    return Next::Http2;
                }
            } else {
                match self.heads.read(&self.input) {
                    Ok(Some((head, len))) => {
                        self.input.advance(len);
                        return Next::Head(head);
                    }
                    Ok(None) => {}
                    Err(refused) => return Next::Refused(refused),
                }
            }
            let due = match began {
                Some(began) => began + self.timeouts.head,
                None if first => waiting_since + self.timeouts.first_request,
                None => waiting_since + self.timeouts.idle,
            };
            // Nothing of a request yet: the connection only waits, and may be shed.
            let waiting = began.is_none().then(|| self.idle.enter(waiting_since));
            let filled = self.fill(due, waiting.as_ref()).await;
            if let Some(ticket) = waiting {
                self.idle.leave(ticket);
            }
            match filled {
                Filled::Read => {
                    began.get_or_insert_with(Instant::now);
                }
                Filled::Closed | Filled::TimedOut | Filled::Draining | Filled::Shed => {
                    return Next::Closed;
                }
            }
        }
    }

    /// The request's body, read whole within `limit`; and whether it was read to its end (if
    /// not, the connection cannot carry another request).
    async fn read_body(&mut self, head: &RequestHead, limit: usize) -> (RequestBody, bool) {
        let mut framing = head.body;
        match framing {
            Framing::Done => return (RequestBody::Whole(Bytes::new()), true),
            Framing::Sized(length) if length > limit as u64 => {
                return (RequestBody::TooLarge, false);
            }
            _ => {}
        }
        if head.expects_continue && self.input.is_empty() && self.write(CONTINUE).await.is_err() {
            return (RequestBody::Unreadable, false);
        }
        let mut joined = Joined::default();
        loop {
            match decode(&mut framing, &mut self.input) {
                Ok(Step::Data(data)) => {
                    if joined.push(data) > limit {
                        return (RequestBody::TooLarge, false);
                    }
                }
                Ok(Step::End) => return (RequestBody::Whole(joined.into_bytes()), true),
                Ok(Step::NeedMore) => {
                    let due = Instant::now() + self.timeouts.body_stall;
                    match self.fill(due, None).await {
                        Filled::Read => {}
                        Filled::TimedOut => return (RequestBody::Stalled, false),
                        Filled::Closed | Filled::Draining | Filled::Shed => {
                            return (RequestBody::Unreadable, false);
                        }
                    }
                }
                Err(_) => return (RequestBody::Unreadable, false),
            }
        }
    }

    /// The answer to a request, unless the client leaves first.
    async fn dispatch(
        &mut self,
        mut answer: Pin<&mut impl Future<Output = Response<Body>>>,
    ) -> Option<Response<Body>> {
        poll_fn(|cx| {
            if let Poll::Ready(answer) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(answer));
            }
            if self.poll_client_gone(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes an answer: `close` says the connection ends after it. Whether it went out
    /// whole (if not, the connection is done).
    async fn respond(&mut self, answer: Response<Body>, manner: Manner) -> bool {
        let (parts, mut body) = answer.into_parts();
        let exact = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        let framing = BodyFraming::choose(parts.status, exact, manner.http11);
        let close = manner.close || framing == BodyFraming::UntilClose;
        self.out.clear();
        encode_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            parts.extensions.get::<HeaderLines>(),
            framing,
            close,
            manner.http10_keep_alive && !close,
        );
        if manner.head_only {
            return self.flush().await.is_ok();
        }
        let mut left = match framing {
            BodyFraming::None => return self.flush().await.is_ok(),
            BodyFraming::Length(length) => Some(length),
            BodyFraming::Chunked | BodyFraming::UntilClose => None,
        };
        let chunked = framing == BodyFraming::Chunked;
        loop {
            // What the body has ready goes out together; the gathered bytes leave when it
            // has nothing more for now.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if self.flush().await.is_err() {
                        return false;
                    }
                    match self.next_frame(&mut body).await {
                        Some(frame) => frame,
                        None => return false,
                    }
                }
            };
            let data = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                Some(Err(error)) => {
                    // What arrived goes out; the answer is cut short by closing.
                    tracing::debug!(%error, "an answer's body failed");
                    let _ = self.flush().await;
                    return false;
                }
                None => {
                    if chunked {
                        self.out.extend_from_slice(LAST_CHUNK);
                    }
                    let complete = left.is_none_or(|left| left == 0);
                    return self.flush().await.is_ok() && complete;
                }
            };
            if let Some(left) = &mut left {
                // A body longer than its length would be read as the next answer.
                let Some(rest) = left.checked_sub(data.len() as u64) else {
                    let _ = self.flush().await;
                    return false;
                };
                *left = rest;
            }
            if chunked {
                chunk_start(&mut self.out, data.len());
            }
            if data.len() >= WRITE_IN_PLACE {
                if self.write_with(&data).await.is_err() {
                    return false;
                }
            } else {
                self.out.extend_from_slice(&data);
            }
            if chunked {
                self.out.extend_from_slice(CHUNK_END);
            }
            if self.out.len() >= MAX_WRITE && self.flush().await.is_err() {
                return false;
            }
        }
    }

    /// The body's next frame, or `None` if the client leaves first.
    async fn next_frame(
        &mut self,
        body: &mut Body,
    ) -> Option<Option<Result<http_body::Frame<Bytes>, crate::http_body::BoxError>>> {
        poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                return Poll::Ready(Some(frame));
            }
            if self.poll_client_gone(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Ready once the client has closed its side of the connection (or it broke). What it
    /// sends meanwhile is kept for the next request, up to [`MAX_READ_AHEAD`].
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.input.len() < MAX_READ_AHEAD {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.input.reserve(READ_CHUNK);
        pin!(self.stream.read_buf(&mut self.input)).poll(cx)
    }

    /// Reads more input, by `due`. A connection that only `waiting` for a request ends the
    /// wait when the thread drains or sheds it.
    async fn fill(&mut self, due: Instant, waiting: Option<&IdleTicket>) -> Filled {
        poll_fn(|cx| {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Filled::Closed),
                Poll::Ready(Ok(_)) => return Poll::Ready(Filled::Read),
                Poll::Pending => {}
            }
            if let Some(ticket) = waiting {
                // A drain ends the connection, so the finished signal is never polled again.
                if self.draining.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Filled::Draining);
                }
                if self.idle.poll_shed(ticket, cx).is_ready() {
                    return Poll::Ready(Filled::Shed);
                }
            }
            if poll_due(&mut self.deadline, cx, due).is_ready() {
                return Poll::Ready(Filled::TimedOut);
            }
            Poll::Pending
        })
        .await
    }

    /// Reads and drops what a client is still sending before its connection closes, within
    /// [`DRAIN_BYTES`] and [`DRAIN_TIME`].
    async fn drain_input(&mut self) {
        let drained = async {
            let mut drained = 0;
            while drained < DRAIN_BYTES {
                self.input.clear();
                match poll_fn(|cx| self.poll_fill(cx)).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => drained += read,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let result = write_parts(&mut self.stream, &mut self.deadline, &self.out, &[]).await;
        self.out.clear();
        result
    }

    /// Writes what is gathered and then `data`, in one call where the socket takes it.
    async fn write_with(&mut self, data: &[u8]) -> std::io::Result<()> {
        let result = write_parts(&mut self.stream, &mut self.deadline, &self.out, data).await;
        self.out.clear();
        result
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_parts(&mut self.stream, &mut self.deadline, bytes, &[]).await
    }
}

/// Ready once `due` has passed. The one timer of a connection is made when first needed,
/// moved earlier when it must be, and later only when it fires before `due`.
fn poll_due(
    deadline: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    due: Instant,
) -> Poll<()> {
    let deadline = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
    if deadline.deadline() > due {
        deadline.as_mut().reset(due);
    }
    while deadline.as_mut().poll(cx).is_ready() {
        if Instant::now() >= due {
            return Poll::Ready(());
        }
        deadline.as_mut().reset(due);
    }
    Poll::Pending
}

/// Writes `first` and then `second`, vectored; fails once the client has taken nothing for
/// [`WRITE_STALL`] (a client that stops reading holds no connection and no request forever).
async fn write_parts(
    stream: &mut Accepted,
    deadline: &mut Option<Pin<Box<Sleep>>>,
    first: &[u8],
    second: &[u8],
) -> std::io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() || !second.is_empty() {
        let written = unless_stalled(deadline, |cx| {
            if second.is_empty() {
                Pin::new(&mut *stream).poll_write(cx, first)
            } else {
                let slices = [IoSlice::new(first), IoSlice::new(second)];
                Pin::new(&mut *stream).poll_write_vectored(cx, &slices)
            }
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len());
        first = &first[from_first..];
        second = &second[written - from_first..];
    }
    if matches!(stream, Accepted::Plain(_)) {
        return Ok(());
    }
    // TLS may hold records back until flushed; a socket's flush is a no-op.
    unless_stalled(deadline, |cx| Pin::new(&mut *stream).poll_flush(cx)).await
}

/// Polls `io` until it is ready, failing once it has made no progress for [`WRITE_STALL`].
async fn unless_stalled<T>(
    deadline: &mut Option<Pin<Box<Sleep>>>,
    mut io: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<T>>,
) -> std::io::Result<T> {
    let mut stalled_since: Option<Instant> = None;
    poll_fn(|cx| {
        let polled = io(cx);
        if polled.is_ready() {
            return polled;
        }
        let since = *stalled_since.get_or_insert_with(Instant::now);
        if poll_due(deadline, cx, since + WRITE_STALL).is_ready() {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::*;

    /// A pair of connected loopback sockets, the server's as accepted.
    async fn pair() -> (Accepted, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Accepted::Plain(server), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_given_up_on_and_one_that_reads_is_not() {
        let (mut server, client) = pair().await;
        let mut deadline = None;
        let big = vec![b'x'; 64 * 1024 * 1024];
        let started = Instant::now();
        let written = write_parts(&mut server, &mut deadline, b"head", &big).await;
        assert_eq!(
            written.map_err(|error| error.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
        assert!(started.elapsed() >= WRITE_STALL);

        // A reader that keeps taking what is written lets the same bytes through. On real
        // time: a paused clock jumps to the next timer whenever both tasks wait on the kernel's
        // socket buffers, and would time the reading client out too.
        tokio::time::resume();
        let (mut server, client_two) = pair().await;
        drop(client);
        let reader = tokio::spawn(async move {
            let mut client = client_two;
            let mut total = 0;
            let mut buffer = vec![0_u8; 1 << 20];
            while let Ok(read) = client.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                total += read;
            }
            total
        });
        let mut deadline = None;
        write_parts(&mut server, &mut deadline, b"head", &big)
            .await
            .expect("a reading client takes it all");
        drop(server);
        assert_eq!(reader.await.expect("reader"), big.len() + 4);
    }
}
