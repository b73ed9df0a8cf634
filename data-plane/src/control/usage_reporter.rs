//! Delivers the spool to the control plane. Each flush reads the records written since the
//! last one, makes them durable (`msync`), groups them into batches with fresh ids and sends
//! them; a segment file is deleted once every record in it is acknowledged and no stream
//! that started in it is still open. Only a few batches are held in memory: during a
//! control-plane outage the backlog stays on disk.
//!
//! Files left by an earlier process are delivered first. A stream that had started but not
//! finished when that process died is delivered as its `Started` estimate. A record may be
//! sent twice across a crash (once before, once from its file); the control plane stores each
//! request id once, so that is harmless.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use sluice_proto::usage::v1 as pb;
use sluice_shared::secret::SecretString;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::gateway::Gateway;
use crate::usage::spool::{Read, Segment, UsageSpool, WhenFull};
use crate::usage::spool_format::{EntryKind, scan};
use crate::usage::wire::{BatchBuilder, EncodedBatch, REPORT_USAGE_PATH, UsageCodec};

/// Batches held in memory at once; the rest waits in the spool.
const MAX_BATCHES_IN_MEMORY: usize = 4;
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);
const QUARANTINE_DIR: &str = "quarantine";

pub struct UsageReporter {
    pub gateway: Arc<Gateway>,
    pub spool: Arc<UsageSpool>,
    /// Spool files an earlier process left, oldest first.
    pub recovered: Vec<PathBuf>,
    /// Connects lazily and reconnects by itself; each delivery opens one stream on it.
    pub channel: Channel,
    pub token: Arc<SecretString>,
    pub proxy_id: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Set on shutdown: deliver everything spooled, then stop.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Where a batch's records came from, so an acknowledgement can free their segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Live(u64),
    Recovered,
}

struct PendingBatch {
    encoded: EncodedBatch,
    sources: Vec<(Source, usize)>,
    /// When its first record was read from the spool (UTC µs).
    read_at_us: i64,
}

/// How far the reporter got in one live segment.
struct Progress {
    segment: Arc<Segment>,
    read_to: usize,
    synced_to: usize,
    fully_read: bool,
    unacked: usize,
}

/// Files of an earlier process: read one at a time, deleted together once all is delivered.
struct Recovery {
    unread: VecDeque<PathBuf>,
    read: Vec<PathBuf>,
    /// `Started` entries (by request id) with no `Completed` entry seen yet.
    open_streams: HashMap<String, Vec<u8>>,
    unacked_batches: usize,
}

/// A batch being filled, with its sources.
struct Filling {
    builder: BatchBuilder,
    sources: Vec<(Source, usize)>,
    read_at_us: i64,
}

impl Filling {
    fn new() -> Self {
        Self {
            builder: BatchBuilder::new(sluice_shared::ids::new_id()),
            sources: Vec::new(),
            read_at_us: 0,
        }
    }

    fn push(&mut self, source: Source, record: &[u8]) {
        if self.builder.is_empty() {
            self.read_at_us = sluice_shared::time::now_us();
        }
        self.builder.push(record);
        match self.sources.last_mut() {
            Some((last, count)) if *last == source => *count += 1,
            _ => self.sources.push((source, 1)),
        }
    }
}

struct State {
    progress: Vec<Progress>,
    recovery: Recovery,
    pending: VecDeque<PendingBatch>,
    filling: Filling,
}

impl UsageReporter {
    pub async fn run(mut self) {
        let mut state = State {
            progress: Vec::new(),
            recovery: Recovery {
                unread: std::mem::take(&mut self.recovered).into(),
                read: Vec::new(),
                open_streams: HashMap::new(),
                unacked_batches: 0,
            },
            pending: VecDeque::new(),
            filling: Filling::new(),
        };
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            if !closing {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = self.shutdown.changed() => closing = true,
                }
            }
            self.track_segments(&mut state);
            if self.spool.settings().when_full == WhenFull::DropOldest {
                self.drop_oldest_at_bound(&mut state);
            }
            self.read_recovered(&mut state);
            let caught_up = self.read_live(&mut state, closing);
            self.sync(&mut state).await;
            let delivered = if state.pending.is_empty() {
                Ok(())
            } else {
                self.deliver(&mut state).await
            };
            self.retire(&mut state, closing);
            self.publish(&state);
            match delivered {
                Ok(()) if closing && caught_up && state.pending.is_empty() => {
                    self.retire(&mut state, true);
                    return;
                }
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, pending = state.pending.len(), "cannot deliver usage yet; it stays in the spool and will be retried");
                    if closing {
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }

    /// What `/metrics` says of the spool: at its bound or not, its files, and what has been
    /// read from it and not yet acknowledged.
    fn publish(&self, state: &State) {
        let metrics = &self.gateway.metrics;
        metrics
            .usage_spool_full
            .store(self.spool.at_bound(), Ordering::Relaxed);
        metrics
            .usage_spool_files
            .store(self.spool.files_on_disk() as u64, Ordering::Relaxed);
        let pending: usize = state
            .pending
            .iter()
            .flat_map(|batch| &batch.sources)
            .map(|(_, count)| count)
            .sum();
        metrics
            .usage_pending_records
            .store(pending as u64, Ordering::Relaxed);
        metrics.usage_oldest_pending_at_us.store(
            state.pending.front().map_or(0, |batch| batch.read_at_us),
            Ordering::Relaxed,
        );
    }

    /// Follows the spool's segment list: new segments start unread; segments gone (dropped at
    /// the bound) stop being tracked.
    fn track_segments(&self, state: &mut State) {
        let live = self.spool.live_segments();
        state
            .progress
            .retain(|p| live.iter().any(|s| Arc::ptr_eq(s, &p.segment)));
        for segment in live {
            if !state
                .progress
                .iter()
                .any(|p| Arc::ptr_eq(&p.segment, &segment))
            {
                state.progress.push(Progress {
                    segment,
                    read_to: 0,
                    synced_to: 0,
                    fully_read: false,
                    unacked: 0,
                });
            }
        }
    }

    fn room(state: &State) -> bool {
        state.pending.len() < MAX_BATCHES_IN_MEMORY
    }

    fn seal_filling(&self, state: &mut State) {
        if state.filling.builder.is_empty() {
            return;
        }
        let filling = std::mem::replace(&mut state.filling, Filling::new());
        // A recovered record may have reached the control plane under a batch id the earlier
        // process never saw acknowledged; a live record travels in this one batch only.
        let recovered = filling.sources.iter().any(|(s, _)| *s == Source::Recovered);
        if recovered {
            state.recovery.unacked_batches += 1;
        }
        state.pending.push_back(PendingBatch {
            encoded: filling.builder.finish(!recovered),
            sources: filling.sources,
            read_at_us: filling.read_at_us,
        });
    }

    fn push_record(&self, state: &mut State, source: Source, record: &[u8]) {
        state.filling.push(source, record);
        if state.filling.builder.len() >= self.batch_size {
            self.seal_filling(state);
        }
    }

    /// Reads the next file an earlier process left, when there is room for its records.
    fn read_recovered(&self, state: &mut State) {
        while Self::room(state) {
            let Some(path) = state.recovery.unread.pop_front() else {
                break;
            };
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot read a usage spool file; leaving it for the operator");
                    self.spool.recovered_file_gone();
                    continue;
                }
            };
            let found = scan(&bytes);
            if found.damaged_regions > 0 {
                self.gateway
                    .metrics
                    .usage_spool_damaged_total
                    .fetch_add(found.damaged_regions as u64, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), damaged = found.damaged_regions, "usage spool file has torn or damaged entries; skipped them and kept the rest");
            }
            let mut recovered = 0u64;
            for entry in &found.entries {
                let Ok(record) = pb::UsageRecord::decode(entry.payload) else {
                    continue;
                };
                match entry.kind {
                    EntryKind::Started => {
                        state
                            .recovery
                            .open_streams
                            .insert(record.request_id, entry.payload.to_vec());
                    }
                    EntryKind::Completed => {
                        state.recovery.open_streams.remove(&record.request_id);
                        self.push_record(state, Source::Recovered, entry.payload);
                        recovered += 1;
                    }
                    EntryKind::Void => {}
                }
            }
            state.recovery.read.push(path);
            if state.recovery.unread.is_empty() {
                // Streams that never finished: their estimate is all there is.
                for (_, estimate) in std::mem::take(&mut state.recovery.open_streams) {
                    self.push_record(state, Source::Recovered, &estimate);
                    recovered += 1;
                }
            }
            self.gateway
                .metrics
                .usage_records_recovered_total
                .fetch_add(recovered, Ordering::Relaxed);
        }
        if state
            .filling
            .sources
            .iter()
            .any(|(s, _)| *s == Source::Recovered)
        {
            self.seal_filling(state);
        }
    }

    /// Reads committed records from the live segments into batches. Returns whether it reached
    /// the end of what was written.
    fn read_live(&self, state: &mut State, closing: bool) -> bool {
        if !state.recovery.unread.is_empty() {
            return false;
        }
        let mut caught_up = true;
        for index in 0..state.progress.len() {
            if state.progress[index].fully_read {
                continue;
            }
            // Payloads borrow the mapping this `Arc` keeps alive, not `state`.
            let segment = state.progress[index].segment.clone();
            loop {
                if !Self::room(state) {
                    caught_up = false;
                    break;
                }
                match segment.read(state.progress[index].read_to) {
                    Read::Entry {
                        kind,
                        payload,
                        next,
                    } => {
                        state.progress[index].read_to = next;
                        if kind == EntryKind::Completed {
                            state.progress[index].unacked += 1;
                            self.push_record(state, Source::Live(segment.seq), payload);
                        }
                    }
                    Read::End => {
                        state.progress[index].fully_read = true;
                        break;
                    }
                    Read::Pending => {
                        // Writers are still adding here. Once they have stopped (closing),
                        // the current segment ends where its entries end.
                        caught_up = closing && self.spool.is_current(&segment);
                        break;
                    }
                }
            }
            if !state.progress[index].fully_read {
                break;
            }
        }
        self.seal_filling(state);
        caught_up
    }

    /// Makes every record read so far durable before it is sent.
    async fn sync(&self, state: &mut State) {
        let work: Vec<(Arc<Segment>, usize, usize)> = state
            .progress
            .iter()
            .filter(|p| p.read_to > p.synced_to)
            .map(|p| (p.segment.clone(), p.synced_to, p.read_to))
            .collect();
        if work.is_empty() {
            return;
        }
        let synced = tokio::task::spawn_blocking(move || {
            for (segment, from, upto) in &work {
                if let Err(error) = segment.sync(*from, *upto) {
                    tracing::warn!(path = %segment.path().display(), %error, "cannot sync the usage spool");
                }
            }
            work
        })
        .await;
        if let Ok(work) = synced {
            for (segment, _, upto) in work {
                if let Some(p) = state
                    .progress
                    .iter_mut()
                    .find(|p| Arc::ptr_eq(&p.segment, &segment))
                {
                    p.synced_to = upto;
                }
            }
        }
    }

    /// Deletes segments that are finished: read to their end, every record acknowledged, no
    /// stream still open in them. Once writers have stopped (`closing`), the current segment
    /// is finished too when caught up. Recovered files go once all of them are delivered.
    fn retire(&self, state: &mut State, closing: bool) {
        let spool = &self.spool;
        state.progress.retain(|p| {
            let at_end = p.fully_read || (closing && p.segment.written_bound() <= p.read_to);
            let done = at_end && p.unacked == 0 && p.segment.open_streams() == 0;
            let sealed = p.segment.sealed() || closing;
            if done && sealed {
                if let Err(error) = spool.retire(&p.segment) {
                    tracing::warn!(%error, "cannot delete a delivered usage spool file");
                }
                false
            } else {
                true
            }
        });
        let recovery = &mut state.recovery;
        if recovery.unread.is_empty()
            && recovery.unacked_batches == 0
            && !state
                .filling
                .sources
                .iter()
                .any(|(s, _)| *s == Source::Recovered)
        {
            for path in recovery.read.drain(..) {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot delete a delivered usage spool file");
                }
                spool.recovered_file_gone();
            }
        }
    }

    /// At the bound with the drop-oldest policy: the oldest undelivered file goes, and its
    /// undelivered records are counted as dropped.
    fn drop_oldest_at_bound(&self, state: &mut State) {
        while self.spool.at_bound() {
            if let Some(path) = state.recovery.unread.pop_front() {
                let dropped = std::fs::read(&path)
                    .map(|bytes| {
                        scan(&bytes)
                            .entries
                            .iter()
                            .filter(|e| e.kind == EntryKind::Completed)
                            .count()
                    })
                    .unwrap_or(0);
                self.count_dropped(dropped, &path);
                let _ = std::fs::remove_file(&path);
                self.spool.recovered_file_gone();
                continue;
            }
            let Some(oldest) = state.progress.iter().position(|p| p.segment.sealed()) else {
                return;
            };
            let progress = state.progress.remove(oldest);
            let mut dropped = 0;
            let mut offset = progress.read_to;
            while let Read::Entry { kind, next, .. } = progress.segment.read(offset) {
                dropped += usize::from(kind == EntryKind::Completed);
                offset = next;
            }
            self.count_dropped(dropped, progress.segment.path());
            if let Err(error) = self.spool.retire(&progress.segment) {
                tracing::warn!(%error, "cannot delete a usage spool file at the bound");
            }
        }
    }

    fn count_dropped(&self, records: usize, path: &std::path::Path) {
        self.gateway
            .metrics
            .usage_records_dropped_total
            .fetch_add(records as u64, Ordering::Relaxed);
        tracing::error!(path = %path.display(), records, "usage spool at its bound: dropped the oldest undelivered records");
    }

    fn acknowledged(&self, state: &mut State, batch: PendingBatch) {
        for &(source, count) in &batch.sources {
            match source {
                Source::Live(seq) => {
                    if let Some(p) = state.progress.iter_mut().find(|p| p.segment.seq == seq) {
                        p.unacked = p.unacked.saturating_sub(count);
                    }
                }
                Source::Recovered => {}
            }
        }
        if batch.sources.iter().any(|(s, _)| *s == Source::Recovered) {
            state.recovery.unacked_batches = state.recovery.unacked_batches.saturating_sub(1);
        }
    }

    /// Keeps a batch the control plane refused beside the spool, for an operator to repair;
    /// it is never silently dropped.
    fn quarantine(&self, batch: &EncodedBatch, reason: &str) {
        self.gateway
            .metrics
            .usage_batches_quarantined_total
            .fetch_add(1, Ordering::Relaxed);
        let dir = self.spool.settings().dir.join(QUARANTINE_DIR);
        let path = dir.join(format!("{}.batch", batch.batch_id));
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &batch.bytes));
        match written {
            Ok(()) => {
                tracing::error!(batch_id = %batch.batch_id, path = %path.display(), reason, "control plane refused a usage batch; quarantined it")
            }
            Err(error) => {
                tracing::error!(batch_id = %batch.batch_id, reason, %error, "control plane refused a usage batch and it could not be quarantined")
            }
        }
    }

    /// Sends every pending batch and lets go of each once acknowledged.
    async fn deliver(&self, state: &mut State) -> Result<(), tonic::Status> {
        let channel = self.channel.clone();
        let (outbound, receiver) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        crate::control::token::authorize(&mut request, &self.token)?;
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
        while let Some(batch) = state.pending.front() {
            let batch_id = batch.encoded.batch_id.clone();
            outbound
                .send(batch.encoded.report_request(&self.proxy_id))
                .await
                .map_err(|_| tonic::Status::unavailable("usage stream closed"))?;
            let ack = tokio::time::timeout(ACK_TIMEOUT, acks.message())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no usage acknowledgement"))??
                .ok_or_else(|| tonic::Status::unavailable("usage stream ended"))?;
            if ack.batch_id != batch_id {
                return Err(tonic::Status::internal("acknowledgement for another batch"));
            }
            let Some(batch) = state.pending.pop_front() else {
                break;
            };
            if !ack.committed {
                self.quarantine(&batch.encoded, &ack.error);
            }
            self.acknowledged(state, batch);
            self.gateway
                .metrics
                .usage_batches_acked_total
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use prost::Message;
    use sluice_proto::usage::v1::usage_service_server::{UsageService, UsageServiceServer};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::budgets::leases::LeaseBook;
    use crate::upstream::UpstreamClient;
    use crate::usage::spool::{SpoolSettings, UsageSpool};

    /// A control plane that refuses every batch, as it would a reused id with another payload.
    struct Refusing;

    #[tonic::async_trait]
    impl UsageService for Refusing {
        type ReportUsageStream = ReceiverStream<Result<pb::ReportUsageResponse, Status>>;

        async fn report_usage(
            &self,
            request: Request<Streaming<pb::ReportUsageRequest>>,
        ) -> Result<Response<Self::ReportUsageStream>, Status> {
            let mut inbound = request.into_inner();
            let (sender, receiver) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(request)) = inbound.message().await {
                    let batch_id = request.batch.map(|b| b.batch_id).unwrap_or_default();
                    let refused = pb::ReportUsageResponse {
                        batch_id,
                        committed: false,
                        error: "batch id already committed with a different payload".into(),
                    };
                    if sender.send(Ok(refused)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(receiver)))
        }
    }

    async fn refusing_control_plane() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(UsageServiceServer::new(Refusing))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    #[tokio::test]
    async fn a_refused_batch_is_quarantined_on_disk_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovered) = UsageSpool::open(SpoolSettings {
            dir: dir.path().join("spool"),
            segment_bytes: 64 * 1024,
            max_bytes: 1 << 20,
            when_full: WhenFull::Refuse,
        })
        .unwrap();
        for n in 0..3 {
            let record = pb::UsageRecord {
                request_id: format!("req-{n}"),
                cost_micros: 10,
                ..Default::default()
            };
            spool.complete(&record, None).unwrap();
        }
        let gateway = Gateway::new(
            spool.clone(),
            UpstreamClient::new(),
            1024,
            LeaseBook::new(1, Duration::from_millis(10)),
            16,
            Default::default(),
            Default::default(),
        );
        let addr = refusing_control_plane().await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let reporter = tokio::spawn(
            UsageReporter {
                gateway: gateway.clone(),
                spool,
                recovered,
                channel,
                token: Arc::new(SecretString::new("sluice-dp-test".into())),
                proxy_id: "proxy-test".into(),
                batch_size: 100,
                flush_interval: Duration::from_millis(20),
                shutdown,
            }
            .run(),
        );
        let quarantine = dir.path().join("spool").join(QUARANTINE_DIR);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while gateway
            .metrics
            .usage_batches_quarantined_total
            .load(Ordering::Relaxed)
            == 0
        {
            assert!(tokio::time::Instant::now() < deadline, "never quarantined");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let files: Vec<_> = std::fs::read_dir(&quarantine)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let batch = pb::UsageBatch::decode(std::fs::read(&files[0]).unwrap().as_slice()).unwrap();
        let ids: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.request_id.as_str())
            .collect();
        assert_eq!(ids, ["req-0", "req-1", "req-2"]);
        // Nothing is retried forever or lost: the stop is clean.
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), reporter)
            .await
            .unwrap()
            .unwrap();
    }
}
