//! Starting the real binaries: where they are, spawning one and waiting (bounded) for the log
//! line that says it listens, capturing everything it prints, and waiting for one to exit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Spawns `command`, captures everything it prints, and waits (bounded) for the log line
/// containing `marker` and its address; returns the child, that address and the capture.
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
                // As text (`addr=…`) or JSON (`"addr":"…"`) logs say it.
                let text = || line.split("addr=").nth(1)?.split_whitespace().next();
                let json = || line.split("\"addr\":\"").nth(1)?.split('"').next();
                let addr = line
                    .contains(&marker)
                    .then(|| text().or_else(json))
                    .flatten();
                if let Some(addr) = addr {
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

/// Waits for `child`, reading its output as it goes (a full pipe would otherwise stall it).
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
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

/// Lets this test process hold `wanted` open files (sockets), raising its soft limit toward
/// the hard one; fails the test, naming the limit, when the hard limit is lower.
pub fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0,
        "getrlimit"
    );
    assert!(
        limit.rlim_max >= wanted,
        "this test holds {wanted} sockets open, above this machine's hard limit on open files ({}): raise it (ulimit -Hn)",
        limit.rlim_max
    );
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: `limit` is a valid rlimit, its soft limit within its hard one.
        assert_eq!(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) },
            0,
            "setrlimit"
        );
    }
}
