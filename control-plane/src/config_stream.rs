//! `sluice.config.v1.ConfigService`: one long-lived stream per proxy.
//!
//! Protocol (after Envoy's xDS): the proxy says Hello with the version it holds and its
//! sealing key; whenever the newest version differs from what the proxy holds, the stream sends
//! a snapshot with a fresh nonce, in parts; the proxy's next message is an Ack (it now serves
//! that version) or a Nack (it keeps the previous one, with a reason). Replies with any nonce
//! but the latest are stale and ignored. Once a proxy has ACKed a version on this stream, the
//! next snapshots carry only the virtual keys changed since (incremental xDS's idea, for the
//! one table that grows with the fleet). One snapshot is in flight per proxy: changes made while
//! it is unanswered wait, and its answer releases the newest, so a difference is always taken
//! from the version the proxy serves. A NACKed version is not re-sent; the next change is,
//! whole. The version each proxy runs is recorded, and never lowered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::config::v1 as pb;
use sluice_proto::config::v1::config_service_server::ConfigService;
use sluice_shared::ids::new_id;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use sluice_otlp::SpanKind;

use crate::metrics::Metrics;
use crate::snapshot_builder::{ConfigWatch, seal_snapshot};
use crate::store::{self, ConfigState, Store};
use crate::telemetry::Span;
use crate::vault::Vault;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connected proxy's last-seen time is refreshed.
const SEEN_INTERVAL: Duration = Duration::from_secs(10);
const MAX_NACK_REASON: usize = 2_000;
/// What of a proxy's report of what it leaves out is kept: entries of each kind, characters of
/// each name.
const MAX_LEFT_OUT: usize = 256;
const MAX_LEFT_OUT_NAME: usize = 300;
/// How long a snapshot may go unanswered before a newer one is sent anyway, whole: a proxy
/// that lost track of it would otherwise never get another.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ConfigStreamService<S> {
    store: Arc<S>,
    vault: Arc<Vault>,
    config: ConfigWatch,
    metrics: Arc<Metrics>,
}

impl<S> ConfigStreamService<S> {
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        config: ConfigWatch,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            vault,
            config,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl<S: Store> ConfigService for ConfigStreamService<S> {
    type StreamConfigStream = ReceiverStream<Result<pb::StreamConfigResponse, Status>>;

    async fn stream_config(
        &self,
        request: Request<Streaming<pb::StreamConfigRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let address = request
            .extensions()
            .get::<sluice_shared::tls::accepted::Peer>()
            .and_then(|peer| peer.tcp.remote_addr)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::StreamConfigRequest {
                message: Some(pb::stream_config_request::Message::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
        };
        crate::validation::proxy_id("proxy_id", &hello.proxy_id)
            .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
        if hello.sealing_public_key.len() != 32 {
            return Err(Status::invalid_argument(
                "sealing_public_key: must be 32 bytes (X25519)",
            ));
        }
        // One slot: a slow proxy holds up only its own stream, and gets the newest version.
        let (sender, receiver) = mpsc::channel(1);
        let session = Session {
            store: self.store.clone(),
            vault: self.vault.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            proxy_id: hello.proxy_id,
            proxy_key: hello.sealing_public_key,
            held_version: hello.held_version,
            address,
        };
        tokio::spawn(session.run(inbound, sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

struct Session<S> {
    store: Arc<S>,
    vault: Arc<Vault>,
    config: ConfigWatch,
    metrics: Arc<Metrics>,
    proxy_id: String,
    proxy_key: Vec<u8>,
    held_version: u64,
    address: String,
}

/// The snapshot in flight: its nonce, the state it carries, whether it was a difference, and
/// when its last part went.
struct Pending {
    nonce: String,
    state: Arc<ConfigState>,
    delta: bool,
    /// When its sealing began, and when its last part went.
    began: Instant,
    sent_at: Instant,
}

impl Pending {
    fn unanswered_too_long(&self) -> bool {
        self.sent_at.elapsed() >= REPLY_TIMEOUT
    }
}

/// What the stream knows of its proxy's config.
#[derive(Default)]
struct Known {
    pending: Option<Pending>,
    /// The state the proxy ACKed on this stream: what a difference is taken from.
    serving: Option<Arc<ConfigState>>,
    /// A whole version the proxy refused: not sent again.
    rejected: Option<u64>,
}

impl<S: Store> Session<S> {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::StreamConfigRequest>,
        sender: mpsc::Sender<Result<pb::StreamConfigResponse, Status>>,
    ) {
        tracing::info!(proxy_id = %self.proxy_id, held_version = self.held_version, address = %self.address, "proxy connected");
        self.record_connection(true).await;
        self.metrics
            .proxy_serves(&self.proxy_id, Some(self.held_version));
        let mut known = Known::default();
        let mut seen = tokio::time::interval(SEEN_INTERVAL);
        seen.tick().await;
        'stream: loop {
            let newest = self.config.borrow_and_update().clone();
            if let Some(state) = newest {
                self.metrics
                    .latest_version
                    .fetch_max(state.version, std::sync::atomic::Ordering::Relaxed);
                let wanted = state.version != self.held_version
                    && known.rejected != Some(state.version)
                    && known.pending.as_ref().is_none_or(|p| {
                        p.unanswered_too_long() && p.state.version != state.version
                    });
                if wanted && known.pending.take().is_some() {
                    tracing::warn!(proxy_id = %self.proxy_id, "proxy has not answered a snapshot in 30 s; sending the newest whole");
                    known.serving = None;
                }
                if wanted {
                    let serving = known
                        .serving
                        .as_deref()
                        .filter(|serving| serving.version == self.held_version);
                    let began = Instant::now();
                    let parts = match seal_snapshot(&state, serving, &self.vault, &self.proxy_key) {
                        Ok(parts) => parts,
                        Err(error) => {
                            tracing::error!(proxy_id = %self.proxy_id, %error, "cannot build a snapshot");
                            let _ = sender
                                .send(Err(Status::internal(
                                    "cannot build a snapshot for this proxy",
                                )))
                                .await;
                            break;
                        }
                    };
                    let nonce = new_id();
                    let delta = parts.is_delta();
                    for (snapshot, more) in parts {
                        let response = pb::StreamConfigResponse {
                            nonce: nonce.clone(),
                            snapshot: Some(snapshot),
                            more,
                        };
                        if sender.send(Ok(response)).await.is_err() {
                            break 'stream;
                        }
                    }
                    known.pending = Some(Pending {
                        nonce,
                        state,
                        delta,
                        began,
                        sent_at: Instant::now(),
                    });
                }
            }
            // Woken once when the snapshot in flight has waited too long, not again after.
            let reply_deadline = known
                .pending
                .as_ref()
                .filter(|p| !p.unanswered_too_long())
                .map(|p| tokio::time::Instant::from_std(p.sent_at) + REPLY_TIMEOUT);
            tokio::select! {
                () = sleep_until_some(reply_deadline) => {}
                changed = self.config.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.handle(request, &mut known).await,
                    Ok(None) | Err(_) => break,
                },
                _ = seen.tick() => self.record_connection(true).await,
                _ = sender.closed() => break,
            }
        }
        self.record_connection(false).await;
        self.metrics.proxy_serves(&self.proxy_id, None);
        tracing::info!(proxy_id = %self.proxy_id, "proxy disconnected");
    }

    async fn handle(&mut self, request: pb::StreamConfigRequest, known: &mut Known) {
        let (nonce, reply) = match request.message {
            Some(pb::stream_config_request::Message::Ack(ack)) => (ack.nonce, Reply::Ack),
            Some(pb::stream_config_request::Message::Nack(nack)) => {
                (nack.nonce.clone(), Reply::Nack(nack))
            }
            Some(pb::stream_config_request::Message::LeftOut(left_out)) => {
                self.record_left_out(left_out).await;
                return;
            }
            Some(pb::stream_config_request::Message::Hello(_)) | None => return,
        };
        if known.pending.as_ref().is_none_or(|p| p.nonce != nonce) {
            tracing::debug!(proxy_id = %self.proxy_id, "ignoring a reply with a stale nonce");
            return;
        }
        let Some(in_flight) = known.pending.take() else {
            return;
        };
        let version = in_flight.state.version;
        let took = in_flight.began.elapsed();
        self.metrics
            .config_pushed(matches!(reply, Reply::Ack), took);
        if let Some(tracer) = &self.metrics.tracer
            && let Some(place) = tracer.place(None)
        {
            let mut span = Span::ended(
                "sluice.config.push".to_owned(),
                SpanKind::Internal,
                took,
                place,
            )
            .text("sluice.proxy_id", self.proxy_id.clone())
            .int(
                "sluice.config.version",
                i64::try_from(version).unwrap_or(i64::MAX),
            )
            .flag("sluice.config.difference", in_flight.delta)
            .text(
                "sluice.config.reply",
                if matches!(reply, Reply::Ack) {
                    "ack"
                } else {
                    "nack"
                },
            );
            if let Reply::Nack(nack) = &reply {
                let reason: String = nack.reason.chars().take(MAX_NACK_REASON).collect();
                span = span
                    .text("sluice.config.nack_reason", reason)
                    .failed("nack");
            }
            tracer.record(span);
        }
        match reply {
            Reply::Ack => {
                self.held_version = version;
                self.metrics.proxy_serves(&self.proxy_id, Some(version));
                known.serving = Some(in_flight.state);
                if let Err(error) = self.store.record_proxy_ack(&self.proxy_id, version).await {
                    tracing::error!(proxy_id = %self.proxy_id, %error, "cannot record an ACK");
                }
            }
            Reply::Nack(nack) => {
                // The version is not sent again; the next one goes whole, in case the refusal
                // was the difference's (a proxy that no longer holds its base).
                known.serving = None;
                known.rejected = Some(version);
                let reason: String = nack.reason.chars().take(MAX_NACK_REASON).collect();
                tracing::warn!(proxy_id = %self.proxy_id, version, keeps = nack.version, delta = in_flight.delta, %reason, "proxy rejected a snapshot");
                if let Err(error) = self
                    .store
                    .record_proxy_nack(&self.proxy_id, version, &reason)
                    .await
                {
                    tracing::error!(proxy_id = %self.proxy_id, %error, "cannot record a NACK");
                }
            }
        }
    }

    /// What the proxy leaves out of its attempts, bounded (a proxy's report is input too).
    async fn record_left_out(&self, report: pb::LeftOut) {
        let named = |kind: &str, list: Vec<pb::Excluded>| {
            list.into_iter()
                .take(MAX_LEFT_OUT)
                .map(|out| store::LeftOut {
                    kind: kind.to_owned(),
                    name: out.name.chars().take(MAX_LEFT_OUT_NAME).collect(),
                    until_us: out.until_us,
                })
                .collect::<Vec<_>>()
        };
        let mut left_out = named("deployment", report.deployments);
        left_out.extend(named("key", report.keys));
        if let Err(error) = self
            .store
            .record_proxy_left_out(&self.proxy_id, &left_out)
            .await
        {
            tracing::error!(proxy_id = %self.proxy_id, %error, "cannot record what the proxy leaves out");
        }
    }

    async fn record_connection(&self, connected: bool) {
        if let Err(error) = self
            .store
            .record_proxy_connection(&self.proxy_id, &self.address, connected)
            .await
        {
            tracing::error!(proxy_id = %self.proxy_id, %error, "cannot record the proxy's connection");
        }
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

enum Reply {
    Ack,
    Nack(pb::Nack),
}
