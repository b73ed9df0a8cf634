//! An operator's whole first session through `sluicectl` against the real control plane, and
//! proof that the provider key's plaintext ends up nowhere: not in the database files, not in
//! any API or CLI output, not in the logs at trace level.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_e2e::{ControlPlaneBuilder, contains_bytes, files_under};

fn canary(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sk-canary-{tag}-{nanos:x}{:x}", std::process::id())
}

/// The canary itself, every 12-character piece of it, and its common encodings.
fn leak_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    let chars: Vec<char> = secret.chars().collect();
    forms.extend(chars.windows(12).map(|w| w.iter().collect::<String>()));
    forms.push(secret.bytes().map(|b| format!("{b:02x}")).collect());
    forms.push(base64(secret.as_bytes()));
    forms
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[test]
fn operator_walkthrough_never_leaks_the_provider_key() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path())
        .env("SLUICE_LOG", "trace")
        .start();
    let secret = canary("main");
    let rotated = canary("next");
    let mut seen = String::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let out = match stdin {
            Some(text) => cp.ctl_stdin(args, text),
            None => cp.ctl(args),
        };
        seen.push_str(&out.stdout);
        seen.push_str(&out.stderr);
        out
    };

    run(
        &["org", "create", "acme", "--display-name", "Acme Inc"],
        None,
    )
    .ok();
    run(&["project", "create", "acme/web"], None).ok();
    let provider = run(
        &[
            "-o",
            "json",
            "provider",
            "create",
            "acme/openai",
            "--type",
            "openai",
            "--base-url",
            "https://api.openai.com/v1",
        ],
        None,
    )
    .json();
    assert_eq!(provider["type"], "OPENAI");

    // The secret goes in on stdin only, and comes back as a fingerprint.
    let key = run(
        &["-o", "json", "provider-key", "add", "acme/openai/main"],
        Some(&secret),
    )
    .json();
    assert_eq!(key["state"], "ACTIVE");
    assert_eq!(
        key["last_four"],
        format!("…{}", &secret[secret.len() - 4..])
    );
    assert!(key["fingerprint"].as_str().unwrap().starts_with("v1:"));
    // An error path with the secret in flight must not echo it either.
    let refused = run(&["provider-key", "add", "acme/missing/main"], Some(&secret));
    assert!(refused.err().contains("NotFound"), "{}", refused.stderr);

    run(
        &[
            "model",
            "create",
            "acme/gpt-4o-mini",
            "--deployment",
            "openai:gpt-4o-mini-2024-07-18",
            "--input-price",
            "150000",
            "--output-price",
            "600000",
            "--context-window",
            "128000",
        ],
        None,
    )
    .ok();

    // A project goes LIVE only when its models have keys.
    run(
        &[
            "project",
            "update",
            "acme/web",
            "--default-model",
            "gpt-4o-mini",
        ],
        None,
    )
    .ok();
    let vkey = run(
        &[
            "-o",
            "json",
            "vkey",
            "create",
            "acme/web/ci",
            "--models",
            "gpt-4o-mini",
        ],
        None,
    )
    .json();
    let virtual_key = vkey["key"].as_str().unwrap().to_owned();
    assert!(virtual_key.starts_with("sk-sluice-") && virtual_key.len() >= "sk-sluice-".len() + 32);
    assert!(virtual_key.starts_with(vkey["prefix"].as_str().unwrap()));
    let listed = run(&["-o", "json", "vkey", "list", "acme/web"], None).json();
    assert!(
        !listed.to_string().contains(&virtual_key),
        "a key is shown once only"
    );

    let live = run(
        &["-o", "json", "project", "set-posture", "acme/web", "live"],
        None,
    )
    .json();
    assert_eq!(live["posture"], "LIVE");

    // Rotation: the old key retires, the new one is active; then revoke and delete the old.
    let rotation = run(
        &[
            "-o",
            "json",
            "provider-key",
            "rotate",
            "acme/openai/main",
            "--new-name",
            "next",
        ],
        Some(&rotated),
    )
    .json();
    assert_eq!(rotation[0]["state"], "RETIRING");
    assert_eq!(rotation[1]["state"], "ACTIVE");
    run(&["provider-key", "revoke", "acme/openai/main"], None).ok();
    run(&["provider-key", "delete", "acme/openai/main"], None).ok();
    let keys = run(&["provider-key", "list", "acme"], None).ok().to_owned();
    assert!(keys.contains("next") && !keys.contains(" main "), "{keys}");

    // With every key of the default model revoked, LIVE is refused again.
    run(&["project", "set-posture", "acme/web", "mock"], None).ok();
    run(&["provider-key", "revoke", "acme/openai/next"], None).ok();
    let refused = run(&["project", "set-posture", "acme/web", "live"], None);
    assert!(
        refused.err().contains("no usable provider key"),
        "{}",
        refused.stderr
    );
    // The same blocker, with its fix, before trying.
    let blockers = run(&["-o", "json", "project", "readiness", "acme/web"], None).json();
    assert_eq!(blockers[0]["code"], "no_usable_key", "{blockers}");
    assert!(
        blockers[0]["fix"]
            .as_str()
            .unwrap()
            .contains("provider-key add acme/openai/"),
        "{blockers}"
    );

    let audit = run(&["-o", "json", "audit", "list", "--limit", "1000"], None).json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "provider_key.create",
        "provider_key.rotate",
        "provider_key.revoke",
        "project.set_posture",
        "virtual_key.create",
    ] {
        assert!(
            actions.contains(&action),
            "audit lacks {action}: {actions:?}"
        );
    }
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "bootstrap" || e["actor"] == "system")
    );
    run(&["-o", "json", "vault", "status"], None).ok();

    let logs = cp.stop().text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs ran at trace level"
    );
    let files = files_under(dir.path());
    assert!(files.iter().any(|(path, _)| path.ends_with("sluice.db")));

    for canary in [&secret, &rotated] {
        for form in leak_forms(canary) {
            assert!(!seen.contains(&form), "CLI output leaks '{form}'");
            assert!(!logs.contains(&form), "logs leak '{form}'");
            for (path, bytes) in &files {
                assert!(
                    !contains_bytes(bytes, form.as_bytes()),
                    "{} leaks '{form}'",
                    path.display()
                );
            }
        }
    }
    // The virtual key and the admin token are shown once by design, but never logged or stored.
    for credential in [&virtual_key, &cp_token(dir.path())] {
        assert!(
            !logs.contains(credential.as_str()),
            "logs leak a credential"
        );
        for (path, bytes) in files
            .iter()
            .filter(|(path, _)| !path.ends_with("admin-token"))
        {
            assert!(
                !contains_bytes(bytes, credential.as_bytes()),
                "{} stores a credential",
                path.display()
            );
        }
    }
}

fn cp_token(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn user_mistakes_get_precise_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    cp.ctl(&["org", "create", "acme"]).ok();
    assert!(
        cp.ctl(&["org", "create", "acme"])
            .err()
            .contains("AlreadyExists")
    );
    assert!(cp.ctl(&["org", "get", "nope"]).err().contains("NotFound"));
    let bad_name = cp.ctl(&["org", "create", "bad name"]);
    assert!(
        bad_name.err().contains("InvalidArgument") && bad_name.stderr.contains("name"),
        "{}",
        bad_name.stderr
    );
    for url in [
        "http://169.254.169.254",
        "https://user:pw@api.example.com",
        "file:///etc/passwd",
        "https://10.0.0.1",
    ] {
        let out = cp.ctl(&[
            "provider",
            "create",
            "acme/p",
            "--type",
            "openai",
            "--base-url",
            url,
        ]);
        assert!(
            out.err().contains("InvalidArgument") && out.stderr.contains("base_url"),
            "{url}: {}",
            out.stderr
        );
    }
    cp.ctl(&[
        "provider",
        "create",
        "acme/local",
        "--type",
        "vllm",
        "--base-url",
        "http://127.0.0.1:8000/v1",
        "--allow-private-network",
    ])
    .ok();
    let empty = cp.ctl_stdin(&["provider-key", "add", "acme/local/k"], "");
    assert!(
        empty.err().contains("no provider key on stdin"),
        "{}",
        empty.stderr
    );
    let auth_header = cp.ctl(&[
        "provider",
        "create",
        "acme/h",
        "--type",
        "custom",
        "--base-url",
        "https://x.example.com",
        "--header",
        "Authorization=Bearer x",
    ]);
    assert!(
        auth_header.err().contains("extra_headers"),
        "{}",
        auth_header.stderr
    );
    cp.ctl(&["project", "create", "acme/web"]).ok();
    let no_models = cp.ctl(&["project", "set-posture", "acme/web", "live"]);
    assert!(
        no_models.err().contains("FailedPrecondition"),
        "{}",
        no_models.stderr
    );
    let in_use = cp.ctl(&["org", "delete", "acme"]);
    assert!(
        in_use.err().contains("FailedPrecondition"),
        "{}",
        in_use.stderr
    );
    let unknown_model = cp.ctl(&["vkey", "create", "acme/web/k", "--models", "ghost"]);
    assert!(
        unknown_model.err().contains("NotFound"),
        "{}",
        unknown_model.stderr
    );
}

/// Upstream model names may hold colons (OpenAI fine-tunes, `llama3:8b`): `--deployment` takes
/// everything after the provider's colon as the model, with weight and priority as options;
/// the listing shows them the same way, and traffic reaches the upstream under that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_model_names_with_colons_reach_the_upstream() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = sluice_e2e::live_stack("sk-colon-names");
    cp.ctl(&[
        "model",
        "create",
        "acme/tuned",
        "--deployment",
        "openai:ft:gpt-4o-mini:acme:7p1x,weight=2",
        "--deployment",
        "openai:llama3:8b,priority=1",
    ])
    .ok();
    let listed = cp.ctl(&["-o", "json", "model", "list", "acme"]).json();
    let tuned = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tuned")
        .cloned()
        .unwrap();
    assert_eq!(
        tuned["deployments"],
        serde_json::json!([
            "openai:ft:gpt-4o-mini:acme:7p1x,weight=2,priority=0",
            "openai:llama3:8b,weight=1,priority=1"
        ]),
        "{tuned}"
    );
    for bad in [
        "openai",
        ":gpt",
        "openai:",
        "openai:m,weight=x",
        "openai:m,colour=3",
    ] {
        let refused = cp.ctl(&["model", "create", "acme/bad", "--deployment", bad]);
        assert!(!refused.success, "{bad} was accepted");
    }
    let (_proxy_dir, proxy, http) = sluice_e2e::caught_up_proxy(&cp, &acme.token).await;
    let answer = http
        .post(
            &proxy.url("/v1/chat/completions"),
            Some(&acme.key),
            &serde_json::json!({"model": "tuned", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let sent = upstream.requests().last().cloned().unwrap();
    assert_eq!(sent.body["model"], "ft:gpt-4o-mini:acme:7p1x");
}
