//! Support for the end-to-end tests: start the real binaries on loopback port 0, wait for
//! them within a bound, capture everything they print, and run `sluicectl` like an operator.
//!
//! The binaries are found next to the test executable's target directory; `.ci/test` builds
//! them first (`cargo build --workspace --bins`), since Cargo only builds binaries of the
//! package under test.

// Test support: a failed step should stop the test loudly, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod console_session;
pub mod control_plane;
pub mod leftovers;
pub mod mock_openai;
pub mod otlp_receiver;
pub mod pki;
pub mod processes;
pub mod proxy;
pub mod stacks;
pub mod translated;
pub mod wire;

pub use control_plane::{Acme, ControlPlane, ControlPlaneBuilder, CtlOutput, ctl_at, ctl_with};
pub use leftovers::{Leftovers, contains_bytes, files_under};
pub use processes::{Captured, binary, binary_dir, raise_open_files_limit, spawn_listening};
pub use stacks::{
    FamilyStack, LiveStack, await_usage, caught_up_proxy, caught_up_proxy_with, family_stack,
    live_stack, live_stack_with, store_of, usage_rows,
};

/// `text` percent-encoded for a URL's query or a form body (unreserved characters kept).
pub fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Waits (polling every 100 ms, at most `seconds`) until `check` holds; fails naming `what`.
pub async fn eventually(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
