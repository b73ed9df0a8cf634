//! The proxy's own TLS listener (issue 16): the official OpenAI SDK, trusting a CA made in
//! the test, gets whole answers and streams over HTTP/2, and over HTTP/1.1 when it asks for
//! it (ALPN); a client that does not trust the certificate gets nothing and is counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::pki::TestCa;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::{LiveStack, live_stack};

/// Runs the SDK script; `.ci/test` installs the SDK (`openai`, `httpx[http2]`).
fn openai_sdk(base_url: &str, key: &str, ca: &std::path::Path, protocol: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_chat.py");
    let child = Command::new("python3")
        .args([
            script,
            base_url,
            key,
            &ca.display().to_string(),
            "gpt-4o-mini",
            protocol,
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (the test command installs it and the OpenAI SDK)");
    let output = sluice_e2e::processes::wait_with_timeout(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the OpenAI SDK failed (is it installed? .ci/test installs it):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_speaks_http2_to_the_proxy_over_tls() {
    let LiveStack {
        cp,
        acme,
        upstream: _upstream,
        cp_dir: _cp_dir,
    } = live_stack("sk-listener-tls");
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "edge");
    let certificate = ca.server(pki.path(), "proxy");
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &acme.token)
        .env(
            "SLUICE_PROXY_TLS_CERT_FILE",
            &certificate.cert.display().to_string(),
        )
        .env(
            "SLUICE_PROXY_TLS_KEY_FILE",
            &certificate.key.display().to_string(),
        )
        .start();
    let port = proxy.addr.rsplit(':').next().unwrap().to_owned();
    let base_url = format!("https://localhost:{port}/v1");

    // Config arrives as for any proxy; wait for it through a plain client that trusts the CA.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = openai_sdk_probe(&base_url, &acme.key, &ca.ca_file);
        if answer {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (protocol, version) in [("h2", "HTTP/2"), ("http1", "HTTP/1.1")] {
        let seen = openai_sdk(&base_url, &acme.key, &ca.ca_file, protocol);
        assert_eq!(seen["http_version"], version, "{seen}");
        assert_eq!(seen["content"], "Hello from the mock upstream", "{seen}");
        assert!(seen["total_tokens"].as_u64().unwrap() > 0, "{seen}");
        assert!(!seen["streamed"].as_str().unwrap().is_empty(), "{seen}");
        assert!(seen["stream_usage"].as_u64().unwrap() > 0, "{seen}");
        assert!(seen["overhead_us"].as_str().is_some(), "{seen}");
    }

    // A client that does not trust the certificate: no answer, and the proxy counts it.
    let plaintext = Http::new()
        .get(&format!("http://127.0.0.1:{port}/healthz"), None)
        .await;
    assert!(plaintext.is_err(), "plaintext on the TLS port was answered");
    let refused = openai_sdk_refused(&base_url, &acme.key);
    assert!(refused, "a client without the CA must not get through");
    let metrics = metrics_over_tls(&base_url, &ca.ca_file);
    let failed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_tls_handshakes_failed_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("sluice_tls_handshakes_failed_total");
    assert!(failed >= 1.0, "{metrics}");
}

/// Whether a chat through the SDK succeeds yet (the proxy may still await its config).
fn openai_sdk_probe(base_url: &str, key: &str, ca: &std::path::Path) -> bool {
    python(&format!(
        "import ssl,httpx\nr=httpx.get('{base_url}/models', headers={{'authorization':'Bearer {key}'}}, verify=ssl.create_default_context(cafile='{}'))\nprint(r.status_code)",
        ca.display()
    ))
    .is_some_and(|out| out.trim() == "200")
}

/// Whether a client trusting only the web roots is refused at the handshake.
fn openai_sdk_refused(base_url: &str, key: &str) -> bool {
    python(&format!(
        "import httpx\ntry:\n    httpx.get('{base_url}/models', headers={{'authorization':'Bearer {key}'}})\n    print('served')\nexcept httpx.ConnectError as e:\n    print('refused', e)"
    ))
    .is_some_and(|out| out.starts_with("refused") && out.contains("CERTIFICATE_VERIFY_FAILED"))
}

fn metrics_over_tls(base_url: &str, ca: &std::path::Path) -> String {
    let origin = base_url.trim_end_matches("/v1");
    python(&format!(
        "import ssl,httpx\nprint(httpx.get('{origin}/metrics', verify=ssl.create_default_context(cafile='{}')).text)",
        ca.display()
    ))
    .unwrap_or_default()
}

fn python(program: &str) -> Option<String> {
    let child = Command::new("python3")
        .args(["-c", program])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let output = sluice_e2e::processes::wait_with_timeout(child, Duration::from_secs(30));
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
