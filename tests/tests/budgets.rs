//! Budgets through the real binaries: created with `sluicectl budget`, their spend follows the
//! usage proxies deliver (estimates shown apart), and crossing a threshold raises an alert in
//! the audit log and the control plane's log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::live_stack;
use sluice_e2e::proxy::{Http, ProxyBuilder};

fn budget<'a>(list: &'a Value, target: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == target)
        .unwrap_or_else(|| panic!("no budget for {target} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_follow_delivered_spend_and_alert() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir: _cp_dir,
        cp,
        acme,
    } = live_stack("sk-budgets");
    // 2 × 435 µ$ will cross 80 % of a 0.001 $ project budget (SOFT: tracked and alerted;
    // HARD enforcement is budget_enforcement.rs).
    let created = cp
        .ctl(&[
            "-o",
            "json",
            "budget",
            "create",
            "acme/web",
            "--period",
            "month",
            "--limit-usd",
            "0.001",
            "--posture",
            "soft",
            "--alert",
            "80,50",
        ])
        .json();
    assert_eq!(created["spent_usd"], "0.000000");
    assert_eq!(created["alert_percents"], json!([50, 80]));
    cp.ctl(&[
        "budget",
        "create",
        "acme",
        "--period",
        "day",
        "--limit-usd",
        "25",
        "--posture",
        "soft",
    ])
    .ok();
    let refused = cp.ctl(&[
        "budget",
        "create",
        "acme/nope",
        "--period",
        "day",
        "--limit-usd",
        "1",
        "--posture",
        "soft",
    ]);
    assert!(refused.err().contains("not found"), "{}", refused.err());

    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    for _ in 0..2 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "usage:1000/500/200"}]});
        let response = http
            .post(&proxy.url("/v1/chat/completions"), Some(&acme.key), &body)
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let list = loop {
        let list = cp.ctl(&["-o", "json", "budget", "list", "acme"]).json();
        if budget(&list, "acme/web")["requests"] == 2 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let web = budget(&list, "acme/web");
    assert_eq!(web["spent_usd"], "0.000870", "{web}");
    assert_eq!(web["of_which_estimated_usd"], "0.000000");
    assert_eq!(web["used_percent"], "87.0");
    assert_eq!(web["period"], "month");
    assert_eq!(web["posture"], "soft");
    let org = budget(&list, "acme");
    assert_eq!(org["spent_usd"], "0.000870");
    assert_eq!(
        (org["period"].as_str(), org["posture"].as_str()),
        (Some("day"), Some("soft"))
    );

    let alerts = cp
        .ctl(&["-o", "json", "audit", "list", "--action", "budget.alert"])
        .json();
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0]["detail"]
            .as_str()
            .unwrap()
            .contains("80% reached"),
        "{alerts:?}"
    );
    assert!(cp.output.text().contains("budget alert"));
    let metrics = http
        .get(&format!("{}/metrics", cp.url()), None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("sluice_budget_alerts_total{posture=\"soft\"} 1"),
        "{}",
        metrics.text()
    );

    // Raising the limit and deleting.
    let raised = cp
        .ctl(&[
            "-o",
            "json",
            "budget",
            "update",
            "acme/web",
            "--period",
            "month",
            "--limit-usd",
            "1",
        ])
        .json();
    assert_eq!(raised["limit_usd"], "1.000000");
    cp.ctl(&["budget", "delete", "acme", "--period", "day"])
        .ok();
    let list = cp.ctl(&["-o", "json", "budget", "list", "acme"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}
