//! W3C Trace Context (`traceparent`, `tracestate`): read from a client, so Sluice's spans join
//! the caller's trace and honour its sampling decision; written for an upstream. A header
//! that is not a valid version-00 `traceparent` starts a new trace, as the recommendation
//! says, never an error.

use http::HeaderMap;
use sluice_shared::ids::write_hex;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The recommendation bounds `tracestate` at 32 members; this bounds its bytes.
const MAX_TRACESTATE: usize = 512;

/// The caller's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
    pub tracestate: Option<String>,
}

/// The parent a request names, if its `traceparent` is one (and only one).
pub fn parent(headers: &HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (trace_id, span_id, flags) = parse_traceparent(value.as_bytes())?;
    let tracestate = headers
        .get(TRACESTATE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= MAX_TRACESTATE)
        .map(str::to_owned);
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        tracestate,
    })
}

/// `version-traceid-parentid-flags`, lower-case hex. A future version may carry more after the
/// flags; version `ff` and all-zero ids are invalid.
fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let version = hex_byte(value.get(0..2)?)?;
    let exact = version == 0;
    if version == 0xff || value.len() < 55 || (exact && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if !exact && value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (n, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * n..5 + 2 * n])?;
    }
    let mut span_id = [0u8; 8];
    for (n, byte) in span_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * n..38 + 2 * n])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags))
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
        _ => None,
    }
}

/// The `traceparent` naming `span_id` in `trace_id`, written into a fixed buffer: every
/// attempt of a traced request sends one.
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; 55] {
    let mut text = [b'-'; 55];
    text[..2].copy_from_slice(b"00");
    write_hex(&mut text[3..35], trace_id);
    write_hex(&mut text[36..52], span_id);
    text[53..].copy_from_slice(if sampled { b"01" } else { b"00" });
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(values: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in values {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_the_parent_and_writes_back_the_same() {
        let found = parent(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "vendor=1")])).unwrap();
        assert!(found.sampled);
        assert_eq!(found.tracestate.as_deref(), Some("vendor=1"));
        assert_eq!(
            &traceparent(&found.trace_id, &found.span_id, true),
            VALID.as_bytes()
        );
        assert!(traceparent(&found.trace_id, &found.span_id, false).ends_with(b"-00"));
        let unsampled = VALID.replace("-01", "-00");
        assert!(
            !parent(&headers(&[(TRACEPARENT, &unsampled)]))
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn anything_else_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parent(&headers(&[(TRACEPARENT, bad)])), None, "{bad}");
        }
        assert_eq!(
            parent(&headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)])),
            None,
            "two parents are none"
        );
        let future = format!("01{}-more", &VALID[2..]);
        assert!(parent(&headers(&[(TRACEPARENT, &future)])).is_some());
    }
}
