//! A streamed upstream body passed to the client frame by frame as it arrives, metered on the
//! way: the credential sent upstream is scrubbed from it, usage is read from the SSE events,
//! and recorded exactly once — at the end, on an upstream error, on an idle timeout, or when
//! the client goes away (drop).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use sluice_shared::credential_scrub::{CredentialScrubber, StreamScrubber};
use tokio::time::{Instant, Sleep};

use crate::gateway::Gateway;
use crate::http_body::BoxError;
use crate::metering::draft::UsageDraft;
use crate::sse::SseUsageScanner;

pub struct MeteredBody {
    inner: Incoming,
    scrubber: StreamScrubber,
    scanner: SseUsageScanner,
    draft: Option<(UsageDraft, Arc<Gateway>)>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl MeteredBody {
    pub fn new(
        inner: Incoming,
        draft: UsageDraft,
        gateway: Arc<Gateway>,
        idle: Duration,
        scrubber: CredentialScrubber,
    ) -> Self {
        Self {
            inner,
            scrubber: StreamScrubber::new(scrubber),
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
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(error))) => {
                    self.done = true;
                    self.finish();
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                Poll::Ready(None) => return Poll::Ready(self.ended()),
                Poll::Pending => {
                    if self.deadline.as_mut().poll(cx).is_ready() {
                        self.done = true;
                        self.finish();
                        return Poll::Ready(Some(Err("upstream stream idle timeout".into())));
                    }
                    return Poll::Pending;
                }
            };
            let next = Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
            let Ok(data) = frame.into_data() else {
                // Trailers carry nothing a client needs from an upstream.
                continue;
            };
            let clean = match self.scrubber.next(&data) {
                Cow::Borrowed(same) if same.len() == data.len() => data,
                Cow::Borrowed(prefix) => data.slice(..prefix.len()),
                Cow::Owned(clean) => Bytes::from(clean),
            };
            if clean.is_empty() {
                continue;
            }
            self.scanner.feed(&clean);
            return Poll::Ready(Some(Ok(Frame::data(clean))));
        }
    }
}

impl MeteredBody {
    /// The upstream body ended: what was held back in case it began a credential goes out
    /// after all, then the stream ends and its usage is recorded.
    fn ended(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        let held = self.scrubber.finish();
        if !held.is_empty() {
            self.scanner.feed(&held);
            return Some(Ok(Frame::data(Bytes::from(held))));
        }
        self.done = true;
        self.finish();
        None
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}
