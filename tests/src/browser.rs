//! Headless Chromium driven over W3C WebDriver (Debian's `chromium` and `chromium-driver`),
//! for tests of what a person looks at. The protocol is a dozen JSON calls; a client crate
//! would bring a second TLS stack and a Unicode segmenter to the build for them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::proxy::Http;

/// The W3C name of the element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process and one headless browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    base: String,
    http: Http,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a headless Chromium `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Self {
        Self::start_with(width, height, &[]).await
    }

    /// [`Self::start`] with extra Chromium flags.
    pub async fn start_with(width: u32, height: u32, flags: &[&str]) -> Self {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/test installs it)");
        let stdout = driver.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .map(|rest| rest.trim_end_matches('.').to_owned())
                {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromedriver did not start");
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: Http::new(),
        };
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let session = browser
            .call(
                "POST",
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": args,
                    },
                }}}),
            )
            .await;
        let id = session["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let body = if method == "GET" {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let answer = self
            .http
            .send(method, &url, None, &[], body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let value = answer.json();
        assert!(
            answer.status.is_success(),
            "webdriver {method} {path}: {} {value}",
            answer.status
        );
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|element| element[ELEMENT].as_str().unwrap().to_owned())
        .collect()
    }

    async fn find(&self, css: &str) -> String {
        let found = self.find_all(css).await;
        assert!(
            !found.is_empty(),
            "no element matches {css} on {}",
            self.current_url().await
        );
        found[0].clone()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.find_all(css).await.len()
    }

    /// Types `text` into the first element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Chooses the option with `value` in the select matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let option = self.find(&format!("{css} option[value=\"{value}\"]")).await;
        self.call("POST", &format!("/element/{option}/click"), json!({}))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The page's cookies as WebDriver reports them (HttpOnly ones included).
    pub async fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", Value::Null)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// The cookie named `name`, if the browser holds one for this page.
    pub async fn cookie(&self, name: &str) -> Option<Value> {
        self.cookies()
            .await
            .into_iter()
            .find(|cookie| cookie["name"] == name)
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits (bounded) until the page's address ends with `suffix` (a form posted and
    /// redirected).
    pub async fn wait_for_url(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.current_url().await;
            if url.ends_with(suffix) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never reached …{suffix}; at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.find_all(css).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{css} never appeared on {}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends with its driver; Chromium exits with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
