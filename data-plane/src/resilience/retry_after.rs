//! How long an upstream asked to be left alone, from the headers of its 429 or 5xx answer:
//! `retry-after-ms` (OpenAI, Azure), `Retry-After` in seconds or as an HTTP date (RFC 9110;
//! Anthropic, most providers), and else OpenAI's `x-ratelimit-reset-*` for the limit that ran
//! out (`1s`, `6m0s`, `20ms`); and Google's, which is in the error body's `RetryInfo`
//! (`"retryDelay": "30s"`).

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The wait the upstream asked for, if its answer says.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(millis) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(millis / 1000.0);
    }
    if let Some(value) = text("retry-after") {
        if let Ok(secs) = value.parse::<f64>() {
            return seconds(secs);
        }
        let at = httpdate::parse_http_date(value).ok()?;
        return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
    }
    // The reset of each limit that has run out; the later one is when both allow a request.
    ["requests", "tokens"]
        .into_iter()
        .filter(|limit| text(&format!("x-ratelimit-remaining-{limit}")) == Some("0"))
        .filter_map(|limit| text(&format!("x-ratelimit-reset-{limit}")).and_then(go_duration))
        .max()
}

/// The delay a Google error body's `RetryInfo` detail asks for (`"retryDelay": "1.5s"`).
pub fn google_retry_delay(body: &[u8]) -> Option<Duration> {
    const KEY: &[u8] = b"\"retryDelay\"";
    let at = memchr::memmem::find(body, KEY)?;
    let rest = body[at + KEY.len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start()
        .strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    seconds(text.strip_suffix('s')?.parse().ok()?)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// A duration in Go's notation, as OpenAI writes its resets: `1s`, `6m0s`, `1h2m3.5s`, `20ms`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    seconds(total)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                *name,
                HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        map
    }

    #[test]
    fn each_provider_form_is_read_and_milliseconds_come_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(
            read(&[("retry-after-ms", "1500"), ("retry-after", "2")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            read(&[("retry-after", "20")]),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            read(&[("retry-after", "0.5")]),
            Some(Duration::from_millis(500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            read(&[("retry-after", &later)]),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(read(&[("retry-after", &earlier)]), Some(Duration::ZERO));
        assert_eq!(read(&[("retry-after", "soon")]), None);
        assert_eq!(read(&[("retry-after", "-3")]), None);
        assert_eq!(read(&[]), None);
    }

    #[test]
    fn openai_resets_count_only_for_the_limit_that_ran_out() {
        let now = SystemTime::UNIX_EPOCH;
        let read = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        let both = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(read(&both), Some(Duration::from_secs(360)));
        let requests_only = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "1500"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(read(&requests_only), Some(Duration::from_millis(20)));
        let neither = [
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ];
        assert_eq!(read(&neither), None);
    }

    #[test]
    fn googles_retry_info_is_read_from_its_error_body() {
        let body = br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}"#;
        assert_eq!(google_retry_delay(body), Some(Duration::from_millis(1500)));
        for body in [
            &br#"{"error": {"code": 429}}"#[..],
            br#"{"retryDelay": 3}"#,
            br#"{"retryDelay": "3m"}"#,
            br#"{"retryDelay": "-1s"}"#,
        ] {
            assert_eq!(google_retry_delay(body), None);
        }
    }

    #[test]
    fn go_durations_parse_and_nonsense_does_not() {
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "5", "s", "1x", "1.2.3s", "-1s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }
}
