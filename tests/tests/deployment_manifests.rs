//! What `deploy/` ships is checked against what the build makes (issue 16): every Kubernetes
//! manifest validates against the Kubernetes schemas offline (`kubernetes-validate`, installed
//! by the test command); the Dockerfile copies binaries `cargo build` produces, at the paths it
//! produces them, runs them as a non-root user and names two targets; every Sluice setting
//! the manifests and the compose file set is one the binaries read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn manifests() -> Vec<PathBuf> {
    let dir = repository().join("deploy/kubernetes");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    found.sort();
    assert!(found.len() >= 5, "{found:?}");
    found
}

/// The binaries the workspace builds: every `[[bin]]` name.
fn built_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for manifest in [
        "control-plane/Cargo.toml",
        "data-plane/Cargo.toml",
        "tests/Cargo.toml",
    ] {
        let text = read(manifest);
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                names.insert(name.trim_matches('"').to_owned());
            }
        }
    }
    names
}

#[test]
fn every_kubernetes_manifest_validates_against_the_schemas_offline() {
    let child = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg("--kubernetes-version")
        .arg("1.30.0")
        .args(manifests())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubernetes-validate (the test command installs it from PyPI)");
    let output = sluice_e2e::processes::wait_with_timeout(child, Duration::from_secs(120));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    // It names each document it checked; none may be skipped for an unknown kind.
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Secret",
        "PersistentVolumeClaim",
    ] {
        assert!(
            manifests().iter().any(|path| std::fs::read_to_string(path)
                .unwrap()
                .contains(&format!("kind: {kind}"))),
            "no {kind} shipped"
        );
    }
}

#[test]
fn the_dockerfile_ships_what_cargo_builds_as_a_non_root_user() {
    let dockerfile = read("deploy/Dockerfile");
    let binaries = built_binaries();
    for wanted in ["sluice-control-plane", "sluicectl", "sluice-proxy"] {
        assert!(
            binaries.contains(wanted),
            "{wanted} is not a [[bin]]: {binaries:?}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{wanted}")),
            "the Dockerfile does not take {wanted} from target/release"
        );
    }
    // Each path taken from target/release/ is a binary the build makes.
    for taken in dockerfile.split("target/release/").skip(1) {
        let name: String = taken
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(
            binaries.contains(&name),
            "target/release/{name} is not built"
        );
    }
    // Two targets; each runs a binary copied into it, as uid 10001.
    for (target, binary) in [
        ("control-plane", "sluice-control-plane"),
        ("proxy", "sluice-proxy"),
    ] {
        let stage = dockerfile
            .split("\nFROM ")
            .find(|stage| {
                stage
                    .lines()
                    .next()
                    .is_some_and(|l| l.ends_with(&format!("AS {target}")))
            })
            .unwrap_or_else(|| panic!("no target {target}"));
        assert!(
            stage.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
            "{stage}"
        );
        assert!(
            stage.contains(&format!("/out/{binary}")),
            "{target} does not copy {binary}"
        );
        assert!(stage.contains("USER 10001:10001"), "{target} runs as root");
    }
    assert!(dockerfile.contains("cargo build --release --locked --bins"));
}

/// Every `SLUICE_*` name set in `text` that the binaries do not read.
fn unknown_settings(text: &str) -> Vec<String> {
    let sources = [
        read("control-plane/src/settings.rs"),
        read("data-plane/src/settings.rs"),
        read("control-plane/src/bin/sluicectl/main.rs"),
    ]
    .concat();
    let mut unknown = Vec::new();
    for piece in text.split("SLUICE_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let full = format!("\"SLUICE_{name}\"");
        if !name.is_empty() && !sources.contains(&full) {
            unknown.push(format!("SLUICE_{name}"));
        }
    }
    unknown
}

#[test]
fn every_setting_deploy_sets_is_one_the_binaries_read() {
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            unknown_settings(&text),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
    }
    for file in ["deploy/local/compose.yaml", "deploy/Dockerfile"] {
        assert_eq!(
            unknown_settings(&read(file)),
            Vec::<String>::new(),
            "{file}"
        );
    }
    // The images the manifests run are the Dockerfile's targets.
    let compose = read("deploy/local/compose.yaml");
    assert!(compose.contains("target: control-plane") && compose.contains("target: proxy"));
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        for image in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
        {
            assert!(
                ["sluice-control-plane:latest", "sluice-proxy:latest"].contains(&image),
                "{}: {image}",
                path.display()
            );
        }
    }
}
