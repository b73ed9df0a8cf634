//! The Provider Vault console in headless Chromium, the way an operator first uses it: sign
//! in, connect a provider on a mock upstream, add a key (never shown again) and test it
//! (invalid, then valid), create a model and make it a project's default, try LIVE (refused,
//! with the blocker and its fix) then switch, set a HARD budget, send traffic through a proxy
//! and read usage (provider-reported apart from estimated), see the proxy and a NACK in Fleet,
//! read the audit log, sign out. A screenshot of each page goes to
//! `target/console-screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::json;
use sluice_e2e::browser::Browser;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::{ControlPlaneBuilder, eventually};

const INVALID_KEY: &str = "sk-invalid-canary-4f1c9a77e2";
const VALID_KEY: &str = "sk-live-canary-91b3d0c5aa";

fn screenshots() -> PathBuf {
    let dir = sluice_e2e::binary_dir()
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Everything the browser has been shown, for the canary checks at the end.
struct Seen {
    pages: Vec<(String, String)>,
}

impl Seen {
    async fn record(&mut self, browser: &Browser, name: &str) {
        browser
            .screenshot(&screenshots().join(format!("{name}.png")))
            .await;
        let source = browser.source().await;
        // Every control has a label a screen reader can announce.
        let unlabelled = browser
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, \
                 textarea')].filter(e => e.labels.length === 0).map(e => e.name);",
                json!([]),
            )
            .await;
        assert_eq!(unlabelled, json!([]), "unlabelled controls on {name}");
        self.pages.push((name.to_owned(), source));
    }

    fn assert_never(&self, canary: &str) {
        for (name, source) in &self.pages {
            assert!(!source.contains(canary), "{canary} on page {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_workflow_in_a_real_browser() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
        .start();
    let console = cp.console_url();
    let browser = Browser::start(1280, 900).await;
    let mut seen = Seen { pages: Vec::new() };

    // Sign in: a bad token is refused on the page, the bootstrap token lands on the
    // organisations.
    browser.goto(&format!("{console}/orgs")).await;
    assert!(browser.current_url().await.ends_with("/sign-in"));
    seen.record(&browser, "01-sign-in").await;
    browser.fill("input[name=token]", "not-a-token").await;
    browser.click("button[type=submit]").await;
    browser.wait_for(".notice.bad").await;
    assert!(browser.source().await.contains("not valid"));
    browser.fill("input[name=token]", &cp.admin_token).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("form[action='/orgs']").await;
    let cookie = browser
        .cookie("sluice_console")
        .await
        .expect("session cookie");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    seen.record(&browser, "02-organisations-empty").await;
    browser.fill("input[name=name]", "acme").await;
    browser.fill("input[name=display_name]", "Acme Corp").await;
    browser.click("form[action='/orgs'] button").await;
    browser.wait_for("nav a[href='/orgs/acme/providers']").await;
    seen.record(&browser, "03-overview-empty").await;

    // A provider on the mock upstream, and a key that the provider refuses.
    browser
        .goto(&format!("{console}/orgs/acme/providers"))
        .await;
    seen.record(&browser, "04-providers-empty").await;
    browser.fill("input[name=name]", "openai").await;
    browser.select("select[name=kind]", "openai").await;
    browser
        .fill("input[name=base_url]", &upstream.base_url())
        .await;
    browser.click("input[name=allow_private_network]").await;
    browser
        .click("form[action='/orgs/acme/providers'] button")
        .await;
    browser.wait_for("#provider-openai").await;
    browser
        .fill("#provider-openai input[name=name]", "main")
        .await;
    browser
        .fill("#provider-openai input[name=secret]", INVALID_KEY)
        .await;
    browser
        .click("form[action='/orgs/acme/providers/openai/keys'] button")
        .await;
    browser.wait_for("#key-main").await;
    assert!(browser.text("#key-main").await.contains("not tested"));
    browser
        .click("form[action='/orgs/acme/providers/openai/keys/main/test'] button")
        .await;
    browser.wait_for("#key-test").await;
    let verdict = browser.text("#key-test").await;
    assert!(verdict.contains("invalid credentials"), "{verdict}");
    assert!(verdict.contains("HTTP 401"), "{verdict}");
    assert!(verdict.contains("Next move — fix"), "{verdict}");
    assert!(
        browser.text("#key-main").await.contains("by a key test"),
        "health says how it was learned"
    );
    seen.record(&browser, "05-key-test-invalid").await;

    // Rotate to a working key, and test that one.
    browser
        .fill("#key-main input[name=new_name]", "main-2")
        .await;
    browser
        .fill("#key-main input[name=new_secret]", VALID_KEY)
        .await;
    browser
        .click("form[action='/orgs/acme/providers/openai/keys/main/rotate'] button")
        .await;
    browser.wait_for("#key-main-2").await;
    browser
        .click("form[action='/orgs/acme/providers/openai/keys/main-2/test'] button")
        .await;
    browser.wait_for("#key-test").await;
    let verdict = browser.text("#key-test").await;
    assert!(verdict.contains("valid"), "{verdict}");
    assert!(verdict.contains("Next move — continue"), "{verdict}");
    seen.record(&browser, "06-key-test-valid").await;

    // Two models: one the upstream reports usage for, one it does not (estimated).
    browser.goto(&format!("{console}/orgs/acme/models")).await;
    for (name, upstream_model) in [("gpt-4o-mini", "gpt-4o-mini"), ("quiet", "no-usage")] {
        let create = "form[action='/orgs/acme/models']";
        browser
            .fill(&format!("{create} input[name=name]"), name)
            .await;
        browser
            .fill(
                &format!("{create} input[name=upstream_model]"),
                upstream_model,
            )
            .await;
        browser
            .fill(&format!("{create} input[name=input_price]"), "0.15")
            .await;
        browser
            .fill(&format!("{create} input[name=output_price]"), "0.60")
            .await;
        browser
            .click("form[action='/orgs/acme/models'] button")
            .await;
        browser.wait_for(&format!("#model-{name}")).await;
    }
    assert!(browser.text("#model-gpt-4o-mini").await.contains("$0.15"));
    // A fallback deployment for the first model, at a lower priority.
    browser
        .fill(
            "#model-gpt-4o-mini input[name=upstream_model]",
            "gpt-4o-mini-fallback",
        )
        .await;
    browser
        .fill("#model-gpt-4o-mini input[name=priority]", "1")
        .await;
    browser
        .click("form[action='/orgs/acme/models/gpt-4o-mini/deployments'] button")
        .await;
    eventually("the fallback deployment", 10, async || {
        browser
            .text("#model-gpt-4o-mini")
            .await
            .contains("gpt-4o-mini-fallback, weight 1, priority 1")
    })
    .await;
    seen.record(&browser, "07-models").await;
    browser
        .click("form[action='/orgs/acme/models/pricing'] button")
        .await;
    browser.wait_for("input[name=apply][value=true]").await;
    assert!(browser.source().await.contains("Nothing has changed yet"));
    seen.record(&browser, "08-pricing-dry-run").await;

    // A project: LIVE is refused while it has nothing to serve, with the fix on the page.
    browser.goto(&format!("{console}/orgs/acme/projects")).await;
    seen.record(&browser, "09-projects-empty").await;
    browser.fill("input[name=name]", "web").await;
    browser
        .click("form[action='/orgs/acme/projects'] button")
        .await;
    browser.wait_for("#project-web").await;
    browser.goto(&format!("{console}/orgs/acme")).await;
    let overview = browser.source().await;
    assert!(overview.contains("data-code=\"no_models\""), "{overview}");
    assert!(overview.contains("Fix: set the project"));
    seen.record(&browser, "10-overview-blocked").await;
    browser
        .goto(&format!("{console}/orgs/acme/projects/web/posture?to=live"))
        .await;
    let confirm = browser.text("main").await;
    assert!(confirm.contains("LIVE means real money"), "{confirm}");
    assert!(confirm.contains("LIVE will be refused"), "{confirm}");
    seen.record(&browser, "11-confirm-live-blocked").await;
    browser.click("main form button").await;
    browser.wait_for_url("/orgs/acme/projects").await;
    let refused = browser.text(".notice.bad").await;
    assert!(refused.contains("failed_precondition"), "{refused}");
    assert!(refused.contains("no models to serve"), "{refused}");
    assert!(refused.contains("request id"), "{refused}");
    seen.record(&browser, "12-live-refused").await;

    // The default model removes the blocker; the switch goes through and is audited.
    browser
        .select("#project-web select[name=model]", "gpt-4o-mini")
        .await;
    browser
        .click("form[action='/orgs/acme/projects/web/default-model'] button")
        .await;
    browser.wait_for(".notice.good").await;
    browser.goto(&format!("{console}/orgs/acme")).await;
    assert!(browser.source().await.contains("ready for LIVE"));
    browser.click("a.posture-switch").await;
    browser.wait_for("input[name=posture][value=live]").await;
    assert!(!browser.source().await.contains("LIVE will be refused"));
    browser.click("main form button").await;
    browser.wait_for("[data-posture=LIVE]").await;

    // A virtual key: shown once, with a copy button, then never again.
    browser
        .fill(
            "form[action='/orgs/acme/projects/web/keys'] input[name=name]",
            "app",
        )
        .await;
    browser
        .click("form[action='/orgs/acme/projects/web/keys'] button")
        .await;
    browser.wait_for("#new-secret").await;
    let virtual_key = browser.text("#new-secret").await;
    assert!(virtual_key.starts_with("sk-sluice-"), "{virtual_key}");
    assert_eq!(browser.count("button.copy[data-copy=new-secret]").await, 1);
    seen.record(&browser, "13-projects-key-created").await;
    browser.goto(&format!("{console}/orgs/acme/projects")).await;
    assert!(!browser.source().await.contains(&virtual_key));
    seen.record(&browser, "14-projects-live").await;

    // A HARD budget on the project.
    browser.goto(&format!("{console}/orgs/acme/budgets")).await;
    seen.record(&browser, "15-budgets-empty").await;
    browser.select("select[name=project]", "web").await;
    browser.select("select[name=period]", "month").await;
    browser.select("select[name=posture]", "hard").await;
    browser.fill("input[name=limit]", "5").await;
    browser
        .click("form[action='/orgs/acme/budgets'] button")
        .await;
    browser.wait_for(".notice.good").await;
    assert!(browser.text("main table").await.contains("HARD"));

    // Traffic through a proxy: one answer with the provider's usage, one estimated.
    let token = cp.data_plane_token("proxies");
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_ID", "edge-1")
        .env("SLUICE_PROXY_UPSTREAM_HOSTS", "127.0.0.1")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let bearer = format!("Bearer {virtual_key}");
    for (model, run) in [("gpt-4o-mini", "nightly-eval-7"), ("quiet", "")] {
        let mut headers = vec![("authorization", bearer.as_str())];
        if !run.is_empty() {
            headers.push(("x-sluice-run-id", run));
        }
        http.post_ok(
            &proxy.url("/v1/chat/completions"),
            &headers,
            &json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    }
    let usage_url = format!("{console}/orgs/acme/usage?days=7&group=model");
    eventually("usage in the console", 20, async || {
        browser.goto(&usage_url).await;
        browser.source().await.contains("over 2 request(s)")
    })
    .await;
    let usage = browser.text("main").await;
    assert!(usage.contains("verified by providers"), "{usage}");
    assert!(usage.contains("(1 request(s) estimated)"), "{usage}");
    assert_eq!(browser.count("figure.chart svg rect.estimate").await, 7);
    seen.record(&browser, "16-usage").await;
    // A run id finds that run's calls alone.
    browser
        .goto(&format!(
            "{console}/orgs/acme/usage?days=7&run=nightly-eval-7"
        ))
        .await;
    let run = browser.text("#run-calls").await;
    assert!(
        run.contains("gpt-4o-mini") && !run.contains("quiet"),
        "{run}"
    );
    assert!(
        run.contains("provider reported") && run.contains("app"),
        "{run}"
    );
    seen.record(&browser, "16b-usage-run").await;
    browser.goto(&format!("{console}/orgs/acme/budgets")).await;
    seen.record(&browser, "17-budgets-spent").await;

    // Fleet: the proxy, then a provider it may not reach, which it rejects.
    browser
        .goto(&format!("{console}/orgs/acme/providers"))
        .await;
    browser
        .fill(
            "form[action='/orgs/acme/providers'] input[name=name]",
            "elsewhere",
        )
        .await;
    browser
        .fill(
            "form[action='/orgs/acme/providers'] input[name=base_url]",
            "https://api.elsewhere.example/v1",
        )
        .await;
    browser
        .click("form[action='/orgs/acme/providers'] button")
        .await;
    browser.wait_for("#provider-elsewhere").await;
    seen.record(&browser, "18-providers").await;
    eventually("the NACK in Fleet", 20, async || {
        browser.goto(&format!("{console}/fleet")).await;
        browser.count(".nack-reason").await > 0
    })
    .await;
    let fleet = browser.text("main").await;
    assert!(fleet.contains("edge-1"), "{fleet}");
    assert!(
        browser.text(".nack-reason").await.contains("allowlist"),
        "{fleet}"
    );
    seen.record(&browser, "19-fleet").await;

    // The audit log has the switch, by the token that signed in.
    browser
        .goto(&format!(
            "{console}/orgs/acme/audit?action=project.set_posture"
        ))
        .await;
    let audit = browser.text("#audit").await;
    assert!(
        audit.contains("bootstrap") && audit.contains("posture=LIVE"),
        "{audit}"
    );
    seen.record(&browser, "20-audit").await;

    // A narrow window keeps every page within it (tables scroll in their own box).
    browser.set_window_size(420, 900).await;
    for path in ["/orgs/acme", "/orgs/acme/providers", "/orgs/acme/usage"] {
        browser.goto(&format!("{console}{path}")).await;
        let overflow = browser
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                json!([]),
            )
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} overflows by {overflow}"
        );
    }
    seen.record(&browser, "21-narrow-usage").await;
    browser.set_window_size(1280, 900).await;

    // Sign out: the session is over, the pages ask for a sign-in again.
    browser.goto(&format!("{console}/orgs/acme")).await;
    browser.click("form[action='/sign-out'] button").await;
    browser.wait_for("input[name=token]").await;
    browser
        .goto(&format!("{console}/orgs/acme/providers"))
        .await;
    assert!(browser.current_url().await.ends_with("/sign-in"));

    // Neither provider key, nor the admin token, ever reached a page; the virtual key only
    // the once; nothing secret in the control plane's log.
    seen.assert_never(INVALID_KEY);
    seen.assert_never(VALID_KEY);
    seen.assert_never(&cp.admin_token);
    let shown_once = seen
        .pages
        .iter()
        .filter(|(_, source)| source.contains(&virtual_key))
        .count();
    assert_eq!(shown_once, 1, "the virtual key is shown exactly once");
    let log = cp.output.text();
    for secret in [INVALID_KEY, VALID_KEY, &cp.admin_token, &virtual_key] {
        assert!(!log.contains(secret), "a secret in the control plane's log");
    }
    assert!(!proxy.output.text().contains(VALID_KEY));
}
