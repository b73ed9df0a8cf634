//! Cost: provider-reported tokens × the catalog's prices give exact integer micro-dollars
//! (cached input at its own price); a stream without usage is stored as `ESTIMATED`; `MOCK`
//! answers cost 0. Pricing follows the bundled catalog until an operator sets prices, which
//! `model sync-pricing` then keeps unless forced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{await_usage, live_stack};

#[derive(Debug, PartialEq, Eq)]
struct Stored {
    source: String,
    input_tokens: i64,
    cached_input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

async fn stored(pool: &sqlx::SqlitePool, request_id: &str) -> Stored {
    let (source, input_tokens, cached_input_tokens, output_tokens, cost_micros) = await_usage(
        pool,
        "source, input_tokens, cached_input_tokens, output_tokens, cost_micros",
        request_id,
    )
    .await;
    Stored {
        source,
        input_tokens,
        cached_input_tokens,
        output_tokens,
        cost_micros,
    }
}

fn chat(model: &str, stream: bool, content: &str) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]})
}

async fn ask(http: &Http, proxy: &Proxy, key: &str, body: Value) -> String {
    let response = http
        .post(&proxy.url("/v1/chat/completions"), Some(key), &body)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_follow_the_catalog_and_operator_prices() {
    let sluice_e2e::LiveStack {
        upstream: _upstream,
        cp_dir,
        cp,
        acme,
    } = live_stack("sk-costs");
    // Created without prices: the catalog's, and it says so.
    let model = cp
        .ctl(&["-o", "json", "model", "get", "acme/gpt-4o-mini"])
        .json();
    assert_eq!(model["input_price_micros_per_mtok"], 150_000);
    assert_eq!(model["cached_input_price_micros_per_mtok"], 75_000);
    assert_eq!(model["output_price_micros_per_mtok"], 600_000);
    assert_eq!(model["context_window"], 128_000);
    assert_eq!(model["price_source"], "catalog gpt-4o-mini");
    cp.ctl(&[
        "model",
        "create",
        "acme/quiet",
        "--deployment",
        "openai:no-usage",
        "--input-price",
        "1000000",
        "--output-price",
        "2000000",
    ])
    .ok();
    cp.ctl(&[
        "project",
        "create",
        "acme/sandbox",
        "--default-model",
        "gpt-4o-mini",
    ])
    .ok();
    let sandbox_key = cp.virtual_key("acme/sandbox/app", &[]);

    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let pool = sluice_e2e::store_of(cp_dir.path()).await;

    // 1 000 prompt tokens, 200 of them from the cache, 500 completion tokens:
    // 800 × 0.15 $/M + 200 × 0.075 $/M + 500 × 0.60 $/M = 120 + 15 + 300 = 435 µ$.
    let reported = ask(
        &http,
        &proxy,
        &acme.key,
        chat("gpt-4o-mini", false, "usage:1000/500/200"),
    )
    .await;
    assert_eq!(
        stored(&pool, &reported).await,
        Stored {
            source: "PROVIDER_REPORTED".into(),
            input_tokens: 1_000,
            cached_input_tokens: 200,
            output_tokens: 500,
            cost_micros: 435,
        }
    );
    // The same through a stream: the usage chunk counts the same.
    let streamed = ask(
        &http,
        &proxy,
        &acme.key,
        chat("gpt-4o-mini", true, "usage:1000/500/200"),
    )
    .await;
    assert_eq!(stored(&pool, &streamed).await.cost_micros, 435);

    // A stream whose upstream reports no usage: Sluice counts it, and says so.
    let estimated = ask(
        &http,
        &proxy,
        &acme.key,
        chat("quiet", true, "count me please"),
    )
    .await;
    let row = stored(&pool, &estimated).await;
    assert_eq!(row.source, "ESTIMATED");
    assert!(row.input_tokens > 0 && row.output_tokens > 0, "{row:?}");
    assert_eq!(
        row.cost_micros,
        // Whole tokens × whole dollars: no rounding.
        row.input_tokens + row.output_tokens * 2
    );

    // MOCK posture: tokens counted, nothing spent.
    let mocked = ask(&http, &proxy, &sandbox_key, chat("default", false, "hello")).await;
    let row = stored(&pool, &mocked).await;
    assert_eq!((row.source.as_str(), row.cost_micros), ("MOCK", 0));
    assert!(row.input_tokens > 0);

    // An operator's price is kept by a sync, and replaced only when forced.
    cp.ctl(&["model", "update", "acme/gpt-4o-mini", "--input-price", "1"])
        .ok();
    let sync = cp
        .ctl(&["-o", "json", "model", "sync-pricing", "acme"])
        .json();
    let mini = sync
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "gpt-4o-mini")
        .unwrap();
    assert!(
        mini["result"]
            .as_str()
            .unwrap()
            .contains("operator-set prices kept"),
        "{sync}"
    );
    let model = cp
        .ctl(&["-o", "json", "model", "get", "acme/gpt-4o-mini"])
        .json();
    assert_eq!(model["input_price_micros_per_mtok"], 1);
    assert_eq!(model["price_source"], "operator");

    // A newer catalog (from a file), forced over the operator's price.
    let catalog = proxy_dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "as_of = \"2026-12-01\"\n[[model]]\nid = \"gpt-4o-mini\"\nfamily = \"openai\"\n\
         input = 300000\noutput = 1200000\ncontext_window = 128000\n",
    )
    .unwrap();
    let catalog = catalog.to_str().unwrap();
    cp.ctl(&[
        "model",
        "sync-pricing",
        "acme",
        "--file",
        catalog,
        "--dry-run",
        "--force",
    ])
    .ok();
    let model = cp
        .ctl(&["-o", "json", "model", "get", "acme/gpt-4o-mini"])
        .json();
    assert_eq!(
        model["input_price_micros_per_mtok"], 1,
        "a dry run changed prices"
    );
    cp.ctl(&[
        "model",
        "sync-pricing",
        "acme",
        "--file",
        catalog,
        "--force",
    ])
    .ok();
    let model = cp
        .ctl(&["-o", "json", "model", "get", "acme/gpt-4o-mini"])
        .json();
    assert_eq!(model["input_price_micros_per_mtok"], 300_000);
    assert_eq!(model["cached_input_price_micros_per_mtok"], 300_000);
    assert_eq!(model["price_source"], "catalog gpt-4o-mini");

    // Proxies price with the new figures: 800 × 0.30 + 200 × 0.30 + 500 × 1.20 = 900 µ$.
    proxy.wait_for_version(&http, cp.config_version()).await;
    let repriced = ask(
        &http,
        &proxy,
        &acme.key,
        chat("gpt-4o-mini", false, "usage:1000/500/200"),
    )
    .await;
    assert_eq!(stored(&pool, &repriced).await.cost_micros, 900);

    // The usage query shows estimates apart from what providers reported.
    let by_source = cp
        .ctl(&["-o", "json", "usage", "acme", "--by", "source"])
        .json();
    let row = |source: &str| {
        by_source
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == source)
            .cloned()
            .unwrap_or_else(|| panic!("no {source} row in {by_source}"))
    };
    let estimated = row("ESTIMATED");
    assert_eq!(estimated["cost_usd"], estimated["of_which_estimated_usd"]);
    assert_eq!(estimated["estimated_requests"], 1);
    let reported = row("PROVIDER_REPORTED");
    assert_eq!(reported["cost_usd"], "0.001770", "435 + 435 + 900 µ$");
    assert_eq!(reported["of_which_estimated_usd"], "0.000000");
    assert_eq!(row("MOCK")["cost_usd"], "0.000000");
}
