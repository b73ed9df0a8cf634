//! What SREs scrape: `promtool check metrics` passes on both processes' `/metrics` (the
//! proxy's with OpenTelemetry export on, so its exporter's counters are in it), and a real
//! Prometheus (Debian's `prometheus`, which `.ci/test` installs) scrapes both and answers a
//! query over what it scraped — every panel of the shipped dashboard among them — and the
//! shipped alert rules pass `promtool check rules` and their unit tests. Asked for OpenMetrics
//! (as Prometheus asks), the proxy answers in it, its latency buckets carrying exemplars: the
//! trace ids of sampled requests, which Prometheus stores and the test finds at the collector.
//! A project counted by key shows each key's requests, tokens and cost, until turned off; the
//! control plane shows each budget's limit, spend and leases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use serde_json::json;
use sluice_e2e::otlp_receiver::OtlpReceiver;
use sluice_e2e::{caught_up_proxy_with, live_stack_with};

/// `promtool check metrics` on `text`: its complaints, or `None` when it has none.
fn promtool_check(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !said.trim().is_empty()).then_some(said)
}

/// The metric names a PromQL expression reads (Sluice's and the GenAI ones): its words
/// outside label matchers `{…}` and grouping lists `by (…)`, which name labels.
fn metric_names(expression: &str) -> Vec<String> {
    let mut kept = String::new();
    let mut rest = expression;
    while let Some(at) = rest.find(['{', 'b']) {
        let (before, from) = rest.split_at(at);
        kept.push_str(before);
        let close = if from.starts_with('{') {
            '}'
        } else if from.starts_with("by (")
            && !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        {
            ')'
        } else {
            kept.push('b');
            rest = &from[1..];
            continue;
        };
        kept.push(' ');
        rest = from.find(close).map_or("", |end| &from[end + 1..]);
    }
    kept.push_str(rest);
    kept.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("sluice_") || word.starts_with("gen_ai_"))
        .map(str::to_owned)
        .collect()
}

/// The alert rules in `deploy/observability`: `promtool check rules`, their unit tests
/// (`promtool test rules`), and every metric they name is one the processes expose.
fn shipped_rules_check_out_on_what_is_exposed(exposed: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    for args in [
        ["check", "rules", "sluice-alerts.yml"],
        ["test", "rules", "sluice-alerts.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rules = std::fs::read_to_string(dir.join("sluice-alerts.yml")).unwrap();
    let named: std::collections::BTreeSet<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:").or(Some(line)))
        .flat_map(metric_names)
        .collect();
    assert!(named.len() >= 8, "{named:?}");
    for metric in named {
        assert!(
            exposed.contains(&format!("\n{metric}")) || exposed.contains(&format!("\n{metric}{{")),
            "the rules name {metric}, which neither process exposes"
        );
    }
}

/// Two answers of `gpt-4o-mini` through provider `openai` (one streamed) and a request for an
/// unknown model, as the proxy's own series and the GenAI ones count them.
fn requests_show_by_model_and_provider(metrics: &str) {
    let served = "model=\"gpt-4o-mini\",provider=\"openai\"";
    let gen_ai = "gen_ai_operation_name=\"chat\",gen_ai_request_model=\"gpt-4o-mini\",gen_ai_provider_name=\"openai\",sluice_provider=\"openai\"";
    for line in [
        format!("sluice_responses_total{{endpoint=\"/v1/chat/completions\",{served},status=\"200\",code=\"\"}} 2"),
        "sluice_responses_total{endpoint=\"/v1/chat/completions\",model=\"\",provider=\"\",status=\"404\",code=\"unsupported_model\"} 1".to_owned(),
        format!("gen_ai_client_operation_duration_seconds_count{{{gen_ai}}} 2"),
        format!("gen_ai_client_operation_time_to_first_chunk_seconds_count{{{gen_ai}}} 1"),
        format!("gen_ai_client_token_usage_count{{{gen_ai},gen_ai_token_type=\"output\"}} 2"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} is not among:\n{metrics}"
        );
    }
    let gaps = format!("gen_ai_client_operation_time_per_output_chunk_seconds_count{{{gen_ai}}} ");
    let gaps: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&gaps))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time per chunk:\n{metrics}"));
    assert!(gaps >= 1, "the stream came in chunks: {gaps}");
    let tokens = format!(
        "sluice_tokens_total{{operation=\"chat\",{served},type=\"input\",source=\"provider_reported\"}} "
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&tokens)),
        "{tokens} is not among:\n{metrics}"
    );
    assert!(metrics.contains("sluice_cost_micros_total{operation=\"chat\","));
    assert!(metrics.contains("\nsluice_config_versions_behind 0\n"));
    assert!(metrics.contains("\nsluice_usage_spool_files "));
}

/// The control plane's own series: the proxy's config stream and its ACK, the admin calls the
/// test stack made, the usage it committed.
fn control_plane_shows_its_rpcs_fleet_and_usage(metrics: &str) {
    let budget = r#"{budget="acme/web (month)",scope="project",posture="hard"}"#;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("sluice_budget_limit_micros{budget} 100000000")),
        "{metrics}"
    );
    for gauge in [
        "sluice_budget_spent_micros",
        "sluice_budget_estimated_micros",
        "sluice_budget_leased_micros",
        "sluice_budget_leases",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{gauge}{budget} "))),
            "{gauge} for the budget is not in:\n{metrics}"
        );
    }
    for line in [
        "sluice_cp_rpcs_total{method=\"/sluice.config.v1.ConfigService/StreamConfig\",code=\"OK\"} 1",
        "sluice_fleet_proxies{state=\"current\"} 1",
        "sluice_fleet_proxies{state=\"behind\"} 0",
        "sluice_usage_records_committed_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} is not among:\n{metrics}"
        );
    }
    for prefix in [
        "sluice_config_push_seconds_count{reply=\"ack\"} ",
        "sluice_usage_commit_seconds_count ",
        "sluice_cp_rpc_duration_seconds_count{method=\"/sluice.admin.v1.AdminService/CreateModel\"} ",
    ] {
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}in:\n{metrics}"));
        assert!(count >= 1, "{prefix}{count}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_passes_and_a_real_prometheus_scrapes_both_processes() {
    let receiver = OtlpReceiver::start().await;
    let stack = live_stack_with(
        "sk-prometheus-test-key",
        &[],
        &[("SLUICE_BUDGET_METRICS_INTERVAL_MS", "200")],
    );
    // An operator asks for acme/web's keys to be counted apart.
    stack
        .cp
        .ctl(&["project", "update", "acme/web", "--metrics-by-key", "true"])
        .ok();
    // A HARD budget: its limit, spend and leases show on the control plane.
    stack
        .cp
        .ctl(&[
            "budget",
            "create",
            "acme/web",
            "--period",
            "month",
            "--limit-usd",
            "100",
            "--posture",
            "hard",
        ])
        .ok();
    let (_dir, proxy, http) = caught_up_proxy_with(
        &stack.cp,
        &stack.acme.token,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url)],
    )
    .await;
    let answer = http
        .post(
            &proxy.url("/v1/chat/completions"),
            Some(&stack.acme.key),
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let (status, frames) = http
        .post_streaming(
            &proxy.url("/v1/chat/completions"),
            &stack.acme.key,
            &json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(frames.len() > 1);
    let unknown = http
        .post(
            &proxy.url("/v1/chat/completions"),
            Some(&stack.acme.key),
            &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let proxy_metrics = http.get(&proxy.url("/metrics"), None).await.unwrap().text();
    let open = http
        .send(
            "GET",
            &proxy.url("/metrics"),
            None,
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert!(
        open.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = open.text();
    assert!(open.ends_with("\n# EOF\n"), "{open}");
    assert!(
        open.contains("\n# TYPE sluice_responses counter\n"),
        "{open}"
    );
    assert!(
        open.lines().any(
            |l| l.starts_with("gen_ai_client_operation_duration_seconds_bucket{")
                && l.contains(" # {trace_id=\"")
        ),
        "{open}"
    );
    assert!(proxy_metrics.contains("sluice_otel_spans_exported_total"));
    requests_show_by_model_and_provider(&proxy_metrics);
    let by_key = |metrics: &str, family: &str, tail: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{family}{{project=\"web\",project_id=\""))
                    && l.contains(tail)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!(
        by_key(
            &proxy_metrics,
            "sluice_key_requests_total",
            "status=\"2xx\"}"
        ),
        Some(2),
        "{proxy_metrics}"
    );
    assert!(by_key(&proxy_metrics, "sluice_key_tokens_total", "type=\"input\"}").unwrap() > 0);
    assert!(by_key(&proxy_metrics, "sluice_key_cost_micros_total", "}").unwrap() > 0);
    // The proxy's usage reaches the control plane, and its metrics say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cp_metrics = loop {
        let text = http
            .get(&format!("{}/metrics", stack.cp.url()), None)
            .await
            .unwrap()
            .text();
        let budget_spent = text.lines().any(|line| {
            line.strip_prefix(
                "sluice_budget_spent_micros{budget=\"acme/web (month)\",scope=\"project\",posture=\"hard\"} ",
            )
            .and_then(|value| value.parse::<i64>().ok())
            .is_some_and(|spent| spent > 0)
        });
        if (text.contains("\nsluice_usage_records_committed_total 2\n") && budget_spent)
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    control_plane_shows_its_rpcs_fleet_and_usage(&cp_metrics);
    for (name, text) in [("proxy", &proxy_metrics), ("control plane", &cp_metrics)] {
        if let Some(complaints) = promtool_check(text) {
            panic!("promtool on the {name}'s metrics:\n{complaints}\n{text}");
        }
    }
    shipped_rules_check_out_on_what_is_exposed(&format!("{proxy_metrics}{cp_metrics}"));
    // No secret is a label or a value anywhere.
    for secret in [
        "sk-prometheus-test-key",
        stack.acme.key.as_str(),
        stack.acme.token.as_str(),
        stack.cp.admin_token.as_str(),
    ] {
        assert!(
            !proxy_metrics.contains(secret) && !cp_metrics.contains(secret),
            "{secret} is in a /metrics page"
        );
    }

    // A real Prometheus, scraping both every second.
    let dir = tempfile::tempdir().unwrap();
    let target = |url: &str| url.trim_start_matches("http://").to_owned();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: proxy\n    static_configs:\n      - targets: ['{}']\n  - job_name: control-plane\n    static_configs:\n      - targets: ['{}']\n",
        target(&proxy.url("")),
        target(&stack.cp.url()),
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prometheus (Debian's prometheus package; .ci/test installs it)");
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = |expression: &str| format!("{api}/query?query={expression}");
    let scraped = loop {
        // Starting, Prometheus answers 503 in plain text.
        let up = http
            .get(&query("up"), None)
            .await
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.json());
        let healthy = up
            .as_ref()
            .and_then(|body| body["data"]["result"].as_array().cloned())
            .map(|series| series.iter().filter(|s| s["value"][1] == "1").count())
            .unwrap_or(0);
        if healthy == 2 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The proxy answered Prometheus in OpenMetrics, its latency buckets carrying the traces
    // of the sampled requests that fell in them.
    let exemplars = loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let answer = http
            .get(
                &format!(
                    "{api}/query_exemplars?query=gen_ai_client_operation_duration_seconds_bucket&start={}&end={}",
                    now - 600,
                    now + 60
                ),
                None,
            )
            .await
            .ok()
            .map(|r| r.json());
        let found: Vec<String> = answer
            .iter()
            .flat_map(|body| body["data"].as_array().cloned().unwrap_or_default())
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|exemplar| exemplar["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect();
        if !found.is_empty() || !scraped || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let traced: Vec<String> = receiver
        .spans()
        .iter()
        .map(|(_, span)| hex::encode(&span.trace_id))
        .collect();
    assert!(
        !exemplars.is_empty() && exemplars.iter().all(|id| traced.contains(id)),
        "exemplars {exemplars:?} name traces the collector received: {traced:?}"
    );
    // Every panel of the shipped dashboard is a query this Prometheus runs over what it
    // scraped, on metrics the processes expose.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/observability/sluice-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exposed = format!("{proxy_metrics}{cp_metrics}");
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"]
                .as_str()
                .unwrap()
                .replace("$proxy_job", "proxy");
            let answer = http
                .get(&query(&sluice_e2e::percent_encoded(&expression)), None)
                .await
                .unwrap();
            assert_eq!(
                answer.json()["status"],
                "success",
                "panel {}: {expression}: {}",
                panel["title"],
                answer.text()
            );
            for metric in metric_names(&expression) {
                assert!(
                    exposed.contains(&format!("\n{metric}")),
                    "panel {} names {metric}, which neither process exposes",
                    panel["title"]
                );
            }
        }
        panels += 1;
    }
    assert!(panels >= 15);
    let requests = http
        .get(&query("sluice_requests_total"), None)
        .await
        .map(|r| r.json());
    let batches = http
        .get(&query("sluice_usage_batches_committed_total"), None)
        .await
        .map(|r| r.json());
    let _ = prometheus.kill();
    let output = prometheus.wait_with_output().unwrap();
    assert!(
        scraped,
        "Prometheus never had both targets up:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = requests.unwrap();
    assert_eq!(
        requests["data"]["result"][0]["value"][1], "3",
        "the proxy's request counter, as Prometheus scraped it: {requests}"
    );
    assert_eq!(
        batches.unwrap()["data"]["result"][0]["metric"]["job"],
        "control-plane"
    );
    // Turned off, the keys' series leave the proxy's page.
    stack
        .cp
        .ctl(&["project", "update", "acme/web", "--metrics-by-key", "false"])
        .ok();
    proxy
        .wait_for_version(&http, stack.cp.config_version())
        .await;
    let after = http.get(&proxy.url("/metrics"), None).await.unwrap().text();
    assert!(!after.contains("sluice_key_"), "{after}");
}
