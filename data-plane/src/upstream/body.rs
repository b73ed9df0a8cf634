//! An upstream answer's body: read from its HTTP/1.1 connection in the reader's task
//! ([`Http1Body`]; read to its end, the connection goes back to this thread's pool, dropped
//! early, the connection closes with it), or a stream of a shared HTTP/2 connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::http1::{Http1Body, Http1Error};

pub struct UpstreamBody(Inner);

enum Inner {
    Http1(Http1Body),
    Http2(Incoming),
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error(transparent)]
    Http1(#[from] Http1Error),
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

impl UpstreamBody {
    pub(super) fn http1(body: Http1Body) -> Self {
        Self(Inner::Http1(body))
    }

    pub(super) fn http2(body: Incoming) -> Self {
        Self(Inner::Http2(body))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match &mut self.get_mut().0 {
            Inner::Http1(body) => body.poll_frame(cx).map_err(Into::into),
            Inner::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Http1(body) => body
                .exact_len()
                .map_or_else(SizeHint::new, SizeHint::with_exact),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0 {
            Inner::Http1(_) => "UpstreamBody(HTTP/1.1)",
            Inner::Http2(_) => "UpstreamBody(HTTP/2)",
        })
    }
}
