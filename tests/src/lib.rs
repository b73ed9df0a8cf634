//! Support for the end-to-end tests: start the real binaries on loopback port 0, wait for
//! them within a bound, capture everything they print, and run `sluicectl` like an operator.
//!
//! The binaries are found next to the test executable's target directory; `.ci/test` builds
//! them first (`cargo build --workspace --bins`), since Cargo only builds binaries of the
//! package under test.

// Test support: a failed step should stop the test loudly, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod mock_openai;
pub mod proxy;
pub mod translated;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding the workspace's built binaries (target/debug).
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable dir");
    // Tests run from target/<profile>/deps; binaries (the benchmark) from target/<profile>.
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as .ci/test does)",
        path.display()
    );
    path
}

/// Everything a process printed, kept for assertions and canary greps.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, line: &str) {
        let mut text = self.0.lock().unwrap();
        text.push_str(line);
        text.push('\n');
    }
}

/// A running `sluice-control-plane`, killed on drop.
pub struct ControlPlane {
    child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub output: Captured,
    pub admin_token: String,
}

/// How to start a control plane: its data directory, environment and flags.
pub struct ControlPlaneBuilder {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    dev: bool,
}

impl ControlPlaneBuilder {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
            dev: true,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn dev(mut self, dev: bool) -> Self {
        self.dev = dev;
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(binary("sluice-control-plane"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SLUICE_LISTEN_ADDR", "127.0.0.1:0")
            .env("SLUICE_DATA_DIR", &self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.dev {
            command.arg("--dev");
        }
        command
    }

    /// Runs it to completion (for start-up failures): exit code and output.
    pub fn run_to_exit(&self) -> Output {
        let mut command = self.command();
        let child = command.spawn().expect("spawn control plane");
        wait_with_timeout(child, STARTUP_TIMEOUT)
    }

    /// Starts it and waits until it listens.
    pub fn start(self) -> ControlPlane {
        let (child, addr, output) =
            spawn_listening(self.command(), "sluice-control-plane listening");
        let admin_token = self
            .env
            .iter()
            .find(|(k, _)| k == "SLUICE_ADMIN_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                std::fs::read_to_string(self.data_dir.join("admin-token"))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default()
            });
        ControlPlane {
            child,
            addr,
            data_dir: self.data_dir,
            output,
            admin_token,
        }
    }
}

/// Spawns `command`, captures everything it prints, and waits (bounded) for the log line
/// containing `marker` and `addr=`; returns the child, that address and the capture.
pub fn spawn_listening(mut command: Command, marker: &str) -> (Child, String, Captured) {
    let mut child = command.spawn().expect("spawn");
    let output = Captured::default();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        let addr_tx = addr_tx.clone();
        let marker = marker.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.push(&line);
                if let Some(addr) = line
                    .contains(&marker)
                    .then(|| line.split("addr=").nth(1))
                    .flatten()
                {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = addr_tx.send(addr.to_owned());
                }
            }
        });
    }
    match addr_rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(addr) => (child, addr, output),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{marker}: not up within {STARTUP_TIMEOUT:?}:\n{}",
                output.text()
            );
        }
    }
}

impl ControlPlane {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The newest config version, as `sluicectl fleet` reports it.
    pub fn config_version(&self) -> u64 {
        self.ctl(&["-o", "json", "fleet"]).json()["config_version"]
            .as_u64()
            .expect("config_version")
    }

    /// The usual starting point: organization `acme`; provider `acme/openai` (OpenAI type) at
    /// `base_url` with private networks allowed, the given extra flags (e.g. `--timeout-ms`),
    /// and `provider_key` if any; model `acme/gpt-4o-mini` on it; project `acme/web` (MOCK,
    /// defaulting to that model) with virtual key `app`; a data-plane token for proxies.
    pub fn seed_acme(
        &self,
        base_url: &str,
        provider_key: Option<&str>,
        provider_flags: &[&str],
    ) -> Acme {
        self.ctl(&["org", "create", "acme"]).ok();
        let mut provider = vec![
            "provider",
            "create",
            "acme/openai",
            "--type",
            "openai",
            "--base-url",
            base_url,
        ];
        provider.push("--allow-private-network");
        provider.extend_from_slice(provider_flags);
        self.ctl(&provider).ok();
        if let Some(secret) = provider_key {
            self.ctl_stdin(&["provider-key", "add", "acme/openai/main"], secret)
                .ok();
        }
        self.ctl(&[
            "model",
            "create",
            "acme/gpt-4o-mini",
            "--deployment",
            "openai:gpt-4o-mini",
        ])
        .ok();
        self.ctl(&[
            "project",
            "create",
            "acme/web",
            "--default-model",
            "gpt-4o-mini",
        ])
        .ok();
        Acme {
            key: self.virtual_key("acme/web/app", &[]),
            token: self.data_plane_token("proxies"),
        }
    }

    pub fn go_live(&self, project: &str) {
        self.ctl(&["project", "set-posture", project, "live"]).ok();
    }

    /// [`seed_acme`](Self::seed_acme) on the mock upstream at `base_url`, plus a model `paused`
    /// whose answers take [`mock_openai::PAUSE`], with `acme/web` LIVE: requests that are
    /// still under way when a test acts.
    pub fn seed_live_acme_with_paused_model(&self, base_url: &str, provider_key: &str) -> Acme {
        let acme = self.seed_acme(base_url, Some(provider_key), &[]);
        self.ctl(&[
            "model",
            "create",
            "acme/paused",
            "--deployment",
            "openai:pause",
        ])
        .ok();
        self.go_live("acme/web");
        acme
    }

    /// Creates a data-plane token named `name` and returns it.
    pub fn data_plane_token(&self, name: &str) -> String {
        let created = self
            .ctl(&[
                "-o",
                "json",
                "token",
                "create",
                name,
                "--scope",
                "data-plane",
            ])
            .json();
        created["token"].as_str().expect("token").to_owned()
    }

    /// Creates the virtual key `ORG/PROJECT/NAME` (limited to `models`, if any) and returns it.
    pub fn virtual_key(&self, path: &str, models: &[&str]) -> String {
        let joined = models.join(",");
        let mut args = vec!["-o", "json", "vkey", "create", path];
        if !models.is_empty() {
            args.extend(["--models", joined.as_str()]);
        }
        self.ctl(&args).json()["key"]
            .as_str()
            .expect("key")
            .to_owned()
    }

    /// Runs `sluicectl ARGS` against this control plane with the bootstrap token.
    /// Adds provider `org/name` of `kind` on a loopback `base_url`, with `keys` (name, secret)
    /// in that order, and a model `org/model` served by it as `upstream_model`.
    pub fn add_provider_model(
        &self,
        provider: &str,
        kind: &str,
        base_url: &str,
        keys: &[(&str, &str)],
        model: &str,
        upstream_model: &str,
    ) {
        self.ctl(&[
            "provider",
            "create",
            provider,
            "--type",
            kind,
            "--base-url",
            base_url,
            "--allow-private-network",
        ])
        .ok();
        for (name, secret) in keys {
            self.ctl_stdin(
                &["provider-key", "add", &format!("{provider}/{name}")],
                secret,
            )
            .ok();
        }
        let provider_name = provider.rsplit('/').next().unwrap_or(provider);
        self.ctl(&[
            "model",
            "create",
            model,
            "--deployment",
            &format!("{provider_name}:{upstream_model}"),
        ])
        .ok();
    }

    /// Waits (up to 15 s) until provider key `name` of `org` shows `health`.
    pub async fn await_key_health(&self, org: &str, name: &str, health: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let keys = self
                .ctl(&["-o", "json", "provider-key", "list", org])
                .json();
            let found = keys
                .as_array()
                .and_then(|keys| keys.iter().find(|k| k["name"] == name))
                .map(|k| k["health"] == health);
            if found == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {health}: {keys}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        self.ctl_as(&self.admin_token, args, None)
    }

    /// Runs `sluicectl ARGS` with `stdin` piped in.
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> CtlOutput {
        self.ctl_as(&self.admin_token, args, Some(stdin))
    }

    pub fn ctl_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> CtlOutput {
        ctl_at(&self.url(), token, args, stdin)
    }

    /// Kills it and waits, so its files can be inspected.
    pub fn stop(mut self) -> Captured {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output.clone()
    }
}

/// A fresh mock OpenAI upstream, control plane (SQLite in the returned directory) and LIVE
/// project `acme/web`, the provider holding `provider_key`.
pub type LiveStack = (
    mock_openai::MockOpenAi,
    tempfile::TempDir,
    ControlPlane,
    Acme,
);

pub fn live_stack(provider_key: &str) -> LiveStack {
    live_stack_with(provider_key, &[], &[])
}

/// A [`live_stack`] whose model `acme/{model}` is served by provider `acme/{kind}` of that
/// family (key `main` = `secret`) as `upstream_model`, and one proxy on it, caught up.
pub async fn family_stack(
    kind: &str,
    secret: &str,
    model: &str,
    upstream_model: &str,
) -> (LiveStack, tempfile::TempDir, proxy::Proxy, proxy::Http) {
    let (upstream, cp_dir, cp, acme) = live_stack("sk-openai-side");
    cp.add_provider_model(
        &format!("acme/{kind}"),
        kind,
        &format!("http://{}", upstream.addr),
        &[("main", secret)],
        &format!("acme/{model}"),
        upstream_model,
    );
    let http = proxy::Http::new();
    let proxy_dir = tempfile::tempdir().expect("a temp dir");
    let proxy = proxy::ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    ((upstream, cp_dir, cp, acme), proxy_dir, proxy, http)
}

/// A proxy on `cp` with `token`, caught up with its newest config: its data directory (kept
/// for as long as the proxy runs), the proxy, and a client.
pub async fn caught_up_proxy(
    cp: &ControlPlane,
    token: &str,
) -> (tempfile::TempDir, proxy::Proxy, proxy::Http) {
    let http = proxy::Http::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let proxy = proxy::ProxyBuilder::new(dir.path(), &cp.url(), token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    (dir, proxy, http)
}

/// [`live_stack`] with extra provider flags (e.g. `--timeout-ms`) and control-plane
/// environment.
pub fn live_stack_with(
    provider_key: &str,
    provider_flags: &[&str],
    env: &[(&str, &str)],
) -> LiveStack {
    let upstream = mock_openai::MockOpenAi::start();
    let cp_dir = tempfile::tempdir().expect("temp dir");
    let mut builder = ControlPlaneBuilder::new(cp_dir.path());
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let cp = builder.start();
    let acme = cp.seed_acme(&upstream.base_url(), Some(provider_key), provider_flags);
    cp.go_live("acme/web");
    (upstream, cp_dir, cp, acme)
}

/// The control plane's SQLite store in `data_dir`, for reading what it recorded.
pub async fn store_of(data_dir: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", data_dir.join("sluice.db").display());
    sqlx::SqlitePool::connect(&url)
        .await
        .expect("the control plane's store")
}

/// Waits (bounded) for the usage record of `request_id` to reach the control plane's SQLite
/// store and returns `columns` of it.
pub async fn await_usage<T>(pool: &sqlx::SqlitePool, columns: &str, request_id: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let sql = format!("SELECT {columns} FROM usage_records WHERE request_id = $1");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = sqlx::query_as::<_, T>(&sql)
            .bind(request_id)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        if let Some(row) = row {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "usage of {request_id} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What [`ControlPlane::seed_acme`] made: the virtual key and the data-plane token.
pub struct Acme {
    pub key: String,
    pub token: String,
}

/// Runs `sluicectl ARGS` against the control plane at `url`.
pub fn ctl_at(url: &str, token: &str, args: &[&str], stdin: Option<&str>) -> CtlOutput {
    let mut child = Command::new(binary("sluicectl"))
        .env_clear()
        .env("SLUICE_CONTROL_PLANE", url)
        .env("SLUICE_TOKEN", token)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluicectl");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    CtlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(
            self.success,
            "sluicectl failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts failure and returns stderr.
    pub fn err(&self) -> &str {
        assert!(
            !self.success,
            "sluicectl should have failed:\n{}",
            self.stdout
        );
        &self.stderr
    }
}

/// Waits for `child`, reading its output as it goes (a full pipe would otherwise stall it).
fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
            panic!(
                "process did not finish within {timeout:?} ({status}):\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Everything a stack left behind once stopped: both processes' logs and every file of their
/// data directories, for proving a secret reached none of them.
pub struct Leftovers {
    pub proxy_logs: String,
    pub cp_logs: String,
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

impl Leftovers {
    /// Waits for usage to reach the control plane's database, stops both processes (the proxy
    /// must have logged at trace level) and reads what they left.
    pub async fn of(
        proxy: proxy::Proxy,
        cp: ControlPlane,
        proxy_dir: &Path,
        cp_dir: &Path,
    ) -> Self {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let proxy_logs = proxy.kill().text();
        let cp_logs = cp.stop().text();
        assert!(
            proxy_logs.contains("TRACE"),
            "the proxy did not log at trace level"
        );
        let mut files = files_under(cp_dir);
        files.extend(files_under(proxy_dir));
        Self {
            proxy_logs,
            cp_logs,
            files,
        }
    }

    /// Asserts that `form` (of the secret `what`) is in no log and no file.
    pub fn assert_nowhere(&self, form: &str, what: &str) {
        assert!(
            !self.proxy_logs.contains(form),
            "proxy logs leak the {what}"
        );
        assert!(
            !self.cp_logs.contains(form),
            "control-plane logs leak the {what}"
        );
        for (path, bytes) in &self.files {
            assert!(
                !contains_bytes(bytes, form.as_bytes()),
                "{} holds the {what}",
                path.display()
            );
        }
    }
}

/// Every file under `dir`, recursively, as bytes (database, WAL, key files …).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, bytes));
            }
        }
    }
    found
}

/// True when `needle` occurs in `haystack` as bytes.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}
