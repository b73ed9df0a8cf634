//! The console against hostile input and hostile sites: names that are markup render as text
//! (in a real browser, with the DOM checked), a forged cross-site form is refused, sessions end
//! when idle, at their lifetime, on sign-out and when their token is revoked, and read-only and
//! other-organisation tokens get no write controls and no way around them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use sluice_e2e::browser::Browser;
use sluice_e2e::console_session::ConsoleSession;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::{ControlPlane, ControlPlaneBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOSTILE_ORG: &str = "<script>document.title='pwned'</script>Acme";
const HOSTILE_PROJECT: &str = "\"><img src=x id=xss-project>";
const HOSTILE_MODEL: &str = "<b id=xss-model>gpt</b>";
const HOSTILE_PROXY: &str = "<i id=xss-proxy>edge</i>";

fn console_plane(dir: &std::path::Path, extra: &[(&str, &str)]) -> ControlPlane {
    let mut builder =
        ControlPlaneBuilder::new(dir).env("SLUICE_CONSOLE_LISTEN_ADDR", "127.0.0.1:0");
    for (key, value) in extra {
        builder = builder.env(key, value);
    }
    builder.start()
}

async fn signed_in_browser(console: &str, token: &str) -> Browser {
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{console}/sign-in")).await;
    browser.fill("input[name=token]", token).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("form[action='/sign-out']").await;
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_as_text() {
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = console_plane(cp_dir.path(), &[]);
    cp.ctl(&["org", "create", "acme", "--display-name", HOSTILE_ORG])
        .ok();
    cp.ctl(&[
        "provider",
        "create",
        "acme/openai",
        "--type",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--allow-private-network",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/chat",
        "--deployment",
        &format!("openai:{HOSTILE_MODEL}"),
    ])
    .ok();
    cp.ctl(&[
        "project",
        "create",
        "acme/web",
        "--display-name",
        HOSTILE_PROJECT,
    ])
    .ok();
    let token = cp.data_plane_token("proxies");
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_ID", HOSTILE_PROXY)
        .start();
    proxy
        .wait_for_version(&Http::new(), cp.config_version())
        .await;

    let console = cp.console_url();
    let browser = signed_in_browser(&console, &cp.admin_token).await;
    // A hostile display name typed into the console is stored and shown as typed.
    browser.goto(&format!("{console}/orgs/acme/projects")).await;
    browser
        .fill(
            "form[action='/orgs/acme/projects'] input[name=name]",
            "ok-name",
        )
        .await;
    browser
        .fill(
            "form[action='/orgs/acme/projects'] input[name=display_name]",
            HOSTILE_PROJECT,
        )
        .await;
    browser
        .click("form[action='/orgs/acme/projects'] button")
        .await;
    browser.wait_for(".notice.good").await;

    for (path, shown) in [
        ("/orgs", HOSTILE_ORG),
        ("/orgs/acme/projects", HOSTILE_PROJECT),
        ("/orgs/acme/models", HOSTILE_MODEL),
        ("/fleet", HOSTILE_PROXY),
    ] {
        browser.goto(&format!("{console}{path}")).await;
        let dom = browser
            .execute(
                "return {
                    injected: document.querySelectorAll(
                        '#xss-project, #xss-model, #xss-proxy, img').length,
                    scripts: document.scripts.length,
                    title: document.title,
                    text: document.body.innerText,
                };",
                json!([]),
            )
            .await;
        assert_eq!(dom["injected"], 0, "markup from a name on {path}");
        assert_eq!(dom["scripts"], 1, "only the console's own script on {path}");
        assert_ne!(dom["title"], "pwned", "{path}");
        assert!(
            dom["text"].as_str().unwrap().contains(shown),
            "{path} shows the name as written: {}",
            dom["text"]
        );
    }
    drop(proxy);
}

/// Serves one page, whatever is asked: a form that posts itself to the console.
async fn attacker_site(console: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let page = format!(
        "<!doctype html><html><body><form id=f method=post action=\"{console}/orgs\">\
         <input name=csrf value=guessed><input name=name value=forged></form>\
         <script>document.getElementById('f').submit()</script></body></html>"
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cross_site_forms_are_refused() {
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = console_plane(cp_dir.path(), &[]);
    let console = cp.console_url();

    // A signed-in operator visits another site on the same host (same site, other origin:
    // the cookie goes along) whose page posts a form to the console.
    let browser = signed_in_browser(&console, &cp.admin_token).await;
    browser.goto(&attacker_site(&console).await).await;
    browser.wait_for_url("/orgs").await;
    let refused = browser.text("body").await;
    assert!(
        refused.contains("did not come from a console page"),
        "{refused}"
    );
    assert_absent(&cp, &["org", "get", "forged"]);

    // Without the browser's own headers: the CSRF token alone decides.
    let session = ConsoleSession::sign_in(&console, &cp.admin_token).await;
    let stale = session
        .post("/orgs", &[("csrf", "guessed"), ("name", "forged")])
        .await;
    assert_eq!(stale.status, 403, "{}", stale.text());
    assert!(stale.text().contains("stale or forged"));
    let csrf = session.csrf("/orgs").await;
    let other_origin = session
        .post_with(
            "/orgs",
            &[("origin", "http://127.0.0.1:1")],
            &[("csrf", &csrf), ("name", "forged")],
        )
        .await;
    assert_eq!(other_origin.status, 403);
    assert_absent(&cp, &["org", "get", "forged"]);
    let genuine = session
        .post("/orgs", &[("csrf", &csrf), ("name", "genuine")])
        .await;
    assert_eq!(genuine.status, 303, "{}", genuine.text());
    cp.ctl(&["org", "get", "genuine"]).ok();

    // Signing someone in from another site would put them in the forger's session.
    let http = Http::new();
    let forged_sign_in = http
        .send(
            "POST",
            &format!("{console}/sign-in"),
            None,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", "cross-site"),
            ],
            bytes::Bytes::from(format!("token={}", cp.admin_token)),
        )
        .await
        .unwrap();
    assert_eq!(forged_sign_in.status, 403);
    assert!(forged_sign_in.headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_idle_at_their_lifetime_on_sign_out_and_with_their_token() {
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = console_plane(
        cp_dir.path(),
        &[
            ("SLUICE_CONSOLE_IDLE_TIMEOUT_S", "2"),
            ("SLUICE_CONSOLE_SESSION_LIFETIME_S", "4"),
        ],
    );
    let console = cp.console_url();
    let signed_in = |answer: &sluice_e2e::proxy::HttpResponse| answer.status == 200;

    // Idle: two seconds without a request end it.
    let idle = ConsoleSession::sign_in(&console, &cp.admin_token).await;
    assert!(signed_in(&idle.get("/orgs").await));
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let after = idle.get("/orgs").await;
    assert_eq!(after.status, 303);
    assert_eq!(after.headers["location"], "/sign-in");

    // Lifetime: a session in use still ends four seconds after sign-in.
    let busy = ConsoleSession::sign_in(&console, &cp.admin_token).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        assert!(
            signed_in(&busy.get("/orgs").await),
            "ended before its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(busy.get("/orgs").await.status, 303);

    // Sign-out ends it on the server, not only in the browser.
    let leaving = ConsoleSession::sign_in(&console, &cp.admin_token).await;
    let csrf = leaving.csrf("/orgs").await;
    let signed_out = leaving.post("/sign-out", &[("csrf", &csrf)]).await;
    assert!(
        signed_out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(leaving.get("/orgs").await.status, 303);

    // A revoked token ends its sessions at their next request.
    let created = cp
        .ctl(&["-o", "json", "token", "create", "ops", "--scope", "admin"])
        .json();
    let ops = ConsoleSession::sign_in(&console, created["token"].as_str().unwrap()).await;
    assert!(signed_in(&ops.get("/orgs").await));
    cp.ctl(&["token", "revoke", "ops"]).ok();
    let revoked = ops.get("/orgs").await;
    assert_eq!(revoked.status, 303);
    assert_eq!(revoked.headers["location"], "/sign-in?ended=1");
    assert_eq!(ops.get("/orgs").await.headers["location"], "/sign-in");

    // The cookie is HttpOnly, SameSite=Strict, and holds nothing but a random id.
    let cookie = ConsoleSession::sign_in(&console, &cp.admin_token)
        .await
        .cookie;
    assert!(!cookie.contains(&cp.admin_token));
}

/// Asserts `sluicectl ARGS` (a get) finds nothing.
fn assert_absent(cp: &ControlPlane, args: &[&str]) {
    assert!(cp.ctl(args).err().contains("not found"), "{args:?} exists");
}

fn org_token(cp: &ControlPlane, name: &str, scope: &str, org: &str) -> String {
    let mut args = vec!["-o", "json", "token", "create", name, "--scope", scope];
    if !org.is_empty() {
        args.extend(["--org", org]);
    }
    cp.ctl(&args).json()["token"].as_str().unwrap().to_owned()
}

/// Forms that change something (every page has one more: sign-out).
fn write_forms(html: &str) -> usize {
    html.matches("method=\"post\"").count() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_other_organisation_tokens() {
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = console_plane(cp_dir.path(), &[]);
    cp.seed_acme("http://127.0.0.1:9/v1", Some("sk-canary-readonly-77"), &[]);
    cp.ctl(&["org", "create", "globex"]).ok();
    let console = cp.console_url();

    let pages = [
        "/orgs/acme",
        "/orgs/acme/providers",
        "/orgs/acme/models",
        "/orgs/acme/projects",
        "/orgs/acme/budgets",
        "/orgs/acme/usage",
        "/orgs/acme/audit",
    ];
    // An admin sees write controls everywhere they belong; read-only tokens see none.
    let admin = ConsoleSession::sign_in(&console, &cp.admin_token).await;
    assert!(write_forms(&admin.get("/orgs/acme/providers").await.text()) > 0);
    for scope in [("read-only", ""), ("org-read-only", "acme")] {
        let token = org_token(&cp, &format!("viewer-{}", scope.0), scope.0, scope.1);
        let viewer = ConsoleSession::sign_in(&console, &token).await;
        for path in pages {
            let page = viewer.get(path).await;
            assert_eq!(page.status, 200, "{path}: {}", page.text());
            assert_eq!(
                write_forms(&page.text()),
                0,
                "{} sees a write form on {path}",
                scope.0
            );
        }
        // Its writes are refused by the admin service all the same.
        let csrf = viewer.csrf("/orgs/acme/projects").await;
        let sneaky = viewer
            .post(
                "/orgs/acme/projects",
                &[("csrf", &csrf), ("name", "sneaky")],
            )
            .await;
        assert_eq!(sneaky.status, 303);
        let shown = viewer.get("/orgs/acme/projects").await.text();
        assert!(shown.contains("permission_denied"), "{shown}");
        let live = viewer
            .post(
                "/orgs/acme/projects/web/posture",
                &[("csrf", &csrf), ("posture", "live")],
            )
            .await;
        assert_eq!(live.status, 303);
        assert!(
            viewer
                .get("/orgs/acme/projects")
                .await
                .text()
                .contains("permission_denied")
        );
    }
    assert_absent(&cp, &["project", "get", "acme/sneaky"]);
    assert!(
        cp.ctl(&["-o", "json", "project", "get", "acme/web"])
            .ok()
            .contains("MOCK")
    );

    // Another organisation's admin: acme answers as a missing organisation does; global
    // pages are refused; its own organisation is where it lands.
    let globex = ConsoleSession::sign_in(
        &console,
        &org_token(&cp, "globex-admin", "org-admin", "globex"),
    )
    .await;
    let landing = globex.get("/").await;
    assert_eq!(landing.headers["location"], "/orgs/globex");
    for path in pages {
        let foreign = globex.get(path).await;
        let missing = globex.get(&path.replace("acme", "nowhere")).await;
        assert_eq!(foreign.status, 404, "{path}");
        assert_eq!(missing.status, 404, "{path}");
        assert!(
            foreign
                .text()
                .contains("organization &#39;acme&#39; not found"),
            "{path}"
        );
        assert_eq!(
            foreign
                .text()
                .replace("acme", "X")
                .split("request id")
                .next(),
            missing
                .text()
                .replace("nowhere", "X")
                .split("request id")
                .next(),
            "{path}: another organisation's page differs from a missing one's"
        );
    }
    let fleet = globex.get("/fleet").await;
    assert_eq!(fleet.status, 403);
    assert!(
        !globex
            .get("/orgs/globex")
            .await
            .text()
            .contains("href=\"/fleet\"")
    );
    let csrf = globex.csrf("/orgs/globex/projects").await;
    let across = globex
        .post(
            "/orgs/acme/projects",
            &[("csrf", &csrf), ("name", "across")],
        )
        .await;
    assert_eq!(across.status, 303);
    assert_absent(&cp, &["project", "get", "acme/across"]);

    // No page of any session held the provider key.
    for path in pages {
        assert!(
            !admin
                .get(path)
                .await
                .text()
                .contains("sk-canary-readonly-77")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_console_asks_no_client_certificate_and_its_cookie_is_secure() {
    let pki = tempfile::tempdir().unwrap();
    let ca = sluice_e2e::pki::TestCa::new(pki.path(), "console");
    let server = ca.server(pki.path(), "control-plane");
    let cp_dir = tempfile::tempdir().unwrap();
    // The gRPC listener wants proxies' client certificates; browsers bring none.
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .tls(&server, &ca.ca_file, Some(&ca.ca_file))
        .env("SLUICE_CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
        .start();
    let console = cp.console_url();
    assert!(console.starts_with("https://"), "{console}");
    // The test CA is not in Chromium's store; the certificate itself is checked by the
    // other TLS tests.
    let browser = Browser::start_with(1280, 900, &["--ignore-certificate-errors"]).await;
    browser.goto(&format!("{console}/sign-in")).await;
    browser.fill("input[name=token]", &cp.admin_token).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("form[action='/orgs']").await;
    let cookie = browser
        .cookie("sluice_console")
        .await
        .expect("session cookie");
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["httpOnly"], true);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_costs_the_control_plane_less_than_ten_mib() {
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = ControlPlaneBuilder::new(plain_dir.path()).start();
    let console_dir = tempfile::tempdir().unwrap();
    let with_console = console_plane(console_dir.path(), &[]);
    for cp in [&plain, &with_console] {
        cp.seed_acme("http://127.0.0.1:9/v1", Some("sk-footprint"), &[]);
    }
    // Both idle after the same seeding; the console's has served every page to a few
    // sessions.
    let console = with_console.console_url();
    for _ in 0..3 {
        let session = ConsoleSession::sign_in(&console, &with_console.admin_token).await;
        for path in [
            "/orgs",
            "/orgs/acme",
            "/orgs/acme/providers",
            "/orgs/acme/models",
            "/orgs/acme/projects",
            "/orgs/acme/budgets",
            "/orgs/acme/usage",
            "/orgs/acme/audit",
            "/fleet",
        ] {
            assert_eq!(session.get(path).await.status, 200, "{path}");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (without, with) = (rss_kib(plain.pid()), rss_kib(with_console.pid()));
    println!("control plane idle RSS: {without} KiB without the console, {with} KiB with it");
    assert!(
        with.saturating_sub(without) < 10 * 1024,
        "the console grew the control plane by {} KiB",
        with - without
    );
}
