//! Where a provider may point, through the real admin API (`sluicectl` against a running
//! control plane): every address form that reaches loopback, private networks, link-local or
//! cloud metadata services — decimal, octal, hex and short IPv4, IPv6 forms that carry an IPv4
//! address, names every system maps to loopback, and this machine's own `/etc/hosts` names,
//! which only resolving tells — is refused at create and at update without
//! `--allow-private-network`, and metadata and unspecified addresses are refused even with it.
//! (What the proxy and the key check do at connect time, when DNS answers otherwise, is tested
//! with a hostile resolver in `sluice_shared::upstream_connect` and the proxy's upstream client.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_e2e::{ControlPlane, ControlPlaneBuilder};

const PRIVATE: &[&str] = &[
    "https://127.0.0.1:8443/v1",
    "https://127.1/v1",
    "https://2130706433/v1",
    "https://0x7f000001/v1",
    "https://0x7f.1/v1",
    "https://0177.0.0.1/v1",
    "https://10.1.2.3/v1",
    "https://[::1]/v1",
    "https://[::ffff:127.0.0.1]/v1",
    "https://[::127.0.0.1]/v1",
    "https://[::7f00:1]/v1",
    "https://[64:ff9b::7f00:1]/v1",
    "https://[2002:7f00:1::]/v1",
    "https://[fd12:3456::1]/v1",
    "https://localhost/v1",
    "https://localhost.localdomain/v1",
    "https://ip6-localhost/v1",
    "https://vllm.localhost/v1",
];

const ALWAYS_REFUSED: &[&str] = &[
    "https://169.254.169.254/latest/meta-data",
    "https://2852039166/",
    "https://[::ffff:169.254.169.254]/",
    "https://[::a9fe:a9fe]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[2002:a9fe:a9fe::]/",
    "https://192.0.0.192/",
    "https://100.100.100.200/",
    "https://168.63.129.16/",
    "https://[fd00:ec2::254]/",
    "https://[fe80::1]/",
    "https://metadata.google.internal/",
    "https://0.0.0.0/",
    "https://0/",
    "https://[::]/",
];

/// Names this machine's `/etc/hosts` maps to loopback, beyond the ones every system has:
/// only resolving them shows where they lead.
fn hosts_file_loopback_names() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let address = words.next()?;
            address
                .starts_with("127.")
                .then(|| words.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .filter(|name| !name.contains("localhost") && !name.contains('.'))
        .collect()
}

fn create(cp: &ControlPlane, name: &str, url: &str, allow: bool) -> sluice_e2e::CtlOutput {
    let provider = format!("acme/{name}");
    let mut args = vec![
        "provider",
        "create",
        provider.as_str(),
        "--type",
        "vllm",
        "--base-url",
        url,
    ];
    if allow {
        args.push("--allow-private-network");
    }
    cp.ctl(&args)
}

#[test]
fn no_address_form_or_name_points_a_provider_inward_without_leave() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    cp.ctl(&["org", "create", "acme"]).ok();
    let mut private: Vec<String> = PRIVATE.iter().map(|u| (*u).to_owned()).collect();
    private.extend(
        hosts_file_loopback_names()
            .into_iter()
            .map(|name| format!("https://{name}:8443/v1")),
    );

    for (n, url) in private.iter().enumerate() {
        let refused = create(&cp, &format!("p{n}"), url, false);
        assert!(
            refused.err().contains("allow_private_network"),
            "{url}: {}",
            refused.stderr
        );
        create(&cp, &format!("p{n}"), url, true).ok();
        // Taking the permission away re-checks the URL.
        let kept = cp.ctl(&[
            "provider",
            "update",
            &format!("acme/p{n}"),
            "--allow-private-network",
            "false",
        ]);
        assert!(
            kept.err().contains("allow_private_network"),
            "{url}: {}",
            kept.stderr
        );
    }
    for (n, url) in ALWAYS_REFUSED.iter().enumerate() {
        for allow in [false, true] {
            let refused = create(&cp, &format!("m{n}"), url, allow);
            assert!(!refused.success, "{url} (allowed: {allow}) was accepted");
        }
    }

    // Update: a public provider cannot be pointed inward either.
    create(&cp, "public", "https://api.openai.com/v1", false).ok();
    for url in private
        .iter()
        .map(String::as_str)
        .chain(ALWAYS_REFUSED.iter().copied())
    {
        let refused = cp.ctl(&["provider", "update", "acme/public", "--base-url", url]);
        assert!(!refused.success, "update to {url} was accepted");
    }
    let listed = cp.ctl(&["-o", "json", "provider", "list", "acme"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), private.len() + 1, "{listed:?}");
    let public = listed.iter().find(|p| p["name"] == "public").unwrap();
    assert_eq!(public["base_url"], "https://api.openai.com/v1");
}
