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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::control::identity::Identity;
use crate::control::snapshot_file;
use crate::gateway::Gateway;
use crate::routing::tables::{InvalidSnapshot, RoutingTables};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The largest snapshot a proxy takes: about two million virtual keys. A snapshot carries every
/// key of the fleet, so gRPC's 4 MiB default cut proxies off at about 30 000 keys.
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;
/// How much of a snapshot the control plane may send ahead of the proxy's reading.
const SNAPSHOT_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the data-plane token cannot travel in a header")]
    BadToken,
    #[error("the stream's send half closed")]
    Closed,
}

/// Everything needed to apply a snapshot, shareable with blocking threads.
pub struct Applier {
    pub gateway: Arc<Gateway>,
    pub identity: Arc<Identity>,
    pub data_dir: PathBuf,
    pub upstream_hosts: Vec<String>,
}

impl Applier {
    /// Validates and swaps in `snapshot`. Refuses anything not newer than what is held.
    pub fn apply(&self, snapshot: &pb::Snapshot) -> Result<(), InvalidSnapshot> {
        let held = self.gateway.held_version();
        if snapshot.version <= held {
            return Err(InvalidSnapshot(format!(
                "version {} is not newer than the held version {held}",
                snapshot.version
            )));
        }
        let tables = RoutingTables::build(snapshot, &self.identity.sealing, &self.upstream_hosts)?;
        let virtual_keys = tables.virtual_key_count();
        self.gateway.tables.store(Some(Arc::new(tables)));
        self.gateway
            .metrics
            .config_version
            .store(snapshot.version, Ordering::Release);
        self.gateway
            .metrics
            .config_generated_at_us
            .store(snapshot.generated_at_us, Ordering::Relaxed);
        tracing::info!(version = snapshot.version, virtual_keys, "serving config");
        Ok(())
    }

    /// Saves a snapshot that serves, so a restart without the control plane serves it too.
    pub fn save(&self, snapshot: &pb::Snapshot) {
        if let Err(error) = snapshot_file::save(&self.data_dir, snapshot) {
            tracing::error!(%error, "cannot save the snapshot to disk; serving it anyway");
        }
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
    pub token: Arc<SecretString>,
}

impl ConfigClient {
    pub async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let result = self.session(&mut backoff).await;
            self.applier
                .gateway
                .metrics
                .control_plane_connected
                .store(false, Ordering::Relaxed);
            match result {
                Ok(()) => tracing::warn!("config stream ended; reconnecting"),
                Err(error) => tracing::warn!(%error, "config stream down; reconnecting"),
            }
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(&self, backoff: &mut Duration) -> Result<(), SessionError> {
        let channel = Endpoint::from_shared(self.control_plane.clone())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            // A snapshot with many keys is megabytes: with HTTP/2's 64 KiB default windows it
            // crawls in window-sized steps, each waiting for a window update.
            .initial_stream_window_size(SNAPSHOT_WINDOW_BYTES)
            .initial_connection_window_size(SNAPSHOT_WINDOW_BYTES)
            .connect()
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

        while let Some(response) = inbound.message().await? {
            // Only a stream that delivers counts as healthy: one that connects and then fails
            // on every message keeps backing off instead of reconnecting ten times a second.
            *backoff = MIN_BACKOFF;
            let Some(snapshot) = response.snapshot else {
                continue;
            };
            let version = snapshot.version;
            let applier = self.applier.clone();
            // Validation opens every sealed key and indexes every table: CPU work, off the
            // async threads.
            let (outcome, snapshot) =
                tokio::task::spawn_blocking(move || (applier.apply(&snapshot), snapshot))
                    .await
                    .map_err(|_| SessionError::Closed)?;
            let serving = outcome.is_ok();
            let reply = match outcome {
                Ok(()) => pb::stream_config_request::Message::Ack(pb::Ack {
                    nonce: response.nonce,
                    version,
                }),
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
            // The ACK says "serving", which it is once the tables are swapped: the copy on
            // disk (encoded, hashed and written: tens of ms with many keys) follows it.
            let sent = send(&outbound, reply).await;
            if serving {
                let applier = self.applier.clone();
                let _ = tokio::task::spawn_blocking(move || applier.save(&snapshot)).await;
            }
            sent?;
        }
        Ok(())
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
    impl sluice_proto::config::v1::config_service_server::ConfigService for OneSnapshot {
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
        let mut big = snapshot(3, &identity);
        big.projects.push(pb::ProjectConfig {
            id: "project-1".into(),
            organization_id: "org-1".into(),
            name: "web".into(),
            posture: sluice_proto::common::v1::Posture::Mock as i32,
            ..Default::default()
        });
        big.virtual_keys = (0..50_000_u32)
            .map(|n| pb::VirtualKeyConfig {
                id: format!("01a23773-eaca-7000-9fd3-{n:012}"),
                project_id: "project-1".into(),
                key_hash: format!("{n:064x}"),
                ..Default::default()
            })
            .collect();
        assert!(prost::Message::encoded_len(&big) > 5 * 1024 * 1024);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    sluice_proto::config::v1::config_service_server::ConfigServiceServer::new(
                        OneSnapshot(big),
                    )
                    .max_encoding_message_size(MAX_SNAPSHOT_BYTES),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = tokio::spawn(
            ConfigClient {
                applier: Arc::new(applier),
                control_plane: format!("http://{address}"),
                token: Arc::new(SecretString::new("t".into())),
            }
            .run(),
        );
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
        applier.save(&snapshot(6, &identity));
        assert_eq!(gateway.metrics.config_version.load(Ordering::Relaxed), 6);
        assert_eq!(snapshot_file::load(dir.path()).unwrap().unwrap().version, 6);
    }
}
