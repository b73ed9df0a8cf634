//! A running `sluice-control-plane` and how to start one, and `sluicectl` run against it like
//! an operator would (seeding organisations, providers, models, keys and tokens).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Issued;
use crate::processes::{Captured, STARTUP_TIMEOUT, binary, spawn_listening, wait_with_timeout};

/// A running `sluice-control-plane`, killed on drop.
pub struct ControlPlane {
    child: Child,
    pub addr: String,
    /// `http`, or `https` when it serves TLS.
    pub scheme: &'static str,
    /// What `sluicectl` needs beside the address (over TLS: the CA that vouches for it).
    pub ctl_env: Vec<(String, String)>,
    pub data_dir: PathBuf,
    pub output: Captured,
    pub admin_token: String,
}

/// How to start a control plane: its data directory, environment and flags.
pub struct ControlPlaneBuilder {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    dev: bool,
    tls_ca: Option<PathBuf>,
}

impl ControlPlaneBuilder {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
            dev: true,
            tls_ca: None,
        }
    }

    /// TLS with `server` (issued by the CA in `ca_file`, which `sluicectl` is given); with
    /// `proxy_ca`, proxies must present a certificate that CA issued.
    pub fn tls(mut self, server: &Issued, ca_file: &Path, proxy_ca: Option<&Path>) -> Self {
        self = self
            .env("SLUICE_TLS_CERT_FILE", &server.cert.display().to_string())
            .env("SLUICE_TLS_KEY_FILE", &server.key.display().to_string());
        if let Some(proxy_ca) = proxy_ca {
            self = self.env("SLUICE_TLS_CLIENT_CA_FILE", &proxy_ca.display().to_string());
        }
        self.tls_ca = Some(ca_file.to_path_buf());
        self
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
        let (scheme, ctl_env) = match &self.tls_ca {
            Some(ca) => (
                "https",
                vec![("SLUICE_CA_FILE".to_owned(), ca.display().to_string())],
            ),
            None => ("http", Vec::new()),
        };
        ControlPlane {
            child,
            addr,
            scheme,
            ctl_env,
            data_dir: self.data_dir,
            output,
            admin_token,
        }
    }
}

impl ControlPlane {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Where proxies connect: the data-plane listener when it has one of its own.
    pub fn data_plane_url(&self) -> String {
        let text = self.output.text();
        let addr = text
            .lines()
            .find(|line| line.contains("data-plane listener"))
            .and_then(|line| line.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next());
        match addr {
            Some(addr) => format!("{}://{addr}", self.scheme),
            None => self.url(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Provider Vault console's base URL (started with `SLUICE_CONSOLE_LISTEN_ADDR`).
    pub fn console_url(&self) -> String {
        let text = self.output.text();
        let addr = text
            .lines()
            .find(|line| line.contains("console listening"))
            .and_then(|line| line.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the control plane was started without a console");
        format!("{}://{addr}", self.scheme)
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

    /// A HARD budget of `limit_usd` over all time on `target` (`ORG[/PROJECT[/KEY]]`).
    pub fn hard_budget(&self, target: &str, limit_usd: &str) {
        self.ctl(&[
            "budget",
            "create",
            target,
            "--period",
            "total",
            "--limit-usd",
            limit_usd,
            "--posture",
            "hard",
        ])
        .ok();
    }

    pub fn go_live(&self, project: &str) {
        self.ctl(&["project", "set-posture", project, "live"]).ok();
    }

    /// [`seed_acme`](Self::seed_acme) on the mock upstream at `base_url`, plus a model `paused`
    /// whose answers take [`mock_openai::PAUSE`], with `acme/web` LIVE: requests that are
    /// still under way when a test acts.
    pub fn seed_live_acme_with_paused_model(&self, base_url: &str, provider_key: &str) -> Acme {
        let acme = self.seed_acme(base_url, Some(provider_key), &[]);
        self.add_paused_model();
        self.go_live("acme/web");
        acme
    }

    /// Model `acme/paused` on `acme/openai`, whose answers take [`mock_openai::PAUSE`].
    pub fn add_paused_model(&self) {
        self.ctl(&[
            "model",
            "create",
            "acme/paused",
            "--deployment",
            "openai:pause",
        ])
        .ok();
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
        ctl_with(&self.url(), &self.ctl_env, token, args, stdin)
    }

    /// Kills it and waits, so its files can be inspected.
    pub fn stop(mut self) -> Captured {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output.clone()
    }
}

/// What [`ControlPlane::seed_acme`] made: the virtual key and the data-plane token.
pub struct Acme {
    pub key: String,
    pub token: String,
}

/// Runs `sluicectl ARGS` against the control plane at `url`.
pub fn ctl_at(url: &str, token: &str, args: &[&str], stdin: Option<&str>) -> CtlOutput {
    ctl_with(url, &[], token, args, stdin)
}

/// [`ctl_at`] with more environment (a CA file, a client certificate).
pub fn ctl_with(
    url: &str,
    env: &[(String, String)],
    token: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> CtlOutput {
    let mut child = Command::new(binary("sluicectl"))
        .env_clear()
        .env("SLUICE_CONTROL_PLANE", url)
        .env("SLUICE_TOKEN", token)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
