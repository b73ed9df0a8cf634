//! Concurrent admin writes through the real control plane all succeed: on SQLite a writer
//! must never fail because another writer holds the lock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_e2e::ControlPlaneBuilder;
use sluice_proto::admin::v1::CreateVirtualKeyRequest;
use sluice_proto::admin::v1::admin_service_client::AdminServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_virtual_key_creation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    cp.ctl(&["org", "create", "acme"]).ok();
    cp.ctl(&["project", "create", "acme/web"]).ok();
    let channel = tonic::transport::Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut client = AdminServiceClient::new(channel.clone());
        let (next, failures) = (next.clone(), failures.clone());
        let header: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", cp.admin_token).parse().unwrap();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= 400 {
                    break;
                }
                let mut request = tonic::Request::new(CreateVirtualKeyRequest {
                    organization: "acme".into(),
                    project: "web".into(),
                    name: format!("key-{n}"),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
                if let Err(status) = client.create_virtual_key(request).await {
                    eprintln!("key-{n}: {status:?}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "control plane log:\n{}",
        cp.output.text()
    );
    let listed = cp.ctl(&["-o", "json", "vkey", "list", "acme/web"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 400);
}
