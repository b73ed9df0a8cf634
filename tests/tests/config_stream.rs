//! The config and usage streams of the real control plane, driven by a scripted proxy: sealed
//! provider keys, ACK/NACK and the fleet view, stale nonces, propagation after an admin change,
//! reconnecting with a current version, authentication, and usage batches committed once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use prost::Message;
use sluice_e2e::{ControlPlane, ControlPlaneBuilder};
use sluice_proto::config::v1 as pb;
use sluice_proto::config::v1::config_service_client::ConfigServiceClient;
use sluice_proto::usage::v1 as usage;
use sluice_proto::usage::v1::usage_service_client::UsageServiceClient;
use sluice_shared::sealing::SealingKeyPair;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};

const SECRET: &str = "sk-canary-config-stream-0001";

fn seed(cp: &ControlPlane) -> String {
    cp.ctl(&["org", "create", "acme"]).ok();
    cp.ctl(&[
        "provider",
        "create",
        "acme/openai",
        "--type",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
    ])
    .ok();
    cp.ctl_stdin(&["provider-key", "add", "acme/openai/main"], SECRET)
        .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/gpt-4o-mini",
        "--deployment",
        "openai:gpt-4o-mini-2024-07-18",
    ])
    .ok();
    cp.ctl(&[
        "project",
        "create",
        "acme/web",
        "--default-model",
        "gpt-4o-mini",
    ])
    .ok();
    cp.ctl(&["vkey", "create", "acme/web/ci"]).ok();
    cp.data_plane_token("proxy")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// One config stream as a proxy sees it.
struct ProxyStream {
    outbound: mpsc::Sender<pb::StreamConfigRequest>,
    inbound: Streaming<pb::StreamConfigResponse>,
}

impl ProxyStream {
    async fn open(
        channel: &Channel,
        token: &str,
        proxy_id: &str,
        held: u64,
        key: &SealingKeyPair,
    ) -> Result<Self, tonic::Status> {
        let (outbound, receiver) = mpsc::channel(4);
        outbound
            .send(pb::StreamConfigRequest {
                message: Some(pb::stream_config_request::Message::Hello(pb::Hello {
                    proxy_id: proxy_id.to_owned(),
                    held_version: held,
                    sealing_public_key: key.public_bytes().to_vec(),
                })),
            })
            .await
            .unwrap();
        let mut client = ConfigServiceClient::new(channel.clone());
        let inbound = client
            .stream_config(with_token(ReceiverStream::new(receiver), token))
            .await?
            .into_inner();
        Ok(Self { outbound, inbound })
    }

    async fn next(&mut self, within: Duration) -> Option<pb::StreamConfigResponse> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Ok(message) => message.unwrap(),
            Err(_) => None,
        }
    }

    async fn ack(&self, nonce: &str, version: u64) {
        let ack = pb::Ack {
            nonce: nonce.to_owned(),
            version,
        };
        self.outbound
            .send(pb::StreamConfigRequest {
                message: Some(pb::stream_config_request::Message::Ack(ack)),
            })
            .await
            .unwrap();
    }

    async fn nack(&self, nonce: &str, keeps: u64, reason: &str) {
        let nack = pb::Nack {
            nonce: nonce.to_owned(),
            version: keeps,
            reason: reason.to_owned(),
        };
        self.outbound
            .send(pb::StreamConfigRequest {
                message: Some(pb::stream_config_request::Message::Nack(nack)),
            })
            .await
            .unwrap();
    }
}

/// Polls `sluicectl fleet` until `check` holds for the proxy's row.
fn wait_for_fleet(
    cp: &ControlPlane,
    proxy_id: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fleet = cp.ctl(&["-o", "json", "fleet"]).json();
        if let Some(row) = fleet["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["proxy_id"] == proxy_id && check(r))
        {
            return row.clone();
        }
        assert!(Instant::now() < deadline, "fleet never matched: {fleet}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_ack_nack_and_propagation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let token = seed(&cp);
    let channel = Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = SealingKeyPair::generate();

    // Who may open a stream.
    let refused = ProxyStream::open(&channel, &cp.admin_token, "p1", 0, &key)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = ProxyStream::open(&channel, "sluice-dp-wrong", "p1", 0, &key)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // The first snapshot: everything, with the provider key sealed to this proxy only.
    let mut stream = ProxyStream::open(&channel, &token, "p1", 0, &key)
        .await
        .unwrap();
    // The publisher may still be catching up with the seeding writes: take snapshots until the
    // one holding them, which is what a proxy does too.
    let first = loop {
        let response = stream
            .next(Duration::from_secs(5))
            .await
            .expect("a snapshot");
        let snapshot = response.snapshot.as_ref().unwrap();
        if snapshot.virtual_keys.len() == 1 {
            break response;
        }
        stream.ack(&response.nonce, snapshot.version).await;
    };
    let snapshot = first.snapshot.clone().unwrap();
    assert!(snapshot.version > 0);
    assert_eq!(snapshot.projects.len(), 1);
    assert_eq!(
        snapshot.models[0].deployments[0].upstream_model,
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(snapshot.virtual_keys.len(), 1);
    assert_eq!(snapshot.virtual_keys[0].key_hash.len(), 64);
    let encoded = snapshot.encode_to_vec();
    assert!(
        !encoded
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes()),
        "plaintext key in snapshot"
    );
    let sealed = &snapshot.providers[0].keys[0];
    let opener = key.opener(&snapshot.sealing_public_key).unwrap();
    assert_eq!(
        opener
            .open(&sealed.id, &sealed.sealed_secret)
            .unwrap()
            .expose(),
        SECRET
    );
    assert!(
        SealingKeyPair::generate()
            .opener(&snapshot.sealing_public_key)
            .unwrap()
            .open(&sealed.id, &sealed.sealed_secret)
            .is_err()
    );

    // A stale nonce is ignored; the real one is recorded.
    stream.ack("not-the-nonce", snapshot.version + 100).await;
    stream.ack(&first.nonce, snapshot.version).await;
    let row = wait_for_fleet(&cp, "p1", |r| r["acked_version"] == snapshot.version);
    assert_eq!(row["connected"], true);
    // The publisher's trailing edge may still carry a seeding write: serve it too, so that the
    // change below is the only one in flight.
    let mut serving_version = snapshot.version;
    while let Some(late) = stream.next(Duration::from_millis(400)).await {
        serving_version = late.snapshot.as_ref().unwrap().version;
        stream.ack(&late.nonce, serving_version).await;
        wait_for_fleet(&cp, "p1", |r| r["acked_version"] == serving_version);
    }

    // An admin change reaches the stream within the debounce window.
    let changed_at = Instant::now();
    cp.ctl(&[
        "model",
        "create",
        "acme/second",
        "--deployment",
        "openai:gpt-4o",
    ])
    .ok();
    let second = stream
        .next(Duration::from_secs(3))
        .await
        .expect("a snapshot after the change");
    let propagation = changed_at.elapsed();
    println!(
        "admin change → snapshot on the stream: {propagation:?} (includes the sluicectl process)"
    );
    assert!(propagation < Duration::from_millis(1500), "{propagation:?}");
    let second_version = second.snapshot.as_ref().unwrap().version;
    assert!(second_version > snapshot.version);
    // The proxy serves the first version: the second is the difference from it, and no key
    // changed.
    let difference = second.snapshot.as_ref().unwrap();
    assert_eq!(difference.base_version, serving_version);
    assert!(difference.virtual_keys.is_empty() && difference.removed_key_hashes.is_empty());
    assert_eq!(difference.models.len(), 2, "every other table goes whole");
    assert!(!second.more);

    // NACK: recorded with its reason; the acked version stays; the version is not re-sent.
    stream
        .nack(
            &second.nonce,
            snapshot.version,
            "route to a missing deployment",
        )
        .await;
    let row = wait_for_fleet(&cp, "p1", |r| r["nacked_version"] == second_version);
    assert_eq!(row["nack_reason"], "route to a missing deployment");
    assert_eq!(row["acked_version"], serving_version);
    assert!(
        stream.next(Duration::from_millis(400)).await.is_none(),
        "a NACKed version is not re-sent"
    );
    let table = cp.ctl(&["fleet"]).ok().to_owned();
    assert!(table.contains("route to a missing deployment"), "{table}");

    // The next change is sent and can be ACKed.
    cp.ctl(&["project", "update", "acme/web", "--display-name", "Web"])
        .ok();
    let third = stream
        .next(Duration::from_secs(3))
        .await
        .expect("a snapshot after the next change");
    let third_version = third.snapshot.as_ref().unwrap().version;
    // After a NACK the stream no longer assumes what the proxy holds: the next goes whole.
    assert_eq!(third.snapshot.as_ref().unwrap().base_version, 0);
    assert_eq!(third.snapshot.as_ref().unwrap().virtual_keys.len(), 1);
    stream.ack(&third.nonce, third_version).await;
    wait_for_fleet(&cp, "p1", |r| r["acked_version"] == third_version);

    // Reconnecting with the current version: nothing is sent until something changes.
    drop(stream);
    wait_for_fleet(&cp, "p1", |r| r["connected"] == false);
    let mut again = ProxyStream::open(&channel, &token, "p1", third_version, &key)
        .await
        .unwrap();
    assert!(
        again.next(Duration::from_millis(400)).await.is_none(),
        "a current proxy gets nothing"
    );
    cp.ctl(&["project", "update", "acme/web", "--display-name", "Web 2"])
        .ok();
    let fourth = again
        .next(Duration::from_secs(3))
        .await
        .expect("the next change");
    let fourth_snapshot = fourth.snapshot.unwrap();
    assert!(fourth_snapshot.version > third_version);
    assert_eq!(
        fourth_snapshot.base_version, 0,
        "a new stream knows nothing yet"
    );
    again.ack(&fourth.nonce, fourth_snapshot.version).await;
    wait_for_fleet(&cp, "p1", |r| r["acked_version"] == fourth_snapshot.version);

    // Once ACKed, key changes travel alone: a new key, then its revocation.
    cp.ctl(&["vkey", "create", "acme/web/second"]).ok();
    let added = again
        .next(Duration::from_secs(3))
        .await
        .expect("the new key");
    let added_snapshot = added.snapshot.unwrap();
    assert_eq!(added_snapshot.base_version, fourth_snapshot.version);
    assert_eq!(added_snapshot.virtual_keys.len(), 1, "only the new key");
    assert_ne!(
        added_snapshot.virtual_keys[0].key_hash,
        snapshot.virtual_keys[0].key_hash
    );
    again.ack(&added.nonce, added_snapshot.version).await;
    wait_for_fleet(&cp, "p1", |r| r["acked_version"] == added_snapshot.version);
    cp.ctl(&["vkey", "revoke", "acme/web/second"]).ok();
    let revoked = again
        .next(Duration::from_secs(3))
        .await
        .expect("the revocation");
    let revoked_snapshot = revoked.snapshot.unwrap();
    assert_eq!(revoked_snapshot.base_version, added_snapshot.version);
    assert!(revoked_snapshot.virtual_keys.is_empty());
    assert_eq!(
        revoked_snapshot.removed_key_hashes,
        [added_snapshot.virtual_keys[0].key_hash.clone()]
    );
    again.ack(&revoked.nonce, revoked_snapshot.version).await;
    wait_for_fleet(&cp, "p1", |r| {
        r["acked_version"] == revoked_snapshot.version
    });

    // One snapshot in flight: changes made while the proxy has not answered wait and
    // coalesce; its ACK releases the newest, a difference over what it now serves.
    for n in 0..20 {
        cp.ctl(&[
            "org",
            "update",
            "acme",
            "--display-name",
            &format!("Acme {n}"),
        ])
        .ok();
    }
    let burst = again
        .next(Duration::from_secs(3))
        .await
        .expect("a snapshot");
    assert!(
        again.next(Duration::from_millis(400)).await.is_none(),
        "a second snapshot before the first was answered"
    );
    let mut serving = burst.snapshot.unwrap().version;
    again.ack(&burst.nonce, serving).await;
    let mut received = 1;
    while let Some(next) = again.next(Duration::from_millis(600)).await {
        let snapshot = next.snapshot.unwrap();
        assert_eq!(
            snapshot.base_version, serving,
            "taken from the ACKed version"
        );
        serving = snapshot.version;
        again.ack(&next.nonce, serving).await;
        received += 1;
    }
    println!("20 admin changes → {received} snapshots");
    assert!(received < 20, "changes were not coalesced: {received}");
    let newest = cp.ctl(&["-o", "json", "fleet"]).json()["config_version"].clone();
    wait_for_fleet(&cp, "p1", |r| r["acked_version"] == newest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_batches_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let token = seed(&cp);
    let channel = Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let record = |id: &str, tokens: u64| usage::UsageRecord {
        request_id: id.to_owned(),
        started_at_us: 1,
        project_id: "project-1".into(),
        virtual_key_id: "vk-1".into(),
        model: "gpt-4o-mini".into(),
        provider_id: "provider-1".into(),
        input_tokens: tokens,
        output_tokens: 5,
        http_status: 200,
        source: usage::UsageSource::ProviderReported as i32,
        ..Default::default()
    };
    let batch = |id: &str, records: Vec<usage::UsageRecord>| usage::ReportUsageRequest {
        proxy_id: "p1".into(),
        batch: Some(usage::UsageBatch {
            batch_id: id.to_owned(),
            records,
            first_delivery: false,
        }),
    };
    let (sender, receiver) = mpsc::channel(8);
    let mut client = UsageServiceClient::new(channel.clone());
    let refused = client
        .report_usage(with_token(
            ReceiverStream::new(mpsc::channel(1).1),
            &cp.admin_token,
        ))
        .await;
    assert_eq!(refused.err().unwrap().code(), Code::PermissionDenied);
    let mut acks = client
        .report_usage(with_token(ReceiverStream::new(receiver), &token))
        .await
        .unwrap()
        .into_inner();

    sender
        .send(batch("b1", vec![record("r1", 10), record("r2", 20)]))
        .await
        .unwrap();
    assert!(acks.message().await.unwrap().unwrap().committed);
    for _ in 0..5 {
        sender
            .send(batch("b1", vec![record("r1", 10), record("r2", 20)]))
            .await
            .unwrap();
        assert!(
            acks.message().await.unwrap().unwrap().committed,
            "a repeat is acknowledged"
        );
    }
    sender
        .send(batch("b1", vec![record("r1", 99)]))
        .await
        .unwrap();
    let conflict = acks.message().await.unwrap().unwrap();
    assert!(!conflict.committed);
    assert!(conflict.error.contains("different payload"));
    // Sent again under another batch id (as a proxy recovering its spool does): a record
    // already stored is not stored or counted twice.
    sender
        .send(batch("b2", vec![record("r2", 20), record("r3", 30)]))
        .await
        .unwrap();
    assert!(acks.message().await.unwrap().unwrap().committed);
    drop(sender);

    let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, input_tokens FROM usage_records ORDER BY request_id")
            .fetch_all(&sluice_e2e::usage_rows(&pool).await)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("r1".to_owned(), 10),
            ("r2".to_owned(), 20),
            ("r3".to_owned(), 30)
        ]
    );
}
