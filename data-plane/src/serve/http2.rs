//! HTTP/2 with prior knowledge (h2c), served by hyper: a connection the HTTP/1.1 server saw
//! open with HTTP/2's preface is handed here with the bytes already read from it, replayed
//! to hyper before the socket's own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_shared::tls::accepted::Accepted;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::http_body::HeaderLines;
use crate::request::body::RequestBody;
use crate::serve::http1::Http2Start;
use crate::serve::router::route;

pub type Builder = hyper::server::conn::http2::Builder<TokioExecutor>;

pub fn builder() -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// Serves the connection until it ends; a drain lets its open streams finish and refuses
/// new ones (GOAWAY).
pub async fn serve(
    start: Http2Start,
    gateway: Arc<Gateway>,
    builder: &Builder,
    mut drain: watch::Receiver<bool>,
) {
    let Http2Start {
        stream,
        input,
        slot,
    } = start;
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let gateway = gateway.clone();
        async move {
            let request = request.map(RequestBody::Streaming);
            let mut response = route(&gateway, request).await;
            if let Some(lines) = response.extensions_mut().remove::<HeaderLines>() {
                lines.move_into(response.headers_mut());
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = Rewound {
        read: input,
        stream,
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let drained = async move {
        let _ = drain.wait_for(|draining| *draining).await;
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = drained => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "an HTTP/2 connection ended with an error");
    }
    // The slot under the connection cap is free before the socket closes.
    drop(slot);
}

/// A socket with bytes already read from it put back in front.
struct Rewound {
    read: BytesMut,
    stream: Accepted,
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
