//! Start-up behaviour of the real control-plane binary: settings errors, master keys, master
//! key rotation across restarts, and the health and reflection services grpcurl relies on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_e2e::ControlPlaneBuilder;
use tonic::transport::Channel;

const KEY_ONE: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01
const KEY_TWO: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 × 0x02
const KEY_WRONG: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="; // 32 × 0x03
const ADMIN_TOKEN: &str = "sluice-admin-test-token-0123456789abcdefghij";

#[test]
fn refuses_to_start_without_a_master_key_and_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = ControlPlaneBuilder::new(dir.path())
        .dev(false)
        .run_to_exit();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SLUICE_MASTER_KEY") && stderr.contains("generate-master-key"),
        "{stderr}"
    );
}

#[test]
fn a_bad_setting_names_the_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("SLUICE_LISTEN_ADRESS", "x"),
        ("SLUICE_LISTEN_ADDR", "nowhere"),
        ("SLUICE_DEV_MODE", "perhaps"),
    ] {
        let output = ControlPlaneBuilder::new(dir.path())
            .env(key, value)
            .run_to_exit();
        assert_eq!(output.status.code(), Some(64), "{key}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(key),
            "{key}"
        );
    }
}

fn with_keys(dir: &std::path::Path, keys: &str) -> ControlPlaneBuilder {
    ControlPlaneBuilder::new(dir)
        .dev(false)
        .env("SLUICE_MASTER_KEY", keys)
        .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
}

#[test]
fn master_key_rotation_rewraps_without_losing_keys() {
    let dir = tempfile::tempdir().unwrap();

    // Version 1 seals the first key.
    let cp = with_keys(dir.path(), KEY_ONE).start();
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
    cp.ctl_stdin(
        &["provider-key", "add", "acme/openai/main"],
        "sk-rotation-test-0001",
    )
    .ok();
    let status = cp.ctl(&["-o", "json", "vault", "status"]).json();
    assert_eq!(status[0]["master_key_version"], 1);
    assert_eq!(status[0]["provider_keys"], 1);
    drop(cp);

    // A wrong key for version 1 is refused at start, before serving anything.
    let wrong = with_keys(dir.path(), &format!("1:{KEY_WRONG}")).run_to_exit();
    assert_ne!(wrong.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("master key version 1 does not match"));

    // Add version 2: the background re-wrap moves every data key under it.
    let cp = with_keys(dir.path(), &format!("1:{KEY_ONE},2:{KEY_TWO}")).start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = cp.ctl(&["-o", "json", "vault", "status"]).json();
        let rows = status.as_array().unwrap();
        if rows.len() == 1 && rows[0]["master_key_version"] == 2 && rows[0]["provider_keys"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "re-wrap did not finish: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cp.ctl_stdin(
        &["provider-key", "add", "acme/openai/second"],
        "sk-rotation-test-0002",
    )
    .ok();
    drop(cp);

    // Version 1 can now go; dropping version 2 instead is refused, naming it.
    let cp = with_keys(dir.path(), &format!("2:{KEY_TWO}")).start();
    let keys = cp
        .ctl(&["-o", "json", "provider-key", "list", "acme"])
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(cp.ctl(&["-o", "json", "vault", "rewrap"]).json()["rewrapped"] == 0);
    drop(cp);
    let missing = with_keys(dir.path(), &format!("1:{KEY_ONE}")).run_to_exit();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("master key version 2") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let channel = Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sluice.admin.v1.AdminService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses
        .message()
        .await
        .unwrap()
        .expect("one reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "sluice.admin.v1.AdminService"),
        "{names:?}"
    );
}
