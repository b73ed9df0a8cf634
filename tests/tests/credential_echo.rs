//! An upstream that echoes the provider key it was sent — in error bodies, in every header a
//! gateway might pass on, in the messages Sluice quotes, mid-stream — must not hand the key to
//! whoever holds a virtual key. One canary key per family (OpenAI, Azure OpenAI, Anthropic,
//! Google); every endpoint each family serves, whole and streamed, for each status class; both
//! processes logging at trace level. The canary, as sent, in base64 and in hex, appears in no
//! client response (status, headers, body), no log line, no metric, no file of either data
//! directory, and no `sluicectl` output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_e2e::mock_openai::echoed_forms;
use sluice_e2e::proxy::{Http, HttpResponse, ProxyBuilder};
use sluice_e2e::{Leftovers, live_stack_with};

const STATUSES: &[&str] = &[
    "200",
    "400",
    "401",
    "403",
    "404",
    "422",
    "429",
    "500",
    "503",
    "midstream",
];

struct Family {
    provider: &'static str,
    kind: &'static str,
    key: String,
}

/// One request to the proxy: the endpoint, the body, and how the virtual key travels.
struct Call {
    path: String,
    body: Value,
    key_header: &'static str,
}

fn calls(family: &str, model: &str) -> Vec<Call> {
    let chat = |stream: bool| Call {
        path: "/v1/chat/completions".into(),
        body: json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]}),
        key_header: "authorization",
    };
    let mut calls = vec![chat(false), chat(true)];
    match family {
        "openai" | "azure" => {
            calls.push(Call {
                path: "/v1/embeddings".into(),
                body: json!({"model": model, "input": "hi"}),
                key_header: "authorization",
            });
            if family == "openai" {
                for stream in [false, true] {
                    calls.push(Call {
                        path: "/v1/responses".into(),
                        body: json!({"model": model, "input": "hi", "stream": stream}),
                        key_header: "authorization",
                    });
                }
            }
        }
        "anthropic" => {
            for stream in [false, true] {
                calls.push(Call {
                    path: "/v1/messages".into(),
                    body: json!({"model": model, "max_tokens": 16, "stream": stream,
                                 "messages": [{"role": "user", "content": "hi"}]}),
                    key_header: "x-api-key",
                });
            }
        }
        "google" => {
            let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
            for method in ["generateContent", "streamGenerateContent?alt=sse"] {
                calls.push(Call {
                    path: format!("/v1beta/models/{model}:{method}"),
                    body: contents.clone(),
                    key_header: "x-goog-api-key",
                });
            }
        }
        _ => unreachable!(),
    }
    calls
}

fn transcript(response: &HttpResponse) -> String {
    let mut text = format!("{}\n", response.status);
    for (name, value) in &response.headers {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str(&response.text());
    text.push('\n');
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_provider_key_never_leaves_the_gateway() {
    let pid = std::process::id();
    let families = [
        Family {
            provider: "openai",
            kind: "openai",
            key: format!("sk-canary-openai-{pid:x}-0a1b2c3d4e"),
        },
        Family {
            provider: "azure",
            kind: "azure-openai",
            key: format!("azure-canary-{pid:x}-5f6a7b8c9d"),
        },
        Family {
            provider: "anthropic",
            kind: "anthropic",
            key: format!("sk-ant-canary-{pid:x}-e0f1a2b3c4"),
        },
        Family {
            provider: "google",
            kind: "google",
            key: format!("AIzaCanary{pid:x}d5e6f7a8b9"),
        },
    ];
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack_with(&families[0].key, &[], &[("SLUICE_LOG", "trace")]);
    let base = format!("http://{}", upstream.addr);
    for family in &families[1..] {
        let provider = format!("acme/{}", family.provider);
        let mut create = vec![
            "provider",
            "create",
            &provider,
            "--type",
            family.kind,
            "--base-url",
            &base,
            "--allow-private-network",
        ];
        if family.kind == "azure-openai" {
            create.extend(["--api-version", "2024-10-21"]);
        }
        cp.ctl(&create).ok();
        cp.ctl_stdin(
            &["provider-key", "add", &format!("{provider}/main")],
            &family.key,
        )
        .ok();
    }
    for family in &families {
        for status in STATUSES {
            cp.ctl(&[
                "model",
                "create",
                &format!("acme/{}-echo-{status}", family.provider),
                "--deployment",
                &format!("{}:echo-{status}", family.provider),
            ])
            .ok();
        }
    }
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token)
        .env("SLUICE_PROXY_LOG", "trace")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;

    let mut seen = String::new();
    let mut answered = 0;
    for family in &families {
        for status in STATUSES {
            let model = format!("{}-echo-{status}", family.provider);
            for call in calls(family.provider, &model) {
                let auth = if call.key_header == "authorization" {
                    format!("Bearer {}", acme.key)
                } else {
                    acme.key.clone()
                };
                let response = http
                    .send(
                        "POST",
                        &proxy.url(&call.path),
                        None,
                        &[(call.key_header, &auth)],
                        Bytes::from(call.body.to_string()),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{model} {}: {e}", call.path));
                answered += 1;
                seen.push_str(&transcript(&response));
            }
        }
        // The key check reads the upstream's message for the operator.
        for status in ["401", "400", "500"] {
            let checked = cp.ctl(&[
                "provider-key",
                "test",
                &format!("acme/{}/main", family.provider),
                "--model",
                &format!("echo-{status}"),
            ]);
            seen.push_str(&checked.stdout);
            seen.push_str(&checked.stderr);
        }
    }
    assert!(answered > 100, "only {answered} calls");
    let echoed = upstream
        .requests()
        .iter()
        .filter(|r| {
            r.body["model"]
                .as_str()
                .is_some_and(|m| m.starts_with("echo-"))
                || r.path.contains("echo-")
        })
        .count();
    assert!(
        echoed > 100,
        "the echoing upstream was called {echoed} times"
    );
    // The upstream did echo: the key reached it, and came back in what it sent.
    assert!(
        seen.contains("[redacted]"),
        "nothing was scrubbed, so nothing was echoed:\n{seen}"
    );

    seen.push_str(&http.get(&proxy.url("/metrics"), None).await.unwrap().text());
    seen.push_str(&http.get(&proxy.url("/readyz"), None).await.unwrap().text());
    let cp_metrics = http
        .get(&format!("{}/metrics", cp.url()), None)
        .await
        .unwrap();
    assert_eq!(cp_metrics.status, 200, "{}", cp_metrics.text());
    seen.push_str(&cp_metrics.text());
    for args in [
        vec!["provider-key", "list", "acme"],
        vec!["-o", "json", "provider-key", "list", "acme"],
        vec!["-o", "json", "provider", "list", "acme"],
        vec!["usage", "acme", "--by", "model"],
        vec!["fleet"],
    ] {
        let out = cp.ctl(&args);
        seen.push_str(&out.stdout);
        seen.push_str(&out.stderr);
    }
    let left = Leftovers::of(proxy, cp, proxy_dir.path(), cp_dir.path()).await;
    for family in &families {
        for form in echoed_forms(&family.key) {
            if let Some(at) = seen.find(&form) {
                let from = seen[..at].rfind("\n\n").unwrap_or(0);
                panic!(
                    "the {} key ({form}) leaks in a response or sluicectl output:\n{}",
                    family.provider,
                    &seen[from..(at + 400).min(seen.len())]
                );
            }
            left.assert_nowhere(&form, &format!("{} key", family.provider));
        }
    }
}
