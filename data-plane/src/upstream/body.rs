//! An upstream answer's body. Over HTTP/1.1 it carries the connection it arrives on and drives
//! it while it is read, in the reader's task; read to its end, the connection goes back to this
//! thread's pool, and dropped early, the connection closes with it (the answer is abandoned).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{self, Http1Connection, PoolKey};

pub struct UpstreamBody {
    incoming: Incoming,
    /// The HTTP/1.1 connection the body arrives on, until it ends or goes back to the pool.
    connection: Option<(PoolKey, Http1Connection)>,
}

impl UpstreamBody {
    pub(super) fn new(incoming: Incoming, connection: Option<(PoolKey, Http1Connection)>) -> Self {
        Self {
            incoming,
            connection,
        }
    }

    /// The answer has been read in full: the connection can carry the next request.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some((key, mut connection)) = self.connection.take() {
            // One more turn lets the connection finish the exchange; one that ends instead
            // (the upstream said `Connection: close`) is dropped.
            if !connection.poll_ended(cx) {
                pool::check_in(key, connection);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some((_, connection)) = &mut this.connection
            && connection.poll_ended(cx)
        {
            // What it read is in the body already; the body reports how it ended.
            this.connection = None;
        }
        let frame = Pin::new(&mut this.incoming).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.connection = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("incoming", &self.incoming)
            .field("pooled_on_end", &self.connection.is_some())
            .finish()
    }
}
