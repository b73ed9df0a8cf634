//! LIVE traffic to an upstream over TLS: the proxy verifies the certificate (an operator can
//! add a private CA with SLUICE_PROXY_UPSTREAM_CA_FILE), negotiates HTTP/2 by ALPN, and
//! streams over it. Without the CA the call fails closed as upstream_unavailable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::proxy::{Http, ProxyBuilder};

/// A throwaway CA and a `localhost` server certificate it signed: (CA PEM, server TLS config).
fn private_pki() -> (String, Arc<rustls::ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}

/// One whole answer and one stream for `model` through the proxy at `url`, both checked.
async fn answer_and_stream(http: &Http, url: &str, key: &str, model: &str) {
    let chat = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(url, Some(key), &chat).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "Hello from the mock upstream"
    );
    let streaming =
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, frames) = http.post_streaming(url, key, &streaming).await;
    assert_eq!(status, 200);
    let streamed: String = frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        streamed.contains("upstream") && streamed.ends_with("data: [DONE]\n\n"),
        "{streamed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_with_http2_and_a_private_ca() {
    let (ca_pem, server_config) = private_pki();
    // A second upstream that offers only HTTP/1.1, for the proxy's own HTTP/1.1 client.
    let mut http1_only = (*server_config).clone();
    http1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    let upstream = MockOpenAi::start_tls(server_config);
    let http1_upstream = MockOpenAi::start_tls(Arc::new(http1_only));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();

    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let base_url = format!("https://localhost:{}/v1", upstream.addr.port());
    cp.ctl(&["org", "create", "acme"]).ok();
    cp.ctl(&[
        "provider",
        "create",
        "acme/internal",
        "--type",
        "vllm",
        "--base-url",
        &base_url,
        "--allow-private-network",
    ])
    .ok();
    cp.ctl_stdin(
        &["provider-key", "add", "acme/internal/main"],
        "sk-tls-upstream-0001",
    )
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/llama",
        "--deployment",
        "internal:llama-3.1-8b",
    ])
    .ok();
    let http1_base_url = format!("https://localhost:{}/v1", http1_upstream.addr.port());
    cp.ctl(&[
        "provider",
        "create",
        "acme/internal-h1",
        "--type",
        "vllm",
        "--base-url",
        &http1_base_url,
        "--allow-private-network",
    ])
    .ok();
    cp.ctl_stdin(
        &["provider-key", "add", "acme/internal-h1/main"],
        "sk-tls-upstream-0002",
    )
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/llama-h1",
        "--deployment",
        "internal-h1:llama-3.1-8b",
    ])
    .ok();
    cp.ctl(&["project", "create", "acme/web", "--default-model", "llama"])
        .ok();
    let key = cp.virtual_key("acme/web/app", &[]);
    cp.ctl(&["project", "set-posture", "acme/web", "live"]).ok();
    let token = cp.data_plane_token("proxies");
    let http = Http::new();
    let chat = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});

    let trusting_dir = tempfile::tempdir().unwrap();
    let trusting = ProxyBuilder::new(trusting_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_UPSTREAM_CA_FILE", ca_file.to_str().unwrap())
        .start();
    trusting.wait_for_version(&http, cp.config_version()).await;
    let url = trusting.url("/v1/chat/completions");
    answer_and_stream(&http, &url, &key, "default").await;
    let protocols = upstream.protocols();
    assert!(
        !protocols.is_empty() && protocols.iter().all(|p| p == "h2"),
        "ALPN: {protocols:?}"
    );
    assert_eq!(
        upstream.requests().last().unwrap().headers["authorization"],
        "Bearer sk-tls-upstream-0001"
    );

    // Over TLS without HTTP/2: whole answers and a stream, on connections kept for reuse.
    for _ in 0..2 {
        answer_and_stream(&http, &url, &key, "llama-h1").await;
    }
    let protocols = http1_upstream.protocols();
    assert!(
        !protocols.is_empty() && protocols.iter().all(|p| p == "http/1.1"),
        "ALPN: {protocols:?}"
    );
    assert!(
        http1_upstream.connections() < 4,
        "4 calls took {} connections",
        http1_upstream.connections()
    );
    assert_eq!(
        http1_upstream.requests().last().unwrap().headers["authorization"],
        "Bearer sk-tls-upstream-0002"
    );

    // A proxy that does not trust the private CA refuses to send the key there.
    let before = upstream.requests().len();
    let doubting_dir = tempfile::tempdir().unwrap();
    let doubting = ProxyBuilder::new(doubting_dir.path(), &cp.url(), &token).start();
    doubting.wait_for_version(&http, cp.config_version()).await;
    let refused = http
        .post(&doubting.url("/v1/chat/completions"), Some(&key), &chat)
        .await
        .unwrap();
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(
        upstream.requests().len(),
        before,
        "a request crossed an unverified TLS connection"
    );

    // A CA file that is not PEM stops the proxy at start, naming the setting.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let mut command = std::process::Command::new(sluice_e2e::binary("sluice-proxy"));
    command
        .env_clear()
        .env("SLUICE_PROXY_TOKEN", &token)
        .env("SLUICE_PROXY_DATA_DIR", dir.path().join("never"))
        .env("SLUICE_PROXY_UPSTREAM_CA_FILE", &ca_file);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("upstream_ca_file"));
}
