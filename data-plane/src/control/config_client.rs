//! Keeps the routing tables current from the control plane's config stream.
//!
//! Runs on its own task, so the request path never waits on the network. Each snapshot is
//! validated completely and indexed off the async threads, then swapped in with one store,
//! saved to disk (provider keys still sealed), and ACKed; a snapshot that fails validation is
//! NACKed with the reason and the previous tables keep serving. The stream reconnects with
//! jittered exponential backoff; HTTP/2 keepalives notice a dead control plane.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use sluice_proto::config::v1 as pb;
use sluice_proto::config::v1::config_service_client::ConfigServiceClient;
use sluice_shared::secret::SecretString;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::control::identity::Identity;
use crate::control::snapshot_file;
use crate::gateway::Gateway;
use crate::routing::tables::{InvalidSnapshot, LeftOut, RoutingTables, TablesBuilder};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The largest snapshot a proxy takes: about two million virtual keys. A snapshot carries every
/// key of the fleet, so gRPC's 4 MiB default cut proxies off at about 30 000 keys.
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;
/// The longest the copy on disk waits behind the version served, after a slow save.
const MAX_SAVE_PAUSE: Duration = Duration::from_secs(2);
/// How much of a snapshot the control plane may send ahead of the proxy's reading.
const SNAPSHOT_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// With its causes: tonic's own message is only "transport error", and the operator needs
    /// the refused TLS handshake or the unreachable address underneath.
    #[error("cannot connect: {}", sluice_shared::upstream_connect::error_chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the data-plane token cannot travel in a header")]
    BadToken,
    #[error("the stream's send half closed")]
    Closed,
}

impl SessionError {
    /// Why the control plane refused this proxy at the TLS layer, if it did.
    fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Connect(error) => sluice_shared::tls::client::explain_refusal(error),
            Self::Stream(status) if status.code() == tonic::Code::Unimplemented => Some(
                "this address serves no config stream: point SLUICE_PROXY_CONTROL_PLANE at the \
                 control plane's data-plane listener (its data_plane_listen_addr)",
            ),
            Self::Stream(status) => sluice_shared::tls::client::explain_refusal(status),
            Self::BadToken | Self::Closed => None,
        }
    }
}

/// Everything needed to apply a snapshot, shareable with blocking threads.
pub struct Applier {
    pub gateway: Arc<Gateway>,
    pub identity: Arc<Identity>,
    pub data_dir: PathBuf,
    pub upstream_hosts: Vec<String>,
}

impl Applier {
    /// Validates and swaps in a whole `snapshot`. Refuses anything not newer than what is held.
    pub fn apply(&self, snapshot: &pb::Snapshot) -> Result<(), InvalidSnapshot> {
        let builder = self.take_part(None, snapshot)?;
        self.serve(builder.finish());
        Ok(())
    }

    /// Checks and indexes one part of a snapshot: the first (`building` is `None`) against the
    /// tables being served, the next ones into what the first began.
    pub fn take_part(
        &self,
        building: Option<TablesBuilder>,
        part: &pb::Snapshot,
    ) -> Result<TablesBuilder, InvalidSnapshot> {
        match building {
            None => {
                let held = self.gateway.held_version();
                if part.version <= held {
                    return Err(InvalidSnapshot(format!(
                        "version {} is not newer than the held version {held}",
                        part.version
                    )));
                }
                let serving = self.gateway.tables.load_full();
                RoutingTables::begin(
                    part,
                    serving.as_deref(),
                    &self.identity.sealing,
                    &self.upstream_hosts,
                )
            }
            Some(mut builder) => {
                if part.version != builder.version() {
                    return Err(InvalidSnapshot(format!(
                        "a part of version {} inside version {}",
                        part.version,
                        builder.version()
                    )));
                }
                builder.add_keys(&part.virtual_keys)?;
                Ok(builder)
            }
        }
    }

    /// Swaps in `tables`: from the next request on, they serve.
    pub fn serve(&self, mut tables: RoutingTables) {
        tables.attach_health(&self.gateway.health);
        tables.attach_series(&self.gateway.series);
        tables.attach_key_series(&self.gateway.key_series);
        let version = tables.version;
        let generated_at_us = tables.generated_at_us;
        let virtual_keys = tables.virtual_key_count();
        self.gateway.tables.store(Some(Arc::new(tables)));
        self.gateway
            .metrics
            .config_version
            .store(version, Ordering::Release);
        self.gateway
            .metrics
            .config_generated_at_us
            .store(generated_at_us, Ordering::Relaxed);
        tracing::info!(version, virtual_keys, "serving config");
    }

    /// Saves the tables being served, so a restart without the control plane serves them too.
    /// Returns the version saved (0: none).
    pub fn save_serving(&self) -> u64 {
        let Some(tables) = self.gateway.tables.load_full() else {
            return 0;
        };
        if let Err(error) = snapshot_file::save(
            &self.data_dir,
            tables.source(),
            tables.virtual_key_configs(),
        ) {
            tracing::error!(%error, "cannot save the snapshot to disk; serving it anyway");
        }
        tables.version
    }

    /// Serves the snapshot saved by an earlier run, if there is a valid one.
    pub fn load_saved(&self) {
        match snapshot_file::load(&self.data_dir) {
            Ok(Some(snapshot)) => match self.apply(&snapshot) {
                Ok(()) => tracing::warn!(
                    version = snapshot.version,
                    "serving the saved snapshot until the control plane answers"
                ),
                Err(error) => {
                    tracing::error!(%error, "the saved snapshot is invalid; waiting for the control plane")
                }
            },
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "ignoring the saved snapshot; waiting for the control plane")
            }
        }
    }
}

pub struct ConfigClient {
    pub applier: Arc<Applier>,
    pub control_plane: String,
    /// Plain or TLS (with this proxy's client certificate), as the address says.
    pub connector: sluice_shared::tls::client::Connector,
    pub token: Arc<SecretString>,
}

impl ConfigClient {
    pub async fn run(self) {
        let saves = Notify::new();
        // One task: stopping the client stops its saving too.
        tokio::select! {
            never = save_newest(&self.applier, &saves) => match never {},
            never = self.follow(&saves) => match never {},
        }
    }

    async fn follow(&self, saves: &Notify) -> std::convert::Infallible {
        let mut backoff = MIN_BACKOFF;
        loop {
            let result = self.session(&mut backoff, saves).await;
            self.applier
                .gateway
                .metrics
                .control_plane_connected
                .store(false, Ordering::Relaxed);
            match result {
                Ok(()) => tracing::warn!("config stream ended; reconnecting"),
                Err(error) => match error.refusal() {
                    Some(refusal) => {
                        tracing::error!(%error, refusal, "config stream down; reconnecting")
                    }
                    None => tracing::warn!(%error, "config stream down; reconnecting"),
                },
            }
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(&self, backoff: &mut Duration, saves: &Notify) -> Result<(), SessionError> {
        let channel = Endpoint::from_shared(self.control_plane.clone())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            // A snapshot with many keys is megabytes: with HTTP/2's 64 KiB default windows it
            // crawls in window-sized steps, each waiting for a window update.
            .initial_stream_window_size(SNAPSHOT_WINDOW_BYTES)
            .initial_connection_window_size(SNAPSHOT_WINDOW_BYTES)
            .connect_with_connector(self.connector.clone())
            .await?;
        let (outbound, receiver) = mpsc::channel(4);
        let held = self.applier.gateway.held_version();
        let hello = pb::Hello {
            proxy_id: self.applier.identity.proxy_id.clone(),
            held_version: held,
            sealing_public_key: self.applier.identity.sealing.public_bytes().to_vec(),
        };
        send(&outbound, pb::stream_config_request::Message::Hello(hello)).await?;
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        crate::control::token::authorize(&mut request, &self.token)
            .map_err(|_| SessionError::BadToken)?;
        let mut inbound = ConfigServiceClient::new(channel)
            .max_decoding_message_size(MAX_SNAPSHOT_BYTES)
            .stream_config(request)
            .await?
            .into_inner();
        self.applier
            .gateway
            .metrics
            .control_plane_connected
            .store(true, Ordering::Relaxed);
        tracing::info!(held_version = held, "config stream connected");

        // What the proxy leaves out of its attempts goes to the control plane beside the
        // replies, for as long as this stream lasts.
        let reporting = tokio::spawn(report_left_out(
            self.applier.gateway.clone(),
            outbound.clone(),
        ));
        let _reporting = AbortOnDrop(reporting);

        // The parts of the snapshot arriving, under its nonce; a refused part spoils the rest.
        let mut building: Option<(String, Result<TablesBuilder, InvalidSnapshot>)> = None;
        while let Some(response) = inbound.message().await? {
            // Only a stream that delivers counts as healthy: one that connects and then fails
            // on every message keeps backing off instead of reconnecting ten times a second.
            *backoff = MIN_BACKOFF;
            let Some(part) = response.snapshot else {
                continue;
            };
            let version = part.version;
            let progress = match building.take() {
                Some((nonce, progress)) if nonce == response.nonce => Some(progress),
                _ => None,
            };
            let outcome = match progress {
                Some(Err(refused)) => Err(refused),
                started => {
                    let applier = self.applier.clone();
                    // Validation opens every sealed key and indexes every table: CPU work,
                    // off the async threads.
                    tokio::task::spawn_blocking(move || {
                        applier.take_part(started.and_then(Result::ok), &part)
                    })
                    .await
                    .map_err(|_| SessionError::Closed)?
                }
            };
            if response.more {
                building = Some((response.nonce, outcome));
                continue;
            }
            self.applier
                .gateway
                .metrics
                .config_offered_version
                .store(version, Ordering::Relaxed);
            let reply = match outcome {
                Ok(builder) => {
                    self.applier.serve(builder.finish());
                    pb::stream_config_request::Message::Ack(pb::Ack {
                        nonce: response.nonce,
                        version,
                    })
                }
                Err(reason) => {
                    self.applier
                        .gateway
                        .metrics
                        .config_rejected_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(version, %reason, "rejected a snapshot; keeping the current one");
                    pb::stream_config_request::Message::Nack(pb::Nack {
                        nonce: response.nonce,
                        version: self.applier.gateway.held_version(),
                        reason: reason.0,
                    })
                }
            };
            if matches!(reply, pb::stream_config_request::Message::Ack(_)) {
                saves.notify_one();
            }
            // The ACK says "serving", which it is once the tables are swapped: the copy on
            // disk follows it.
            send(&outbound, reply).await?;
        }
        Ok(())
    }
}

/// Keeps the copy on disk at the version served, spending at most a tenth of the time on it:
/// with a hundred thousand keys a save is tens of ms of encoding and 12 MiB written, and a
/// burst of admin changes is many versions a second. After each save it pauses ten times as
/// long as the save took; a version served meanwhile has left a permit and is saved next.
async fn save_newest(applier: &Arc<Applier>, saves: &Notify) -> std::convert::Infallible {
    let mut saved = 0;
    loop {
        saves.notified().await;
        if applier.gateway.held_version() == saved {
            continue;
        }
        let saving = applier.clone();
        let started = tokio::time::Instant::now();
        if let Ok(version) = tokio::task::spawn_blocking(move || saving.save_serving()).await {
            saved = version;
            applier
                .gateway
                .metrics
                .config_saved_version
                .store(version, Ordering::Relaxed);
        }
        tokio::time::sleep((started.elapsed() * 10).min(MAX_SAVE_PAUSE)).await;
    }
}

/// How often what is left out of attempts is looked at; it is sent only when it changed.
const LEFT_OUT_EVERY: Duration = Duration::from_secs(2);

/// Sends the control plane what this proxy leaves out of its attempts (deployments ejected,
/// keys an upstream asked to wait) whenever that changes, until the stream closes.
async fn report_left_out(gateway: Arc<Gateway>, outbound: mpsc::Sender<pb::StreamConfigRequest>) {
    let mut reported = LeftOut::default();
    loop {
        tokio::time::sleep(LEFT_OUT_EVERY).await;
        let now_ms = u64::try_from(sluice_shared::time::now_us() / 1_000).unwrap_or(0);
        let left_out = gateway
            .tables
            .load()
            .as_ref()
            .map(|tables| tables.left_out(now_ms))
            .unwrap_or_default();
        if left_out == reported {
            continue;
        }
        let excluded = |entries: &[(String, u64)]| {
            entries
                .iter()
                .map(|(name, until_ms)| pb::Excluded {
                    name: name.clone(),
                    until_us: i64::try_from(*until_ms).unwrap_or(i64::MAX / 1_000) * 1_000,
                })
                .collect()
        };
        let message = pb::stream_config_request::Message::LeftOut(pb::LeftOut {
            deployments: excluded(&left_out.deployments),
            keys: excluded(&left_out.keys),
        });
        if send(&outbound, message).await.is_err() {
            return;
        }
        reported = left_out;
    }
}

/// Aborts a task when the scope that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send(
    outbound: &mpsc::Sender<pb::StreamConfigRequest>,
    message: pb::stream_config_request::Message,
) -> Result<(), SessionError> {
    outbound
        .send(pb::StreamConfigRequest {
            message: Some(message),
        })
        .await
        .map_err(|_| SessionError::Closed)
}

#[cfg(test)]
mod tests {
    use sluice_shared::sealing::SecretSealer;

    use super::*;
    use crate::upstream::UpstreamClient;
    use crate::usage::spool::{SpoolSettings, UsageSpool, WhenFull};
    use sluice_proto::config::v1::config_service_server::{ConfigService, ConfigServiceServer};

    fn snapshot(version: u64, identity: &Identity) -> pb::Snapshot {
        let sealer = SecretSealer::for_recipient(&identity.sealing.public_bytes()).unwrap();
        pb::Snapshot {
            version,
            generated_at_us: 1,
            sealing_public_key: sealer.sender_public().to_vec(),
            ..Default::default()
        }
    }

    fn new_applier(dir: &std::path::Path) -> (Arc<Gateway>, Arc<Identity>, Applier) {
        let identity = Arc::new(Identity::load_or_create(dir, Some("edge")).unwrap());
        let (spool, _) = UsageSpool::open(SpoolSettings {
            dir: dir.join("spool"),
            segment_bytes: 64 * 1024,
            max_bytes: 1 << 20,
            when_full: WhenFull::Refuse,
        })
        .unwrap();
        let gateway = Gateway::new(
            spool,
            UpstreamClient::new(),
            1024,
            crate::budgets::leases::LeaseBook::new(1, std::time::Duration::from_millis(10)),
            4096,
            Default::default(),
            Default::default(),
        );
        let applier = Applier {
            gateway: gateway.clone(),
            identity: identity.clone(),
            data_dir: dir.to_owned(),
            upstream_hosts: Vec::new(),
        };
        (gateway, identity, applier)
    }

    /// A control plane that answers every stream with one snapshot, then holds it open.
    struct OneSnapshot(pb::Snapshot);

    #[tonic::async_trait]
    impl ConfigService for OneSnapshot {
        type StreamConfigStream = ReceiverStream<Result<pb::StreamConfigResponse, tonic::Status>>;

        async fn stream_config(
            &self,
            _request: tonic::Request<tonic::Streaming<pb::StreamConfigRequest>>,
        ) -> Result<tonic::Response<Self::StreamConfigStream>, tonic::Status> {
            let (sender, receiver) = mpsc::channel(1);
            let snapshot = self.0.clone();
            tokio::spawn(async move {
                let _ = sender
                    .send(Ok(pb::StreamConfigResponse {
                        snapshot: Some(snapshot),
                        nonce: "n".into(),
                        more: false,
                    }))
                    .await;
                // Held open as a live control plane holds it.
                sender.closed().await;
            });
            Ok(tonic::Response::new(ReceiverStream::new(receiver)))
        }
    }

    /// A fleet's snapshot carries every virtual key: one of 50 000 keys (7 MiB, past gRPC's
    /// 4 MiB default) reaches the proxy over a real stream and serves.
    #[tokio::test]
    async fn a_snapshot_of_fifty_thousand_keys_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, identity, applier) = new_applier(dir.path());
        let mut big = snapshot_with_project(3, &identity);
        // UUID-long ids, as the control plane mints them.
        big.virtual_keys = (0..50_000_u32)
            .map(|n| pb::VirtualKeyConfig {
                id: format!("01a23773-eaca-7000-9fd3-{n:012}"),
                ..key(n)
            })
            .collect();
        assert!(prost::Message::encoded_len(&big) > 5 * 1024 * 1024);

        let (server, client) = serve_and_follow(
            ConfigServiceServer::new(OneSnapshot(big))
                .max_encoding_message_size(MAX_SNAPSHOT_BYTES),
            applier,
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while gateway.held_version() != 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the snapshot never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gateway.tables.load().as_ref().unwrap().version, 3);
        client.abort();
        server.abort();
    }

    /// A control plane that sends each snapshot (a list of parts), then waits for the proxy's
    /// reply and passes it to the test, then sends the next.
    struct Scripted {
        snapshots: Vec<Vec<pb::StreamConfigResponse>>,
        replies: mpsc::UnboundedSender<pb::stream_config_request::Message>,
    }

    #[tonic::async_trait]
    impl ConfigService for Scripted {
        type StreamConfigStream = ReceiverStream<Result<pb::StreamConfigResponse, tonic::Status>>;

        async fn stream_config(
            &self,
            request: tonic::Request<tonic::Streaming<pb::StreamConfigRequest>>,
        ) -> Result<tonic::Response<Self::StreamConfigStream>, tonic::Status> {
            let mut inbound = request.into_inner();
            let (sender, receiver) = mpsc::channel(1);
            let snapshots = self.snapshots.clone();
            let replies = self.replies.clone();
            tokio::spawn(async move {
                let _hello = inbound.message().await;
                for parts in snapshots {
                    for part in parts {
                        let _ = sender.send(Ok(part)).await;
                    }
                    if let Ok(Some(reply)) = inbound.message().await {
                        let _ = replies.send(reply.message.unwrap());
                    }
                }
                sender.closed().await;
            });
            Ok(tonic::Response::new(ReceiverStream::new(receiver)))
        }
    }

    /// A snapshot with one mock project that virtual keys can belong to.
    /// Serves `service` on a loopback port, and a config client following it.
    async fn serve_and_follow<T: ConfigService>(
        service: ConfigServiceServer<T>,
        applier: Applier,
    ) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let client = tokio::spawn(async move {
            ConfigClient {
                applier: Arc::new(applier),
                control_plane: format!("http://{address}"),
                connector: sluice_shared::tls::client::Connector::new(
                    &format!("http://{address}"),
                    &Default::default(),
                )
                .unwrap(),
                token: Arc::new(SecretString::new("t".into())),
            }
            .run()
            .await;
        });
        (server, client)
    }

    fn snapshot_with_project(version: u64, identity: &Identity) -> pb::Snapshot {
        let mut snapshot = snapshot(version, identity);
        snapshot.projects.push(pb::ProjectConfig {
            id: "project-1".into(),
            organization_id: "org-1".into(),
            name: "web".into(),
            posture: sluice_proto::common::v1::Posture::Mock as i32,
            ..Default::default()
        });
        snapshot
    }

    fn key(n: u32) -> pb::VirtualKeyConfig {
        pb::VirtualKeyConfig {
            id: format!("vk-{n:06}"),
            project_id: "project-1".into(),
            key_hash: format!("{n:064x}"),
            ..Default::default()
        }
    }

    fn parts(
        nonce: &str,
        head: pb::Snapshot,
        keys: &[pb::VirtualKeyConfig],
    ) -> Vec<pb::StreamConfigResponse> {
        let version = head.version;
        let mut chunks = keys.chunks(1000);
        let mut first = head;
        first.virtual_keys = chunks.next().unwrap_or_default().to_vec();
        let mut parts = vec![first];
        parts.extend(chunks.map(|chunk| pb::Snapshot {
            version,
            virtual_keys: chunk.to_vec(),
            ..Default::default()
        }));
        let last = parts.len() - 1;
        parts
            .into_iter()
            .enumerate()
            .map(|(at, snapshot)| pb::StreamConfigResponse {
                nonce: nonce.into(),
                snapshot: Some(snapshot),
                more: at < last,
            })
            .collect()
    }

    /// Over a real stream: a whole snapshot in parts serves only once complete, a difference
    /// applies to it, and a snapshot with a bad part is NACKed after its last part with the
    /// previous version still serving, and saved whole on disk.
    #[tokio::test]
    async fn parts_assemble_and_differences_apply_over_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, identity, applier) = new_applier(dir.path());
        let head = snapshot_with_project(3, &identity);
        let keys: Vec<_> = (0..2500).map(key).collect();
        let whole = parts("a", head.clone(), &keys);
        assert_eq!(whole.len(), 3);
        let mut difference = head.clone();
        difference.version = 4;
        difference.base_version = 3;
        difference.sealing_public_key = snapshot(4, &identity).sealing_public_key;
        difference.removed_key_hashes = vec![key(7).key_hash];
        let difference = parts("b", difference, &[key(9000)]);
        let mut broken = head.clone();
        broken.version = 5;
        broken.base_version = 4;
        let mut bad = key(9001);
        bad.key_hash = "not hex".into();
        let broken = parts(
            "c",
            broken,
            &[
                &(0..1000).map(|n| key(10_000 + n)).collect::<Vec<_>>()[..],
                &[bad],
            ]
            .concat(),
        );
        assert_eq!(broken.len(), 2);

        let (replies, mut replied) = mpsc::unbounded_channel();
        let (server, client) = serve_and_follow(
            ConfigServiceServer::new(Scripted {
                snapshots: vec![whole, difference, broken],
                replies,
            }),
            applier,
        )
        .await;
        let mut next_reply = async || {
            tokio::time::timeout(Duration::from_secs(10), replied.recv())
                .await
                .unwrap()
                .unwrap()
        };
        let pb::stream_config_request::Message::Ack(ack) = next_reply().await else {
            panic!("the whole snapshot was not ACKed");
        };
        assert_eq!((ack.nonce.as_str(), ack.version), ("a", 3));
        let pb::stream_config_request::Message::Ack(ack) = next_reply().await else {
            panic!("the difference was not ACKed");
        };
        assert_eq!((ack.nonce.as_str(), ack.version), ("b", 4));
        let pb::stream_config_request::Message::Nack(nack) = next_reply().await else {
            panic!("the broken snapshot was not NACKed");
        };
        assert_eq!((nack.nonce.as_str(), nack.version), ("c", 4));
        assert!(nack.reason.contains("vk-009001"), "{}", nack.reason);

        let tables = gateway.tables.load_full().unwrap();
        assert_eq!(tables.version, 4);
        assert_eq!(tables.virtual_key_count(), 2500);
        let hash = |n: u32| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(key(n).key_hash, &mut hash).unwrap();
            hash
        };
        assert!(tables.virtual_key(&hash(7)).is_none());
        assert!(tables.virtual_key(&hash(9000)).is_some());
        assert!(
            tables.virtual_key(&hash(10_000)).is_none(),
            "no part of a refused version"
        );
        // The copy on disk is the whole of version 4 (saved after the ACK: wait for it).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let saved = loop {
            if let Ok(Some(saved)) = snapshot_file::load(dir.path())
                && saved.version == 4
            {
                break saved;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "version 4 never saved"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(saved.base_version, 0);
        assert_eq!(saved.virtual_keys.len(), 2500);
        client.abort();
        server.abort();
    }

    #[tokio::test]
    async fn only_newer_versions_apply_and_the_newest_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, identity, applier) = new_applier(dir.path());
        applier.apply(&snapshot(5, &identity)).unwrap();
        for stale in [5, 4, 1] {
            let error = applier.apply(&snapshot(stale, &identity)).unwrap_err();
            assert!(error.0.contains("not newer"), "{error}");
        }
        assert_eq!(gateway.tables.load().as_ref().unwrap().version, 5);
        applier.apply(&snapshot(6, &identity)).unwrap();
        applier.save_serving();
        assert_eq!(gateway.metrics.config_version.load(Ordering::Relaxed), 6);
        assert_eq!(snapshot_file::load(dir.path()).unwrap().unwrap().version, 6);
    }
}
