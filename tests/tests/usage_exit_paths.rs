//! Metering that cannot be forgotten: every request that reached an upstream leaves exactly
//! one usage record, whatever way it ends — whole or streamed, translated or passed through;
//! success, a 5xx, a body cut off after its 200, a body that stalls after its headers, a
//! stream gone idle, a client that hangs up mid-stream or leaves before the answer, an answer
//! without a usage block — and
//! the record says honestly where its numbers came from: a missing usage block is
//! `ESTIMATED`, never a zero `PROVIDER_REPORTED`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;
use sluice_e2e::live_stack_with;
use sluice_e2e::proxy::{Http, ProxyBuilder};

/// How the client takes the answer.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// Reads it to the end (or to its error).
    Reads,
    /// Hangs up after the first chunk of a stream.
    HangsUp,
    /// Gives up before the answer's headers arrive.
    LeavesEarly,
}

struct Row {
    name: &'static str,
    model: &'static str,
    stream: bool,
    client: Client,
    recorded_status: u32,
    source: &'static str,
    /// Whether the record must count tokens (an estimate counts the prompt at least).
    counts_tokens: bool,
}

const fn row(
    name: &'static str,
    model: &'static str,
    stream: bool,
    recorded_status: u32,
    source: &'static str,
    counts_tokens: bool,
) -> Row {
    Row {
        name,
        model,
        stream,
        client: Client::Reads,
        recorded_status,
        source,
        counts_tokens,
    }
}

const ROWS: &[Row] = &[
    row(
        "whole, success",
        "gpt-4o-mini",
        false,
        200,
        "PROVIDER_REPORTED",
        true,
    ),
    row(
        "stream, success",
        "gpt-4o-mini",
        true,
        200,
        "PROVIDER_REPORTED",
        true,
    ),
    row("whole, 5xx", "fail-500", false, 502, "ESTIMATED", false),
    row("stream, 5xx", "fail-500", true, 502, "ESTIMATED", false),
    row(
        "whole, body cut after 200",
        "cut-body",
        false,
        502,
        "ESTIMATED",
        true,
    ),
    row(
        "stream, body cut after 200",
        "cut-stream",
        true,
        502,
        "ESTIMATED",
        true,
    ),
    row(
        "whole, body stalls after headers",
        "stall-body",
        false,
        504,
        "ESTIMATED",
        true,
    ),
    row(
        "stream, idle timeout",
        "stall",
        true,
        504,
        "ESTIMATED",
        true,
    ),
    Row {
        client: Client::HangsUp,
        ..row(
            "stream, client gone",
            "hang-up",
            true,
            200,
            "ESTIMATED",
            true,
        )
    },
    Row {
        client: Client::LeavesEarly,
        ..row(
            "whole, client gone before the answer",
            "slow",
            false,
            499,
            "ESTIMATED",
            true,
        )
    },
    row(
        "whole, no usage block",
        "no-usage",
        false,
        200,
        "ESTIMATED",
        true,
    ),
    row(
        "stream, no usage block",
        "no-usage",
        true,
        200,
        "ESTIMATED",
        true,
    ),
    row(
        "translated whole, success",
        "claude",
        false,
        200,
        "PROVIDER_REPORTED",
        true,
    ),
    row(
        "translated whole, no usage block",
        "claude-quiet",
        false,
        200,
        "ESTIMATED",
        true,
    ),
    row(
        "translated stream, success",
        "claude",
        true,
        200,
        "PROVIDER_REPORTED",
        true,
    ),
    row(
        "translated stream, no usage block",
        "claude-quiet",
        true,
        200,
        "ESTIMATED",
        true,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_path_leaves_exactly_one_honest_usage_record() {
    let sluice_e2e::LiveStack {
        upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack_with("sk-exit-paths", &["--timeout-ms", "1000"], &[]);
    for model in [
        "slow",
        "fail-500",
        "cut-body",
        "cut-stream",
        "stall-body",
        "stall",
        "no-usage",
    ] {
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{model}"),
            "--deployment",
            &format!("openai:{model}"),
        ])
        .ok();
    }
    // The mock streams slowly enough for a client to hang up mid-way.
    cp.ctl(&[
        "model",
        "create",
        "acme/hang-up",
        "--deployment",
        "openai:gpt-4o-mini",
    ])
    .ok();
    cp.add_provider_model(
        "acme/anthropic",
        "anthropic",
        &format!("http://{}", upstream.addr),
        &[("main", "sk-ant-exit-paths")],
        "acme/claude",
        "claude-sonnet-4-5",
    );
    cp.ctl(&[
        "model",
        "create",
        "acme/claude-quiet",
        "--deployment",
        "anthropic:no-usage",
    ])
    .ok();
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let url = proxy.url("/v1/chat/completions");

    // Each request says which row it is, so its record is found even when the answer broke
    // off before any header reached the client.
    for (n, row) in ROWS.iter().enumerate() {
        let body = json!({"model": row.model, "stream": row.stream, "max_tokens": 64,
                          "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "count these words please"}]});
        let run = format!("row-{n}");
        // A connection of its own: some of these answers break theirs.
        let client = Http::new();
        let run_header = [("x-sluice-run-id", run.as_str())];
        let sending = client.post_head_with(&url, &acme.key, &run_header, &body);
        if let Client::LeavesEarly = row.client {
            // Dropping the call closes its connection while the proxy waits on the upstream.
            let _ = tokio::time::timeout(Duration::from_millis(300), sending).await;
            continue;
        }
        let sent = sending.await;
        let Ok(response) = sent else {
            continue;
        };
        let mut answer = response.into_body();
        match row.client {
            Client::Reads => {
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout(Duration::from_secs(10), answer.frame()).await
                {
                }
            }
            Client::HangsUp => {
                let _ = answer.frame().await;
                drop(answer);
            }
            Client::LeavesEarly => {}
        }
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for (n, row) in ROWS.iter().enumerate() {
        let run = format!("row-{n}");
        let records = loop {
            let records: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT source, http_status, input_tokens, output_tokens FROM usage_records WHERE run_id = $1",
            )
            .bind(&run)
            .fetch_all(&sluice_e2e::usage_rows(&pool).await)
            .await
            .unwrap();
            if !records.is_empty() || std::time::Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let [record] = records.as_slice() else {
            panic!("{}: {} records: {records:?}", row.name, records.len());
        };
        let (source, status, input, output) = record.clone();
        assert_eq!(source, row.source, "{}: {record:?}", row.name);
        assert_eq!(
            status,
            i64::from(row.recorded_status),
            "{}: {record:?}",
            row.name
        );
        assert_eq!(
            input + output > 0,
            row.counts_tokens,
            "{}: {record:?}",
            row.name
        );
    }
    // Exactly one each, once everything has settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
        .fetch_one(&sluice_e2e::usage_rows(&pool).await)
        .await
        .unwrap();
    assert_eq!(
        all as usize,
        ROWS.len(),
        "a request left more than one record"
    );
}
