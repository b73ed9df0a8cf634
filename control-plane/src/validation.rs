//! Checks on admin input. Each failure names the field, so the API can answer
//! `INVALID_ARGUMENT` with something an operator can act on.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_shared::network_reach::{self, Reach};
use sluice_shared::upstream_connect::Resolve;
use url::{Host, Url};

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// What a provider's timeout is when none is given, and the most it may be.
pub const DEFAULT_TIMEOUT_MS: u32 = 60_000;
pub const MAX_TIMEOUT_MS: u32 = 600_000;
/// Models a virtual key may be limited to.
pub const MAX_ALLOWED_MODELS: usize = 256;

const MAX_NAME: usize = 63;
const MAX_DISPLAY_NAME: usize = 200;
const MAX_SECRET: usize = 8 * 1024;
const MAX_EXTRA_HEADERS: usize = 32;

/// Money and instants are never negative (prices in micro-dollars, expiries in µs).
pub fn non_negative(field: &str, value: i64) -> Result<i64, InvalidField> {
    if value < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    Ok(value)
}

/// A provider's timeout in milliseconds: 0 takes the default.
pub fn timeout_ms(field: &str, value: u32) -> Result<u32, InvalidField> {
    match value {
        0 => Ok(DEFAULT_TIMEOUT_MS),
        v if v > MAX_TIMEOUT_MS => Err(invalid(
            field,
            format!("must be at most {MAX_TIMEOUT_MS} ms"),
        )),
        v => Ok(v),
    }
}

pub use sluice_shared::otel_settings::MAX_CONTENT_CAPTURE_BYTES;

/// How much of its prompts and completions a project has recorded on its traces: 0 (none) up
/// to [`MAX_CONTENT_CAPTURE_BYTES`].
pub fn content_capture_bytes(field: &str, value: u32) -> Result<u32, InvalidField> {
    if value > MAX_CONTENT_CAPTURE_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_CONTENT_CAPTURE_BYTES} bytes (0 records no content)"),
        ));
    }
    Ok(value)
}

/// Retry settings as a provider or model holds them: attempts from 1 to 10, a backoff of at
/// most a minute growing to at most ten, a wait asked for of at most ten minutes.
pub fn retry_settings(
    settings: crate::store::RetrySettings,
) -> Result<crate::store::RetrySettings, InvalidField> {
    let within = |field: &str, value: Option<u32>, range: std::ops::RangeInclusive<u32>| match value
    {
        Some(v) if !range.contains(&v) => Err(invalid(
            &format!("retry.{field}"),
            format!("must be between {} and {}", range.start(), range.end()),
        )),
        _ => Ok(()),
    };
    within("max_attempts", settings.max_attempts, 1..=10)?;
    within(
        "attempts_per_deployment",
        settings.attempts_per_deployment,
        1..=10,
    )?;
    within("attempts_per_key", settings.attempts_per_key, 1..=10)?;
    within("backoff_base_ms", settings.backoff_base_ms, 1..=60_000)?;
    within(
        "backoff_max_ms",
        settings.backoff_max_ms,
        1..=MAX_TIMEOUT_MS,
    )?;
    within(
        "max_retry_after_ms",
        settings.max_retry_after_ms,
        0..=MAX_TIMEOUT_MS,
    )?;
    if let (Some(base), Some(max)) = (settings.backoff_base_ms, settings.backoff_max_ms)
        && base > max
    {
        return Err(invalid(
            "retry.backoff_base_ms",
            "must not be above retry.backoff_max_ms",
        ));
    }
    Ok(settings)
}

/// The longest total an operator may give a request: an hour (a long reasoning stream).
pub const MAX_TOTAL_TIMEOUT_MS: u32 = 3_600_000;
/// The longest a connection may take to open, TLS included.
pub const MAX_CONNECT_TIMEOUT_MS: u32 = 60_000;

/// Upstream timeouts as a provider or model holds them, each at least a millisecond: connect
/// within a minute, first byte and idle within [`MAX_TIMEOUT_MS`], the total within an hour.
pub fn timeout_settings(
    settings: crate::store::TimeoutSettings,
) -> Result<crate::store::TimeoutSettings, InvalidField> {
    let within = |field: &str, value: Option<u32>, max: u32| match value {
        Some(v) if !(1..=max).contains(&v) => Err(invalid(
            &format!("timeouts.{field}"),
            format!("must be between 1 and {max}"),
        )),
        _ => Ok(()),
    };
    within("connect_ms", settings.connect_ms, MAX_CONNECT_TIMEOUT_MS)?;
    within("first_byte_ms", settings.first_byte_ms, MAX_TIMEOUT_MS)?;
    within("idle_ms", settings.idle_ms, MAX_TIMEOUT_MS)?;
    within("total_ms", settings.total_ms, MAX_TOTAL_TIMEOUT_MS)?;
    Ok(settings)
}

/// The models a virtual key is limited to: each a resource name, at most
/// [`MAX_ALLOWED_MODELS`].
pub fn model_names(field: &str, models: &[String]) -> Result<(), InvalidField> {
    if models.len() > MAX_ALLOWED_MODELS {
        return Err(invalid(
            field,
            format!("at most {MAX_ALLOWED_MODELS} models"),
        ));
    }
    models
        .iter()
        .enumerate()
        .try_for_each(|(i, model)| name(&format!("{field}[{i}]"), model))
}

/// Resource names: they appear in paths like `ORG/PROJECT/KEY`, so no `/`, no spaces.
pub fn name(field: &str, value: &str) -> Result<(), InvalidField> {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(invalid(field, "is required"));
    };
    if value.len() > MAX_NAME {
        return Err(invalid(
            field,
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    if !first.is_ascii_alphanumeric()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            field,
            "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

const MAX_PROXY_ID: usize = 128;

/// A proxy's self-chosen id, as it appears in the fleet view and on usage batches.
pub fn proxy_id(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() || value.len() > MAX_PROXY_ID || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("is required, at most {MAX_PROXY_ID} printable characters"),
        ));
    }
    Ok(())
}

/// Free text shown to humans.
pub fn display_name(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.chars().count() > MAX_DISPLAY_NAME {
        return Err(invalid(
            field,
            format!("must be at most {MAX_DISPLAY_NAME} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A credential that will travel in an HTTP header.
pub fn secret(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.len() > MAX_SECRET {
        return Err(invalid(
            field,
            format!("must be at most {MAX_SECRET} bytes"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, "must be printable ASCII without spaces"));
    }
    Ok(())
}

/// Where a provider lives. The URL fixes where provider keys are sent, so it is the first
/// place SSRF is stopped (the connector, which judges every resolved address at connect time,
/// is the last): https only; loopback, private and unique-local addresses (and plain http)
/// only with `allow_private_network`; link-local, metadata, unspecified and reserved
/// addresses, userinfo, queries, fragments and other schemes never. Every address form is
/// judged by what it reaches: `url` reads decimal, octal, hex and short IPv4 forms as the
/// address they spell, and IPv6 forms that carry an IPv4 address by that address.
pub fn base_url(field: &str, value: &str, allow_private_network: bool) -> Result<(), InvalidField> {
    let url = Url::parse(value).map_err(|e| invalid(field, format!("is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private_network => {}
        "http" => {
            return Err(invalid(
                field,
                "must use https (plain http only with allow_private_network)",
            ));
        }
        other => return Err(invalid(field, format!("scheme '{other}' is not allowed"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, "must not carry user information"));
    }
    if url.fragment().is_some() {
        return Err(invalid(field, "must not carry a fragment"));
    }
    if url.query().is_some() {
        return Err(invalid(field, "must not carry a query string"));
    }
    let reach = match url.host() {
        Some(Host::Ipv4(ip)) => network_reach::of_ipv4(ip),
        Some(Host::Ipv6(ip)) => network_reach::of_ipv6(ip),
        Some(Host::Domain(domain)) => network_reach::of_name(domain).unwrap_or(Reach::Public),
        None => return Err(invalid(field, "must name a host")),
    };
    permitted(field, reach, allow_private_network)
}

fn permitted(field: &str, reach: Reach, allow_private_network: bool) -> Result<(), InvalidField> {
    match reach {
        _ if reach.permitted(allow_private_network) => Ok(()),
        Reach::Private => Err(invalid(
            field,
            "points to a loopback or private address: set allow_private_network to permit it",
        )),
        _ => Err(invalid(
            field,
            "points to a link-local, metadata, unspecified, reserved or multicast address",
        )),
    }
}

/// How long a provider's host name may take to resolve before it is accepted unresolved.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// [`base_url`]'s check of the addresses a host *name* resolves to, from here: a name that
/// resolves to loopback or private addresses needs `allow_private_network`, one that resolves
/// to a link-local or metadata address is refused. A name that does not resolve from the
/// control plane is accepted — proxies may see another DNS — since every proxy judges each
/// address again when it connects.
pub async fn base_url_resolution(
    field: &str,
    value: &str,
    allow_private_network: bool,
    resolver: &dyn Resolve,
) -> Result<(), InvalidField> {
    let Ok(url) = Url::parse(value) else {
        return Ok(());
    };
    let (Some(Host::Domain(name)), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Ok(());
    };
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(name.to_owned(), port));
    let Ok(Ok(addresses)) = resolved.await else {
        return Ok(());
    };
    let worst = addresses
        .iter()
        .map(|address| network_reach::of_ip(address.ip()))
        .max()
        .unwrap_or(Reach::Public);
    permitted(field, worst, allow_private_network).map_err(|error| InvalidField {
        message: format!(
            "{name} resolves to {}: {}",
            describe(&addresses),
            error.message
        ),
        ..error
    })
}

fn describe(addresses: &[std::net::SocketAddr]) -> String {
    addresses
        .iter()
        .map(|a| a.ip().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Headers Sluice sets itself or that carry credentials: those go through provider keys.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

pub fn extra_headers(field: &str, headers: &BTreeMap<String, String>) -> Result<(), InvalidField> {
    if headers.len() > MAX_EXTRA_HEADERS {
        return Err(invalid(
            field,
            format!("at most {MAX_EXTRA_HEADERS} headers"),
        ));
    }
    for (header, value) in headers {
        let lower = header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(
                field,
                format!("'{header}' is not a valid header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-sluice-") {
            return Err(invalid(
                field,
                format!("'{header}' is reserved: credentials belong in provider keys"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(invalid(
                field,
                format!("the value of '{header}' is not a valid header value"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "acme",
            "a",
            "web-2",
            "gpt-4o-mini",
            "Team_A.prod",
            &"x".repeat(63),
        ] {
            assert_eq!(name("name", good), Ok(()), "{good}");
        }
        for bad in ["", "-x", "a/b", "a b", "é", "x'; DROP", &"x".repeat(64)] {
            let error = name("name", bad).unwrap_err();
            assert_eq!(error.field, "name");
        }
    }

    #[test]
    fn base_urls() {
        let ok = |url: &str, allow: bool| base_url("base_url", url, allow);
        assert!(ok("https://api.openai.com/v1", false).is_ok());
        assert!(ok("https://example.openai.azure.com", false).is_ok());
        assert!(ok("https://[2001:db8::1]/v1", false).is_ok());

        for private in [
            "https://127.0.0.1:8000",
            "https://127.1",
            "https://2130706433",
            "https://0x7f000001",
            "https://0x7f.1",
            "https://0177.0.0.1",
            "https://10.0.0.5",
            "https://172.16.3.4",
            "https://192.168.1.1",
            "https://100.64.0.1",
            "https://localhost:8000",
            "https://LOCALHOST.",
            "https://vllm.localhost",
            "https://localhost.localdomain/",
            "https://ip6-localhost/",
            "https://[::1]:8000",
            "https://[fd00::1]",
            "https://[::ffff:10.0.0.1]",
            "https://[::ffff:127.0.0.1]",
            "https://[::127.0.0.1]",
            "https://[::7f00:1]",
            "https://[64:ff9b::7f00:1]",
            "https://[2002:7f00:1::]",
            "http://vllm.internal:8000",
        ] {
            assert!(ok(private, false).is_err(), "{private} needs the flag");
            assert!(ok(private, true).is_ok(), "{private} allowed with the flag");
        }
        for forbidden in [
            "https://169.254.169.254/latest/meta-data",
            "http://169.254.169.254",
            "https://2852039166",
            "https://0xa9fea9fe",
            "https://[fe80::1]",
            "https://[::ffff:169.254.169.254]",
            "https://[::a9fe:a9fe]",
            "https://[64:ff9b::a9fe:a9fe]",
            "https://[2002:a9fe:a9fe::]",
            "https://192.0.0.192",
            "https://100.100.100.200",
            "https://168.63.129.16",
            "https://[fd00:ec2::254]",
            "https://metadata.google.internal",
            "https://0.0.0.0",
            "https://0",
            "https://[::]",
            "https://224.0.0.1",
            "https://user:pass@api.openai.com",
            "https://api.openai.com#frag",
            "https://api.openai.com/v1?key=x",
            "file:///etc/passwd",
            "gopher://example.com",
            "ftp://example.com",
            "not a url",
        ] {
            assert!(
                ok(forbidden, true).is_err(),
                "{forbidden} is always refused"
            );
        }
    }

    /// Answers names from a table, as a hostile DNS (or `/etc/hosts`) might.
    struct Table(&'static [(&'static str, &'static str)]);

    impl Resolve for Table {
        fn resolve(
            &self,
            host: String,
            port: u16,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send,
            >,
        > {
            let found: Vec<std::net::SocketAddr> = self
                .0
                .iter()
                .filter(|(name, _)| *name == host)
                .map(|(_, ip)| std::net::SocketAddr::new(ip.parse().unwrap(), port))
                .collect();
            Box::pin(async move {
                if found.is_empty() {
                    Err(std::io::ErrorKind::NotFound.into())
                } else {
                    Ok(found)
                }
            })
        }
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let dns = Table(&[
            ("vm", "127.0.0.1"),
            ("127.0.0.1.nip.io", "127.0.0.1"),
            ("169.254.169.254.nip.io", "169.254.169.254"),
            ("oracle.example", "192.0.0.192"),
            ("alibaba.example", "100.100.100.200"),
            ("aws6.example", "fd00:ec2::254"),
            ("mixed.example", "8.8.8.8"),
            ("mixed.example", "10.1.2.3"),
            ("api.example.com", "8.8.4.4"),
        ]);
        let check = |url: &'static str, allow: bool| {
            let dns = &dns;
            async move {
                base_url("base_url", url, allow)?;
                base_url_resolution("base_url", url, allow, dns).await
            }
        };
        for private in [
            "https://vm:8443/v1",
            "https://127.0.0.1.nip.io/v1",
            "https://mixed.example",
        ] {
            let error = check(private, false).await.unwrap_err();
            assert!(
                error.message.contains("allow_private_network"),
                "{private}: {error}"
            );
            assert!(error.message.contains("resolves to"), "{private}: {error}");
            assert!(check(private, true).await.is_ok(), "{private}");
        }
        for forbidden in [
            "https://169.254.169.254.nip.io/latest",
            "https://oracle.example",
            "https://alibaba.example",
            "https://aws6.example",
        ] {
            assert!(check(forbidden, false).await.is_err(), "{forbidden}");
            assert!(
                check(forbidden, true).await.is_err(),
                "{forbidden} even with the flag"
            );
        }
        assert!(check("https://api.example.com/v1", false).await.is_ok());
        // Not resolvable from here: accepted, the proxies judge every connection.
        assert!(
            check("https://only-proxies-see-this.example", false)
                .await
                .is_ok()
        );
    }

    #[test]
    fn headers() {
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(extra_headers("h", &map("x-team", "research")).is_ok());
        for reserved in ["Authorization", "x-api-key", "X-Sluice-Anything", "Host"] {
            assert!(
                extra_headers("h", &map(reserved, "v")).is_err(),
                "{reserved}"
            );
        }
        assert!(extra_headers("h", &map("bad header", "v")).is_err());
        assert!(extra_headers("h", &map("x-ok", "line\nbreak")).is_err());
    }

    #[test]
    fn proxy_ids() {
        assert!(proxy_id("proxy_id", "edge-1.eu").is_ok());
        for bad in ["", "a\nb", &"x".repeat(129)] {
            assert_eq!(proxy_id("proxy_id", bad).unwrap_err().field, "proxy_id");
        }
    }

    #[test]
    fn secrets() {
        assert!(secret("secret", "sk-abc123").is_ok());
        assert!(secret("secret", "").is_err());
        assert!(secret("secret", "with space").is_err());
        assert!(secret("secret", "line\n").is_err());
    }

    #[test]
    fn amounts_timeouts_and_model_lists() {
        assert_eq!(non_negative("price", 0), Ok(0));
        assert_eq!(non_negative("price", 150_000), Ok(150_000));
        let negative = non_negative("input_price_micros_per_mtok", -1).unwrap_err();
        assert_eq!(
            negative.to_string(),
            "input_price_micros_per_mtok: must not be negative"
        );
        assert_eq!(timeout_ms("timeout_ms", 0), Ok(DEFAULT_TIMEOUT_MS));
        assert_eq!(timeout_ms("timeout_ms", MAX_TIMEOUT_MS), Ok(MAX_TIMEOUT_MS));
        assert!(timeout_ms("timeout_ms", MAX_TIMEOUT_MS + 1).is_err());
        let models = |n: usize| (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>();
        assert!(model_names("allowed_models", &models(MAX_ALLOWED_MODELS)).is_ok());
        assert!(model_names("allowed_models", &models(MAX_ALLOWED_MODELS + 1)).is_err());
        let bad = model_names("allowed_models", &["ok".to_owned(), "no/slash".to_owned()]);
        assert_eq!(bad.unwrap_err().field, "allowed_models[1]");
    }
}
