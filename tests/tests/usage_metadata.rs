//! Request metadata: `x-sluice-run-id`, `x-sluice-task-id` and `x-sluice-tag-*` land on the
//! usage record (so an operator can find every call of a run), never reach the upstream, and
//! are refused with a 400 naming the header when they break a bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use sluice_e2e::live_stack;
use sluice_e2e::proxy::{Http, ProxyBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_task_and_tags_are_stored_and_bounded() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack("sk-metadata");
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;

    let url = proxy.url("/v1/chat/completions");
    let body = Bytes::from(
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    let tagged = [
        ("x-sluice-run-id", "nightly-eval-2026-11-24"),
        ("x-sluice-task-id", "case-0042"),
        ("x-sluice-tag-team", "search"),
        ("x-sluice-tag-env", "staging"),
    ];
    for stream in [false, true] {
        let body = if stream {
            Bytes::from(
                json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )
        } else {
            body.clone()
        };
        let response = http
            .send("POST", &url, Some(&acme.key), &tagged, body)
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    for request in upstream.requests() {
        assert!(
            request
                .headers
                .keys()
                .all(|name| !name.as_str().starts_with("x-sluice-")),
            "metadata went upstream: {:?}",
            request.headers
        );
    }

    let long = "r".repeat(129);
    for (headers, named) in [
        (vec![("x-sluice-run-id", long.as_str())], "x-sluice-run-id"),
        (vec![("x-sluice-tag-bad!name", "x")], "tag name"),
        (
            vec![("x-sluice-tag-team", "a"), ("x-sluice-tag-team", "b")],
            "twice",
        ),
    ] {
        let response = http
            .send("POST", &url, Some(&acme.key), &headers, body.clone())
            .await
            .unwrap();
        assert_eq!(response.status, 400, "{}", response.text());
        let error = &response.json()["error"];
        assert_eq!(error["code"], "invalid_request");
        assert_eq!(error["next_action"], "fix");
        assert!(
            error["message"].as_str().unwrap().contains(named),
            "{error}"
        );
    }

    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows: Vec<(String, String, String)> = loop {
        let rows = sqlx::query_as(
            "SELECT run_id, task_id, tags FROM usage_records WHERE run_id = 'nightly-eval-2026-11-24'",
        )
        .fetch_all(&sluice_e2e::usage_rows(&pool).await)
        .await
        .unwrap_or_default();
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (run, task, tags) in rows {
        assert_eq!(run, "nightly-eval-2026-11-24");
        assert_eq!(task, "case-0042");
        let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
        assert_eq!(tags, json!({"team": "search", "env": "staging"}));
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
        .fetch_one(&sluice_e2e::usage_rows(&pool).await)
        .await
        .unwrap();
    assert_eq!(total, 2, "refused requests left usage records");

    // An operator finds every call of the run.
    let run = cp
        .ctl(&[
            "-o",
            "json",
            "usage",
            "acme",
            "--run-id",
            "nightly-eval-2026-11-24",
            "--by",
            "model,source",
        ])
        .json();
    let rows = run.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{run}");
    assert_eq!(rows[0]["model"], "gpt-4o-mini");
    assert_eq!(rows[0]["source"], "PROVIDER_REPORTED");
    assert_eq!(rows[0]["requests"], 2);
    // And each call of it, newest first.
    let calls = cp
        .ctl(&[
            "-o",
            "json",
            "usage",
            "acme",
            "--run-id",
            "nightly-eval-2026-11-24",
            "--calls",
        ])
        .json();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|call| call["task_id"] == "case-0042"));
    assert!(calls[0]["started_at"].as_str() >= calls[1]["started_at"].as_str());
}
