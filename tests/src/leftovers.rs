//! What a stopped stack left behind — both processes' logs and every file of their data
//! directories — for proving that a secret reached none of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control_plane::ControlPlane;
use crate::proxy;

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
