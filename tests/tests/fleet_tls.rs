//! The halves over TLS, with mTLS for proxies (issue 16): two proxies with client certificates
//! receive config, send usage and hold leases; a proxy without a certificate, with one from
//! another CA, or with an expired one, is refused with a clear log line on both sides;
//! certificates replaced on disk serve new connections without a restart while established
//! streams keep working; `sluicectl` over TLS; plaintext beyond loopback refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::pki::{Issued, TestCa, write_atomically};
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{Captured, ControlPlane, ControlPlaneBuilder, ctl_with, eventually};

fn proxy_with(
    cp: &ControlPlane,
    token: &str,
    ca: &Path,
    cert: Option<&Issued>,
) -> (tempfile::TempDir, Proxy) {
    proxy_at(&cp.data_plane_url(), token, ca, cert)
}

fn proxy_at(
    url: &str,
    token: &str,
    ca: &Path,
    cert: Option<&Issued>,
) -> (tempfile::TempDir, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = ProxyBuilder::new(dir.path(), url, token).env(
        "SLUICE_PROXY_CONTROL_PLANE_CA_FILE",
        &ca.display().to_string(),
    );
    if let Some(cert) = cert {
        builder = builder
            .env(
                "SLUICE_PROXY_CONTROL_PLANE_CERT_FILE",
                &cert.cert.display().to_string(),
            )
            .env(
                "SLUICE_PROXY_CONTROL_PLANE_KEY_FILE",
                &cert.key.display().to_string(),
            );
    }
    (dir, builder.start())
}

async fn logged(output: &Captured, who: &str, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !needles.iter().all(|needle| output.text().contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "{who} never logged {needles:?}:\n{}",
            output.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both sides say an expired proxy certificate was refused.
async fn refused_as_expired(proxy: &Proxy, cp: &ControlPlane) {
    logged(
        &proxy.output,
        "the proxy with an expired certificate",
        &["refused this proxy's client certificate as expired"],
    )
    .await;
    logged(
        &cp.output,
        "the control plane",
        &["TLS handshake refused", "expired"],
    )
    .await;
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 50,
           "messages": [{"role": "user", "content": "hi"}]})
}

fn budget_row(cp: &ControlPlane) -> Value {
    cp.ctl(&["-o", "json", "budget", "list", "acme"]).json()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_certificates_are_served_and_every_other_one_is_refused() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "fleet");
    let rogue = TestCa::new(pki.path(), "rogue");
    let server = ca.server(pki.path(), "control-plane");

    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    // Proxies on a listener of their own (the one a network policy opens to them alone).
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .tls(&server, &ca.ca_file, Some(&ca.ca_file))
        .env("SLUICE_DATA_PLANE_LISTEN_ADDR", "127.0.0.1:0")
        .start();
    assert!(cp.url().starts_with("https://"));
    assert!(cp.data_plane_url().starts_with("https://") && cp.data_plane_url() != cp.url());
    // sluicectl over TLS: every seeding step below goes through it.
    let acme = cp.seed_acme(&upstream.base_url(), Some("sk-fleet-tls"), &[]);
    cp.go_live("acme/web");
    cp.hard_budget("acme/web", "10");
    // Without the CA, sluicectl refuses the control plane's certificate, and says why.
    let untrusting = ctl_with(&cp.url(), &[], &cp.admin_token, &["org", "list"], None);
    assert!(!untrusting.success);
    assert!(
        untrusting.stderr.contains("certificate") && untrusting.stderr.contains("UnknownIssuer"),
        "{}",
        untrusting.stderr
    );

    // Two proxies with certificates: config, traffic under a HARD budget (leases), usage.
    let http = Http::new();
    let certified: Vec<(tempfile::TempDir, Proxy)> = (0..2)
        .map(|n| {
            let cert = ca.client(pki.path(), &format!("proxy-{n}"));
            proxy_with(&cp, &acme.token, &ca.ca_file, Some(&cert))
        })
        .collect();
    for (_, proxy) in &certified {
        proxy.wait_for_version(&http, cp.config_version()).await;
        let answer = http
            .post(&proxy.url("/v1/chat/completions"), Some(&acme.key), &chat())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    eventually("usage from both proxies and a lease each", 20, async || {
        let row = budget_row(&cp);
        row["requests"].as_i64() == Some(2) && row["leases"].as_i64() == Some(2)
    })
    .await;

    // The operators' listener serves no proxy streams, and the proxies' listener no admin API.
    let (_dir, misdirected) = proxy_at(
        &cp.url(),
        &acme.token,
        &ca.ca_file,
        Some(&ca.client(pki.path(), "misdirected")),
    );
    logged(
        &misdirected.output,
        "a proxy pointed at the admin listener",
        &[
            "config stream down",
            "point SLUICE_PROXY_CONTROL_PLANE at the control plane's data-plane listener",
        ],
    )
    .await;
    let admin_on_proxy_port = ctl_with(
        &cp.data_plane_url(),
        &cp.ctl_env,
        &cp.admin_token,
        &["org", "list"],
        None,
    );
    assert!(!admin_on_proxy_port.success);

    // Refused: no certificate (the handshake completes; the data-plane services say no).
    let (_dir, bare) = proxy_with(&cp, &acme.token, &ca.ca_file, None);
    logged(
        &bare.output,
        "the proxy without a certificate",
        &[
            "config stream down",
            "requires proxies to present a client certificate",
        ],
    )
    .await;
    logged(
        &cp.output,
        "the control plane",
        &["refused a proxy without a client certificate"],
    )
    .await;

    // Refused at the handshake: a certificate from another CA, and an expired one.
    let (_dir, stranger) = proxy_with(
        &cp,
        &acme.token,
        &ca.ca_file,
        Some(&rogue.client(pki.path(), "stranger")),
    );
    logged(
        &stranger.output,
        "the proxy with a stranger's certificate",
        &["refused this proxy's client certificate: it must be issued by the CA"],
    )
    .await;
    logged(
        &cp.output,
        "the control plane",
        &["TLS handshake refused", "UnknownIssuer"],
    )
    .await;
    let (_dir, stale) = proxy_with(
        &cp,
        &acme.token,
        &ca.ca_file,
        Some(&ca.expired_client(pki.path(), "stale")),
    );
    refused_as_expired(&stale, &cp).await;
    for refused in [&bare, &stranger, &stale] {
        assert!(!refused.output.text().contains("config stream connected"));
    }

    // The control plane's certificate replaced on disk, now from a second CA: new connections
    // get it (sluicectl must trust the new CA) without a restart.
    let successor = TestCa::new(pki.path(), "successor");
    let renewed = successor.server(pki.path(), "renewed");
    write_atomically(&server.key, &std::fs::read_to_string(&renewed.key).unwrap());
    write_atomically(
        &server.cert,
        &std::fs::read_to_string(&renewed.cert).unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let trusting_new = |args: &[&str]| {
        ctl_with(
            &cp.url(),
            &[(
                "SLUICE_CA_FILE".to_owned(),
                successor.ca_file.display().to_string(),
            )],
            &cp.admin_token,
            args,
            None,
        )
    };
    let mut listed = trusting_new(&["org", "list"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed.success && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        listed = trusting_new(&["org", "list"]);
    }
    assert!(listed.success, "{}", listed.stderr);
    assert!(
        !cp.ctl(&["org", "list"]).success,
        "the old certificate is still served"
    );
    logged(
        &cp.output,
        "the control plane",
        &["TLS files changed: new connections use them"],
    )
    .await;

    // The proxies' established streams keep working: a change made now reaches them.
    trusting_new(&[
        "model",
        "create",
        "acme/after-rotation",
        "--deployment",
        "openai:gpt-4o-mini",
    ])
    .ok();
    let version = trusting_new(&["-o", "json", "fleet"]).json()["config_version"]
        .as_u64()
        .unwrap();
    for (_, proxy) in &certified {
        proxy.wait_for_version(&http, version).await;
        let answer = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&acme.key),
                &json!({
                "model": "after-rotation", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let all = format!(
        "{}{}",
        cp.output.text(),
        certified
            .iter()
            .map(|(_, p)| p.output.text())
            .collect::<String>()
    );
    assert!(!all.contains("sk-fleet-tls") && !all.contains(&acme.token));
}

#[test]
fn plaintext_beyond_loopback_is_refused_unless_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let refused = ControlPlaneBuilder::new(dir.path())
        .env("SLUICE_LISTEN_ADDR", "0.0.0.0:0")
        .run_to_exit();
    assert_eq!(refused.status.code(), Some(64));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("listen_addr") && said.contains("TLS"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicitly_insecure_listener_says_so_at_start_and_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path())
        .env("SLUICE_LISTEN_ADDR", "0.0.0.0:0")
        .env("SLUICE_ALLOW_INSECURE_LISTEN", "true")
        .start();
    logged(
        &cp.output,
        "the control plane",
        &["INSECURE: plaintext gRPC beyond loopback"],
    )
    .await;
    let port = cp.addr.rsplit(':').next().unwrap();
    let metrics = Http::new()
        .get(&format!("http://127.0.0.1:{port}/metrics"), None)
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("\nsluice_insecure_listener 1\n"),
        "{metrics}"
    );
}

/// The proxy's own certificate is re-read too: replaced on disk while it runs, the next
/// connection presents the new one. Here the new one is expired, so the control plane
/// (restarted on the same ports, which makes the proxy reconnect) refuses it — and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_certificate_replaced_on_disk_is_the_one_its_next_connection_presents() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "fleet");
    let server = ca.server(pki.path(), "control-plane");
    let cp_dir = tempfile::tempdir().unwrap();
    let start = |admin: &str, proxies: &str| {
        ControlPlaneBuilder::new(cp_dir.path())
            .tls(&server, &ca.ca_file, Some(&ca.ca_file))
            .env("SLUICE_LISTEN_ADDR", admin)
            .env("SLUICE_DATA_PLANE_LISTEN_ADDR", proxies)
            .env("SLUICE_ADMIN_TOKEN", &"a".repeat(40))
            .start()
    };
    let cp = start("127.0.0.1:0", "127.0.0.1:0");
    let token = cp.data_plane_token("proxies");
    let certificate = ca.client(pki.path(), "proxy");
    let (_dir, proxy) = proxy_with(&cp, &token, &ca.ca_file, Some(&certificate));
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;

    // Swapped for an expired one from the same CA; the established stream is unaffected.
    let expired = ca.expired_client(pki.path(), "expired");
    write_atomically(
        &certificate.key,
        &std::fs::read_to_string(&expired.key).unwrap(),
    );
    write_atomically(
        &certificate.cert,
        &std::fs::read_to_string(&expired.cert).unwrap(),
    );
    let (admin, proxies) = (
        cp.addr.clone(),
        cp.data_plane_url()
            .trim_start_matches("https://")
            .to_owned(),
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(!proxy.output.text().contains("config stream down"));

    // A new connection: the control plane comes back on the same ports.
    drop(cp.stop());
    let cp = start(&admin, &proxies);
    refused_as_expired(&proxy, &cp).await;
}
