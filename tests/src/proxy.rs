//! Starting real `sluice-proxy` processes, and a small HTTP client to talk to them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::{Captured, binary, spawn_listening};

pub struct ProxyBuilder {
    data_dir: PathBuf,
    control_plane: String,
    token: String,
    env: Vec<(String, String)>,
    listen: String,
}

impl ProxyBuilder {
    pub fn new(data_dir: &Path, control_plane: &str, token: &str) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            control_plane: control_plane.to_owned(),
            token: token.to_owned(),
            env: Vec::new(),
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Listen on a given address (to restart a proxy where clients expect it).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_owned();
        self
    }

    pub fn start(self) -> Proxy {
        let mut command = Command::new(binary("sluice-proxy"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SLUICE_PROXY_LISTEN_ADDR", &self.listen)
            .env("SLUICE_PROXY_CONTROL_PLANE", &self.control_plane)
            .env("SLUICE_PROXY_TOKEN", &self.token)
            .env("SLUICE_PROXY_DATA_DIR", &self.data_dir)
            .env("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS", "100")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (child, addr, output) = spawn_listening(command, "sluice-proxy listening");
        Proxy {
            child,
            addr,
            output,
        }
    }
}

pub struct Proxy {
    child: Child,
    pub addr: String,
    pub output: Captured,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as an orchestrator stopping it would; waits (bounded) for it to exit.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Captured) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.output.clone());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) -> Captured {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output.clone()
    }

    /// A metric's value on the proxy's `/metrics` page (`name` with its labels, if any).
    pub async fn metric(&self, http: &Http, name: &str) -> f64 {
        let text = http.get(&self.url("/metrics"), None).await.unwrap().text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    }

    /// Waits until `/readyz` reports at least `version`.
    pub async fn wait_for_version(&self, http: &Http, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held = match http.get(&self.url("/readyz"), None).await {
                Ok(response) => response.json()["config_version"].as_u64().unwrap_or(0),
                Err(_) => 0,
            };
            if held >= version {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {} never reached version {version}:\n{}",
                self.addr,
                self.output.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 client with a timeout on every call.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 over plain TCP with prior knowledge (h2c).
    pub fn h2c() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str, key: Option<&str>) -> Result<HttpResponse, String> {
        self.send("GET", url, key, &[], Bytes::new()).await
    }

    pub async fn post(
        &self,
        url: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<HttpResponse, String> {
        self.send("POST", url, key, &[], Bytes::from(body.to_string()))
            .await
    }

    /// POSTs `body` with the caller's own `headers` (its key among them) and asserts a 200.
    pub async fn post_ok(&self, url: &str, headers: &[(&str, &str)], body: &Value) -> HttpResponse {
        let answer = self
            .send("POST", url, None, headers, Bytes::from(body.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(answer.status, 200, "{url}: {}", answer.text());
        answer
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        let mut builder = Request::builder().method(method).uri(url);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header("content-type", "application/json");
        }
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(15), body.collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// POSTs and returns as soon as the response head arrives; the body is the caller's to read.
    pub async fn post_head(
        &self,
        url: &str,
        key: &str,
        body: &Value,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        self.post_head_with(url, key, &[], body).await
    }

    /// [`Self::post_head`] with extra request headers.
    pub async fn post_head_with(
        &self,
        url: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut builder = Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// POSTs and returns the instant each body frame arrived, with its bytes.
    pub async fn post_streaming(
        &self,
        url: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Vec<(Instant, Bytes)>) {
        let response = self.post_head(url, key, body).await.unwrap();
        let status = response.status();
        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(15), body.frame())
            .await
            .unwrap()
        {
            if let Ok(data) = frame.unwrap().into_data() {
                frames.push((Instant::now(), data));
            }
        }
        (status, frames)
    }
}
