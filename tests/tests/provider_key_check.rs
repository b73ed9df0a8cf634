//! `sluicectl provider-key test` asks the upstream whether a key works and records the answer
//! as the key's health: 200 → valid, 401 → invalid_credentials (the upstream's message shown,
//! the key never), 403 or an unknown model → no_model_access, a refused connection →
//! unreachable — for OpenAI, Anthropic and Google (which answers an unknown key 400,
//! `API_KEY_INVALID`), each in its own wire format. `provider-key list` then shows it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::mock_openai::MockOpenAi;

const INVALID: &str = "sk-invalid-canary-91ab77";

#[test]
fn keys_are_classified_by_what_the_upstream_says() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    cp.ctl(&["org", "create", "acme"]).ok();
    let root = format!("http://{}", upstream.addr);
    for (name, kind, base) in [
        ("openai", "openai", upstream.base_url()),
        ("anthropic", "anthropic", root.clone()),
        ("google", "google", root.clone()),
        // Nothing listens on port 1.
        ("gone", "openai", "http://127.0.0.1:1/v1".to_owned()),
    ] {
        cp.ctl(&[
            "provider",
            "create",
            &format!("acme/{name}"),
            "--type",
            kind,
            "--base-url",
            &base,
            "--allow-private-network",
            "--timeout-ms",
            "3000",
        ])
        .ok();
    }
    for (key, secret) in [
        ("acme/openai/good", "sk-good-key-1234"),
        ("acme/openai/bad", INVALID),
        ("acme/openai/limited", "sk-noaccess-5678"),
        ("acme/gone/any", "sk-any-key-0000"),
        ("acme/anthropic/a-good", "sk-ant-good-1"),
        ("acme/anthropic/a-bad", "sk-ant-invalid-2"),
        ("acme/anthropic/a-limited", "sk-ant-noaccess-3"),
        ("acme/google/g-good", "AIza-good-1"),
        ("acme/google/g-bad", "AIza-invalid-2"),
        ("acme/google/g-limited", "AIza-noaccess-3"),
    ] {
        cp.ctl_stdin(&["provider-key", "add", key], secret).ok();
    }
    let test = |key: &str, model: Option<&str>| {
        let mut args = vec!["-o", "json", "provider-key", "test", key];
        if let Some(model) = model {
            args.extend(["--model", model]);
        }
        cp.ctl(&args).json()
    };

    let good = test("acme/openai/good", None);
    assert_eq!(
        (good["result"].as_str(), good["upstream_status"].as_u64()),
        (Some("valid"), Some(200))
    );
    let bad = test("acme/openai/bad", None);
    assert_eq!(bad["result"], "invalid_credentials");
    assert_eq!(bad["upstream_status"], 401);
    let message = bad["message"].as_str().unwrap();
    assert!(message.contains("Incorrect API key provided"), "{message}");
    assert!(!message.contains(INVALID), "the key leaked: {message}");
    assert_eq!(
        test("acme/openai/limited", None)["result"],
        "no_model_access"
    );
    assert_eq!(
        test("acme/openai/good", Some("gpt-nope"))["result"],
        "no_model_access"
    );
    assert_eq!(
        test("acme/openai/good", Some("gpt-4o-mini"))["result"],
        "valid"
    );
    let gone = test("acme/gone/any", None);
    assert_eq!(
        (gone["result"].as_str(), gone["upstream_status"].as_u64()),
        (Some("unreachable"), Some(0))
    );

    // Anthropic and Google, each in its own wire format: Google answers an unknown key 400.
    for (family, nope) in [("anthropic", "claude-nope"), ("google", "gemini-nope")] {
        let prefix = &family[..1];
        let good = test(&format!("acme/{family}/{prefix}-good"), None);
        assert_eq!(good["result"], "valid", "{family}: {good}");
        let bad = test(&format!("acme/{family}/{prefix}-bad"), None);
        assert_eq!(bad["result"], "invalid_credentials", "{family}: {bad}");
        assert!(
            bad["message"].as_str().unwrap().contains("valid"),
            "{family}: {bad}"
        );
        let limited = test(&format!("acme/{family}/{prefix}-limited"), None);
        assert_eq!(limited["result"], "no_model_access", "{family}: {limited}");
        assert_eq!(limited["upstream_status"], 403);
        let unknown = test(&format!("acme/{family}/{prefix}-good"), Some(nope));
        assert_eq!(unknown["result"], "no_model_access", "{family}: {unknown}");
    }
    assert_eq!(
        test("acme/google/g-bad", None)["upstream_status"],
        400,
        "Google's own status is shown"
    );

    // The health is stored and shown with the keys.
    let listed = cp
        .ctl(&["-o", "json", "provider-key", "list", "acme"])
        .json();
    let health = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["health"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(health("good"), "VALID");
    assert_eq!(health("bad"), "INVALID_CREDENTIALS");
    assert_eq!(health("limited"), "NO_MODEL_ACCESS");
    assert_eq!(health("any"), "UNREACHABLE");
    assert_eq!(health("g-bad"), "INVALID_CREDENTIALS");
    // Nothing the control plane printed holds the key either.
    assert!(!cp.output.text().contains(INVALID));
}

/// A live request whose upstream refuses the key answers `provider_key_invalid` (502, fix) and
/// the proxy reports it, so the control plane marks the key for the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_marks_a_refused_key() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = sluice_e2e::live_stack("sk-refused-in-traffic");
    cp.ctl(&[
        "model",
        "create",
        "acme/refused",
        "--deployment",
        "openai:fail-401",
    ])
    .ok();
    let (_proxy_dir, proxy, http) = sluice_e2e::caught_up_proxy(&cp, &acme.token).await;
    let body =
        serde_json::json!({"model": "refused", "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(&proxy.url("/v1/chat/completions"), Some(&acme.key), &body)
        .await
        .unwrap();
    assert_eq!(response.status, 502, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], "provider_key_invalid");
    assert_eq!(error["next_action"], "fix");
    cp.await_key_health("acme", "main", "INVALID_CREDENTIALS")
        .await;
    // Google refuses an unknown key with a 400 that names the reason: a rejected key too,
    // through the translated chat path and Gemini's own endpoint alike.
    cp.add_provider_model(
        "acme/google",
        "google",
        &format!("http://{}", upstream.addr),
        &[("stale", "AIza-invalid-77")],
        "acme/gemini",
        "gemini-2.5-flash",
    );
    proxy.wait_for_version(&http, cp.config_version()).await;
    let body =
        serde_json::json!({"model": "gemini", "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(&proxy.url("/v1/chat/completions"), Some(&acme.key), &body)
        .await
        .unwrap();
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "provider_key_invalid");
    let native = http
        .send(
            "POST",
            &proxy.url("/v1beta/models/gemini:generateContent"),
            None,
            &[("x-goog-api-key", &acme.key)],
            bytes::Bytes::from(
                serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(native.status, 502, "{}", native.text());
    assert_eq!(
        native.json()["error"]["sluice_code"],
        "provider_key_invalid"
    );
    cp.await_key_health("acme", "stale", "INVALID_CREDENTIALS")
        .await;
    let audit = cp
        .ctl(&[
            "-o",
            "json",
            "audit",
            "list",
            "--action",
            "provider_key.rejected",
        ])
        .json();
    assert!(audit.as_array().unwrap().len() >= 2, "{audit}");
}

/// A provider with two keys, the first of which the upstream refuses: the request succeeds
/// with the second, the first is marked, and once the proxies hear of it they try the good
/// key first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_gives_way_to_the_next() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = sluice_e2e::live_stack("sk-openai-side");
    // Keys are tried in the order they were added.
    cp.add_provider_model(
        "acme/google",
        "google",
        &format!("http://{}", upstream.addr),
        &[("stale", "AIza-invalid-1"), ("fresh", "AIza-good-2")],
        "acme/gemini",
        "gemini-2.5-flash",
    );
    let (_proxy_dir, proxy, http) = sluice_e2e::caught_up_proxy(&cp, &acme.token).await;
    let body =
        serde_json::json!({"model": "gemini", "messages": [{"role": "user", "content": "hi"}]});
    let url = proxy.url("/v1/chat/completions");
    let answer = http.post(&url, Some(&acme.key), &body).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let keys_sent: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.headers["x-goog-api-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys_sent, ["AIza-invalid-1", "AIza-good-2"]);

    // The refusal reaches the control plane, which marks the key and publishes the change.
    cp.await_key_health("acme", "stale", "INVALID_CREDENTIALS")
        .await;
    proxy.wait_for_version(&http, cp.config_version()).await;
    let before = upstream.requests().len();
    let answer = http.post(&url, Some(&acme.key), &body).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), before + 1, "the refused key was tried again");
    assert_eq!(seen[before].headers["x-goog-api-key"], "AIza-good-2");
}

/// The key check and live traffic reach an upstream the same way: per family, the same
/// credential header, the same version (the provider's `api_version`, or the operator's own
/// `anthropic-version`, which is never overwritten) and the operator's extra headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_check_sends_what_traffic_sends() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = sluice_e2e::live_stack("sk-same-openai");
    let base = format!("http://{}", upstream.addr);
    let v1 = format!("{base}/v1");
    // (provider, type, base URL, flags, key)
    let providers: [(&str, &str, &str, &[&str], &str); 5] = [
        (
            "azure",
            "azure-openai",
            &base,
            &["--api-version", "2024-10-21"],
            "az-same-key",
        ),
        (
            "claude",
            "anthropic",
            &base,
            &["--api-version", "2024-10-22"],
            "sk-ant-same",
        ),
        (
            "claude-pinned",
            "anthropic",
            &base,
            &["--header", "anthropic-version=2099-01-01"],
            "sk-ant-pinned",
        ),
        ("gemini", "google", &base, &[], "AIza-same-key"),
        ("vllm", "vllm", &v1, &[], "vllm-same-key"),
    ];
    for (name, kind, base, flags, key) in providers {
        let path = format!("acme/{name}");
        let mut create = vec![
            "provider",
            "create",
            &path,
            "--type",
            kind,
            "--base-url",
            base,
            "--allow-private-network",
            "--header",
            "x-team=research",
        ];
        create.extend_from_slice(flags);
        cp.ctl(&create).ok();
        cp.ctl_stdin(&["provider-key", "add", &format!("{path}/main")], key)
            .ok();
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{name}-m"),
            "--deployment",
            &format!("{name}:up-{name}"),
        ])
        .ok();
    }
    cp.ctl(&[
        "provider",
        "update",
        "acme/openai",
        "--header",
        "x-team=research",
        "--replace-headers",
    ])
    .ok();
    let (_proxy_dir, proxy, http) = sluice_e2e::caught_up_proxy(&cp, &acme.token).await;

    let names = [
        "openai",
        "azure",
        "claude",
        "claude-pinned",
        "gemini",
        "vllm",
    ];
    for name in names {
        let before = upstream.requests().len();
        cp.ctl(&["provider-key", "test", &format!("acme/{name}/main")]);
        let checked = upstream.requests()[before..].to_vec();
        let model = if name == "openai" {
            "gpt-4o-mini".to_owned()
        } else {
            format!("{name}-m")
        };
        let answer = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&acme.key),
                &serde_json::json!({"model": model, "max_tokens": 16,
                                    "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let traffic = upstream.requests().last().cloned().unwrap();
        let [check] = checked.as_slice() else {
            panic!("{name}: the key check made {} calls", checked.len());
        };
        for header in [
            "authorization",
            "api-key",
            "x-api-key",
            "x-goog-api-key",
            "anthropic-version",
            "x-team",
        ] {
            assert_eq!(
                check.headers.get(header),
                traffic.headers.get(header),
                "{name}: {header} differs between the key check ({}) and traffic ({})",
                check.path,
                traffic.path
            );
        }
        assert_eq!(check.headers["x-team"], "research", "{name}");
        let api_version = |query: &str| {
            query
                .split('&')
                .find(|p| p.starts_with("api-version="))
                .map(str::to_owned)
        };
        assert_eq!(
            api_version(&check.query),
            api_version(&traffic.query),
            "{name}"
        );
    }
    // The provider's version where the operator set none; the operator's own where they did.
    let versions = |key: &str| -> Vec<String> {
        upstream
            .requests()
            .into_iter()
            .filter(|r| r.headers.get("x-api-key").is_some_and(|k| k == key))
            .map(|r| r.headers["anthropic-version"].to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(versions("sk-ant-same"), ["2024-10-22", "2024-10-22"]);
    assert_eq!(versions("sk-ant-pinned"), ["2099-01-01", "2099-01-01"]);
}
