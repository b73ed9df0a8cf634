//! A streamed upstream body passed to the client frame by frame as it arrives, metered on the
//! way: usage is read from the SSE events, and recorded exactly once — at the end, on an
//! upstream error, on an idle timeout, or when the client goes away (drop).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::gateway::Gateway;
use crate::http_body::BoxError;
use crate::sse::SseUsageScanner;
use crate::usage::UsageDraft;

pub struct MeteredBody {
    inner: Incoming,
    scanner: SseUsageScanner,
    draft: Option<(UsageDraft, Arc<Gateway>)>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl MeteredBody {
    pub fn new(inner: Incoming, draft: UsageDraft, gateway: Arc<Gateway>, idle: Duration) -> Self {
        Self {
            inner,
            scanner: SseUsageScanner::default(),
            draft: Some((draft, gateway)),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            done: false,
        }
    }

    fn finish(&mut self) {
        if let Some((draft, gateway)) = self.draft.take() {
            draft.finish_stream(&gateway, &self.scanner);
        }
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.scanner.feed(data);
                }
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.done = true;
                self.finish();
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    self.finish();
                    return Poll::Ready(Some(Err("upstream stream idle timeout".into())));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}
