//! Checks on admin input. Each failure names the field, so the API can answer
//! `INVALID_ARGUMENT` with something an operator can act on.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

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

const MAX_NAME: usize = 63;
const MAX_DISPLAY_NAME: usize = 200;
const MAX_SECRET: usize = 8 * 1024;
const MAX_EXTRA_HEADERS: usize = 32;

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

/// Where a provider lives. The URL fixes where provider keys are sent, so it is the place
/// SSRF is stopped: https only; loopback, private and unique-local addresses (and plain
/// http) only with `allow_private_network`; link-local and metadata endpoints, userinfo,
/// queries, fragments and other schemes never.
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
        Some(Host::Ipv4(ip)) => ipv4_reach(ip),
        Some(Host::Ipv6(ip)) => ipv6_reach(ip),
        Some(Host::Domain(domain)) => domain_reach(domain),
        None => return Err(invalid(field, "must name a host")),
    };
    match reach {
        Reach::Public => Ok(()),
        Reach::Private if allow_private_network => Ok(()),
        Reach::Private => Err(invalid(
            field,
            "points to a loopback or private address: set allow_private_network to permit it",
        )),
        Reach::Forbidden => Err(invalid(
            field,
            "points to a link-local, metadata, unspecified or multicast address",
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reach {
    Public,
    Private,
    Forbidden,
}

fn ipv4_reach(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || a == 0
    {
        Reach::Forbidden
    } else if ip.is_loopback() || ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Reach::Private
    } else {
        Reach::Public
    }
}

fn ipv6_reach(ip: Ipv6Addr) -> Reach {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return ipv4_reach(v4);
    }
    let first = ip.segments()[0];
    if ip.is_unspecified() || ip.is_multicast() || (first & 0xffc0) == 0xfe80 {
        Reach::Forbidden
    } else if ip.is_loopback() || (first & 0xfe00) == 0xfc00 {
        Reach::Private
    } else {
        Reach::Public
    }
}

fn domain_reach(domain: &str) -> Reach {
    let domain = domain.trim_end_matches('.');
    if matches!(
        domain,
        "metadata" | "metadata.google.internal" | "instance-data"
    ) || domain.ends_with(".metadata.google.internal")
    {
        Reach::Forbidden
    } else if domain == "localhost" || domain.ends_with(".localhost") {
        Reach::Private
    } else {
        Reach::Public
    }
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
            "https://10.0.0.5",
            "https://172.16.3.4",
            "https://192.168.1.1",
            "https://100.64.0.1",
            "https://localhost:8000",
            "https://vllm.localhost",
            "https://[::1]:8000",
            "https://[fd00::1]",
            "https://[::ffff:10.0.0.1]",
            "http://vllm.internal:8000",
        ] {
            assert!(ok(private, false).is_err(), "{private} needs the flag");
            assert!(ok(private, true).is_ok(), "{private} allowed with the flag");
        }
        for forbidden in [
            "https://169.254.169.254/latest/meta-data",
            "http://169.254.169.254",
            "https://[fe80::1]",
            "https://[::ffff:169.254.169.254]",
            "https://metadata.google.internal",
            "https://0.0.0.0",
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
}
