//! The floor users compare a gateway with: nginx (Debian's `nginx-light`) as a plain reverse
//! proxy — `worker_processes auto`, upstream keep-alive, `proxy_buffering off` — loaded by
//! `oha`, a well-known load generator, at 32 and 64 connections. Each side's processes are
//! measured apart from /proc: nginx's master and workers; Sluice's proxy and its control plane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The nginx to run, and the oha to load it with: on PATH, or oha in cargo's bin folder.
#[derive(Clone)]
pub struct Tools {
    nginx: PathBuf,
    oha: PathBuf,
}

impl Tools {
    /// Both tools, or what is missing and how to install it.
    pub fn find() -> Result<Self, String> {
        let on_path = |name: &str| {
            std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .chain([PathBuf::from("/usr/sbin")])
                .chain(std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin")))
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        };
        match (on_path("nginx"), on_path("oha")) {
            (Some(nginx), Some(oha)) => Ok(Self { nginx, oha }),
            _ => Err("nginx or oha is missing: run tests/bench/setup (apt-get install nginx-light; cargo install oha --locked)".to_owned()),
        }
    }
}

/// nginx in front of `upstream`, on a port of its own, in a folder of its own.
pub struct Nginx {
    master: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(tools: &Tools, upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prefix = dir.path().display();
        let config = format!(
            "worker_processes auto;\n\
             pid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {prefix}/body;\n\
               proxy_temp_path {prefix}/proxy;\n\
               upstream bench {{ server {upstream}; keepalive 128; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://bench;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_buffering off;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let master = Command::new(&tools.nginx)
            .args(["-p", &prefix.to_string(), "-c", &path.display().to_string()])
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let nginx = Self {
            master,
            addr,
            _dir: dir,
        };
        // The master listens before it forks its workers (one per core): wait for all of
        // them, or a worker missing from `pids` would go uncounted.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        while nginx.pids().len() < 1 + cores {
            assert!(Instant::now() < deadline, "nginx did not start its workers");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok()),
            )
            .collect()
    }
}

impl Drop for Nginx {
    /// Stops the master and its workers: a master killed outright leaves its workers running
    /// (and spending CPU under every later measurement), so it is asked to stop them first.
    fn drop(&mut self) {
        let pids = self.pids();
        let signal = |pid: u32, signal: libc::c_int| {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) with a pid this benchmark started; no memory is involved.
                unsafe { libc::kill(pid, signal) };
            }
        };
        signal(self.master.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.master.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.master.wait();
    }
}

/// What oha measured of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests_per_second: f64,
    pub served: u64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `oha` posting `body` to `url` with `connections` connections for `duration`, at most
/// `rate` requests per second if given.
pub fn oha(
    tools: &Tools,
    url: &str,
    key: &str,
    body: &str,
    connections: usize,
    duration: Duration,
    rate: Option<u64>,
) -> Load {
    let mut command = Command::new(&tools.oha);
    command
        .args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-c", &connections.to_string()])
        .args(["-z", &format!("{}s", duration.as_secs().max(1))])
        .args(["-H", &format!("authorization: Bearer {key}")])
        .args(["-H", "content-type: application/json"])
        .args(["-d", body]);
    if let Some(rate) = rate {
        // Latency counted from each request's scheduled start (no coordinated omission).
        command.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    let output = command.arg(url).stderr(Stdio::null()).output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let seconds = |value: &Value| Duration::from_secs_f64(value.as_f64().unwrap_or(0.0));
    let summary = &report["summary"];
    let served = report["statusCodeDistribution"]["200"]
        .as_u64()
        .unwrap_or(0);
    Load {
        requests_per_second: summary["requestsPerSec"].as_f64().unwrap_or(0.0),
        served,
        p50: seconds(&report["latencyPercentiles"]["p50"]),
        p99: seconds(&report["latencyPercentiles"]["p99"]),
    }
}
