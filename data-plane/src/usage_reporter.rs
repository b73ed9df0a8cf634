//! Usage records leave the request path through a bounded queue (a full queue drops and counts,
//! never blocks a request) and reach the control plane in batches, each with an id chosen
//! before it is first sent. A batch is kept until the control plane acknowledges it, and
//! re-sent after a reconnect; the control plane commits each id once.
//! The on-disk spool that survives a proxy crash comes with the usage-ledger work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_proto::usage::v1 as pb;
use sluice_shared::secret::SecretString;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::gateway::Gateway;
use crate::usage_wire::{EncodedBatch, REPORT_USAGE_PATH, UsageCodec};

/// Records held between flushes (at 20 000 req/s and the default 100 ms flush, 2 000 of them).
const QUEUE: usize = 65_536;
/// Batches kept in memory while the control plane is away.
const MAX_PENDING_BATCHES: usize = 2_000;
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);

/// The request path's end of the queue.
#[derive(Clone)]
pub struct UsageSink {
    sender: mpsc::Sender<pb::UsageRecord>,
}

impl UsageSink {
    pub fn channel() -> (Self, mpsc::Receiver<pb::UsageRecord>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (Self { sender }, receiver)
    }

    /// Never waits: `false` when the queue is full and the record was dropped.
    pub fn record(&self, record: pb::UsageRecord) -> bool {
        self.sender.try_send(record).is_ok()
    }
}

pub struct UsageReporter {
    pub gateway: Arc<Gateway>,
    pub receiver: mpsc::Receiver<pb::UsageRecord>,
    /// Connects lazily and reconnects by itself; each delivery opens one stream on it.
    pub channel: Channel,
    pub token: Arc<SecretString>,
    pub proxy_id: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Set on shutdown: flush everything queued, deliver it, then stop.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl UsageReporter {
    /// Drains the queue on a timer rather than waiting on it: a request that records usage
    /// never wakes this task, so metering costs the request path one atomic push.
    pub async fn run(mut self) {
        let mut pending: VecDeque<EncodedBatch> = VecDeque::new();
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        let mut closing = false;
        while open || !pending.is_empty() {
            if !closing {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = self.shutdown.changed() => closing = true,
                }
            }
            let mut batch = Vec::with_capacity(self.batch_size);
            loop {
                match self.receiver.try_recv() {
                    Ok(record) => {
                        batch.push(record);
                        if batch.len() == self.batch_size {
                            self.enqueue(&mut pending, std::mem::take(&mut batch));
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.enqueue(&mut pending, batch);
            }
            if pending.is_empty() {
                if closing {
                    return;
                }
                continue;
            }
            if let Err(error) = self.deliver(&mut pending).await {
                tracing::warn!(%error, pending = pending.len(), "cannot deliver usage yet; will retry");
                if !open || closing {
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Gives the records a batch id (kept for every retry) and queues them for delivery.
    fn enqueue(&self, pending: &mut VecDeque<EncodedBatch>, records: Vec<pb::UsageRecord>) {
        pending.push_back(EncodedBatch::new(sluice_shared::ids::new_id(), records));
        while pending.len() > MAX_PENDING_BATCHES {
            if let Some(dropped) = pending.pop_front() {
                self.gateway
                    .metrics
                    .usage_records_dropped_total
                    .fetch_add(dropped.records as u64, Ordering::Relaxed);
                tracing::error!(batch_id = %dropped.batch_id, "usage backlog full; dropped the oldest batch");
            }
        }
    }

    /// Sends every pending batch and drops each once acknowledged.
    async fn deliver(&self, pending: &mut VecDeque<EncodedBatch>) -> Result<(), tonic::Status> {
        let channel = self.channel.clone();
        let (outbound, receiver) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        let mut header: MetadataValue<_> = format!("Bearer {}", self.token.expose())
            .parse()
            .map_err(|_| tonic::Status::unauthenticated("token cannot travel in a header"))?;
        header.set_sensitive(true);
        request.metadata_mut().insert("authorization", header);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(format!("usage stream: {error}")))?;
        let mut acks = grpc
            .streaming(
                request,
                http::uri::PathAndQuery::from_static(REPORT_USAGE_PATH),
                UsageCodec,
            )
            .await?
            .into_inner();
        while let Some(batch) = pending.front() {
            let batch_id = batch.batch_id.clone();
            outbound
                .send(batch.report_request(&self.proxy_id))
                .await
                .map_err(|_| tonic::Status::unavailable("usage stream closed"))?;
            let ack = tokio::time::timeout(ACK_TIMEOUT, acks.message())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no usage acknowledgement"))??
                .ok_or_else(|| tonic::Status::unavailable("usage stream ended"))?;
            if ack.batch_id != batch_id {
                return Err(tonic::Status::internal("acknowledgement for another batch"));
            }
            if !ack.committed {
                // Kept out of the way but never silently lost: logged with its id for repair.
                tracing::error!(%batch_id, error = %ack.error, "control plane refused a usage batch");
            }
            pending.pop_front();
            self.gateway
                .metrics
                .usage_batches_acked_total
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
