//! The LIVE gate, made explicit: a key the upstream refused (health `invalid_credentials` or
//! `no_model_access`) does not make a model ready, and the last usable key of a LIVE project's
//! model cannot be revoked or deleted silently — `FAILED_PRECONDITION` names the project and
//! model, unless the operator forces it, which the audit log records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_e2e::ControlPlaneBuilder;
use sluice_e2e::mock_openai::MockOpenAi;

#[test]
fn live_needs_a_key_that_works_and_keeps_it() {
    let upstream = MockOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    // The mock refuses keys containing "invalid": a key check marks this one so.
    cp.seed_acme(&upstream.base_url(), Some("sk-invalid-gate"), &[]);
    let checked = cp.ctl(&["provider-key", "test", "acme/openai/main"]);
    assert!(
        format!("{}{}", checked.stdout, checked.stderr).contains("invalid"),
        "{checked:?}"
    );
    let refused = cp.ctl(&["project", "set-posture", "acme/web", "live"]);
    assert!(refused.err().contains("gpt-4o-mini"), "{}", refused.stderr);

    // A working key: LIVE. Then it is the only usable one, so it cannot go quietly.
    cp.ctl_stdin(&["provider-key", "add", "acme/openai/good"], "sk-good-gate")
        .ok();
    cp.go_live("acme/web");
    for verb in ["revoke", "delete"] {
        let refused = cp.ctl(&["provider-key", verb, "acme/openai/good"]);
        let message = refused.err();
        assert!(
            message.contains("acme/web") && message.contains("gpt-4o-mini"),
            "{verb}: {message}"
        );
        assert!(message.contains("--force"), "{message}");
    }
    // The refused key may go: it was not serving anything.
    cp.ctl(&["provider-key", "revoke", "acme/openai/main"]).ok();
    // With a second good key, the first may go too.
    cp.ctl_stdin(
        &["provider-key", "add", "acme/openai/spare"],
        "sk-spare-gate",
    )
    .ok();
    cp.ctl(&["provider-key", "revoke", "acme/openai/good"]).ok();
    // The last one, forced: done, and the audit log says what it left behind.
    cp.ctl(&["provider-key", "revoke", "acme/openai/spare", "--force"])
        .ok();
    let events = cp
        .ctl(&[
            "-o",
            "json",
            "audit",
            "list",
            "--action",
            "provider_key.revoke",
        ])
        .json();
    let forced = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "acme/openai/spare")
        .cloned()
        .unwrap();
    let detail = forced["detail"].as_str().unwrap();
    assert!(
        detail.contains("forced") && detail.contains("acme/web (gpt-4o-mini)"),
        "{forced}"
    );
}
