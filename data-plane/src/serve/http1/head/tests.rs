//! Heads byte by byte: well-formed requests parse however they are split, with the framing
//! their bodies need; every malformed head is refused with its reason.

use bytes::BytesMut;

use super::*;
use crate::framing::{Step, decode};

/// A request as read: method, path, body.
type Read = (String, String, Vec<u8>);

/// Feeds `input` to a head reader in pieces of `piece` bytes, as a socket might deliver it,
/// decoding each body by its framing; returns each request's method, path and body, and the
/// refusal that ended the input, if any.
fn read_all(input: &[u8], piece: usize) -> (Vec<Read>, Option<Refusal>) {
    let mut reader = HeadReader::default();
    let mut buffered = BytesMut::new();
    let mut requests = Vec::new();
    let mut body: Option<(String, String, Framing, Vec<u8>)> = None;
    for piece in input.chunks(piece.max(1)) {
        buffered.extend_from_slice(piece);
        loop {
            if let Some((_, _, framing, bytes)) = body.as_mut() {
                match decode(framing, &mut buffered) {
                    Ok(Step::Data(data)) => bytes.extend_from_slice(&data),
                    Ok(Step::End) => {
                        if let Some((method, path, _, bytes)) = body.take() {
                            requests.push((method, path, bytes));
                        }
                    }
                    Ok(Step::NeedMore) => break,
                    Err(malformed) => panic!("a well-formed body: {malformed}"),
                }
                continue;
            }
            match reader.read(&buffered) {
                Ok(Some((head, len))) => {
                    let _ = buffered.split_to(len);
                    body = Some((
                        head.parts.method.to_string(),
                        head.parts.uri.to_string(),
                        head.body,
                        Vec::new(),
                    ));
                }
                Ok(None) => break,
                Err(refused) => return (requests, Some(refused.refusal)),
            }
        }
    }
    (requests, None)
}

const GOOD: &[(&[u8], &str, &[u8])] = &[
    (b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n", "/v1/models", b""),
    (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n{\"a\":\"b\"}\r\n",
        "/v1/chat/completions",
        b"{\"a\":\"b\"}\r\n",
    ),
    (
        b"POST /v1/embeddings HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\nB\r\n:\"0123456\"}\r\n0\r\nx-trailer: t\r\n\r\n",
        "/v1/embeddings",
        b"{\"a\":\"0123456\"}",
    ),
    (
        b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "/v1/messages",
        b"",
    ),
    (b"\r\nGET /healthz HTTP/1.0\r\n\r\n", "/healthz", b""),
    (
        b"GET /readyz HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
        "/readyz",
        b"",
    ),
];

#[test]
fn well_formed_requests_parse_however_they_are_split() {
    let pipelined: Vec<u8> = GOOD.iter().flat_map(|(raw, _, _)| raw.to_vec()).collect();
    for piece in [1, 2, 3, 7, 64, 4096] {
        for (raw, path, body) in GOOD {
            let (requests, refused) = read_all(raw, piece);
            assert_eq!(refused, None, "{}", String::from_utf8_lossy(raw));
            assert_eq!(requests.len(), 1, "piece {piece}: {requests:?}");
            assert_eq!(requests[0].1, *path);
            assert_eq!(requests[0].2, *body, "piece {piece}");
        }
        let (requests, refused) = read_all(&pipelined, piece);
        assert_eq!(refused, None);
        let paths: Vec<&str> = requests.iter().map(|(_, path, _)| path.as_str()).collect();
        let expected: Vec<&str> = GOOD.iter().map(|(_, path, _)| *path).collect();
        assert_eq!(paths, expected, "piece {piece}");
    }
}

#[test]
fn a_head_says_whether_the_connection_is_kept_and_the_client_waits_to_send() {
    let head = |raw: &[u8]| match HeadReader::default().read(raw) {
        Ok(Some((head, _))) => head,
        other => panic!("{}: {other:?}", String::from_utf8_lossy(raw)),
    };
    assert!(head(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
    assert!(!head(b"GET / HTTP/1.1\r\nconnection: keep-alive, close\r\n\r\n").keep_alive);
    assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(
        !head(b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").keep_alive
    );
    let waits = head(b"POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n");
    assert!(waits.expects_continue);
    assert_eq!(waits.body, Framing::Sized(5));
    assert!(!head(b"POST / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expects_continue);
    let parsed = head(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nx-a: b\r\nx-a: c\r\n\r\n");
    assert_eq!(parsed.parts.version, Version::HTTP_11);
    assert_eq!(parsed.parts.uri.path(), "/v1/chat/completions");
    assert_eq!(parsed.parts.uri.query(), Some("x=1"));
    let values: Vec<_> = parsed.parts.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["b", "c"]);
}

#[test]
fn malformed_heads_are_refused_with_their_reason() {
    let many: String = (0..101).map(|n| format!("x-h{n}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
    let cases: Vec<(&[u8], Refusal)> = vec![
        (b"GE T / HTTP/1.1\r\n\r\n", Refusal::Version),
        (b"G@T / HTTP/1.1\r\n\r\n", Refusal::Method),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            Refusal::Method,
        ),
        (b"GET /v1/\x01models HTTP/1.1\r\n\r\n", Refusal::Target),
        (b"GET / HTTP/1.2\r\n\r\n", Refusal::Version),
        (b"GET / HTTP/2.0\r\n\r\n", Refusal::Version),
        (
            b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n",
            Refusal::HeaderName,
        ),
        (
            b"GET / HTTP/1.1\r\nx-a: b\x01c\r\n\r\n",
            Refusal::HeaderValue,
        ),
        (
            b"GET / HTTP/1.1\r\nx-a: b\x00c\r\n\r\n",
            Refusal::HeaderValue,
        ),
        (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", Refusal::HeaderName),
        (
            b"GET / HTTP/1.1\r\nx-a: b\r\rx\r\n\r\n",
            Refusal::HeaderValue,
        ),
        (many.as_bytes(), Refusal::TooManyHeaders),
        (huge.as_bytes(), Refusal::HeadTooLarge),
        (
            b"POST / HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
            Refusal::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            Refusal::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n",
            Refusal::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            Refusal::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            Refusal::ContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            Refusal::TransferEncoding,
        ),
        (
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            Refusal::TransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            Refusal::AmbiguousLength,
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Refusal::AmbiguousLength,
        ),
    ];
    for (input, expected) in cases {
        for piece in [1, 3, input.len()] {
            let (_, refused) = read_all(input, piece);
            // Cut short, a head may end before the reader has seen its fault.
            if piece == input.len() || refused.is_some() {
                assert_eq!(
                    refused,
                    Some(expected),
                    "{}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
    // A refusal after a good request: the good one is read first.
    let mut both = GOOD[1].0.to_vec();
    both.extend_from_slice(b"GET / HTTP/9.9\r\n\r\n");
    let (requests, refused) = read_all(&both, 5);
    assert_eq!(requests.len(), 1);
    assert_eq!(refused, Some(Refusal::Version));
}

#[test]
fn a_refusal_is_in_the_shape_of_the_endpoint_it_was_for() {
    assert_eq!(
        shape_of(Some("/v1beta/models/g:generateContent")),
        ErrorShape::Gemini
    );
    assert_eq!(shape_of(Some("/v1/messages")), ErrorShape::Anthropic);
    assert_eq!(shape_of(None), ErrorShape::OpenAi);
    let refused = HeadReader::default()
        .read(b"POST /v1/messages HTTP/1.1\r\ncontent-length: x\r\n\r\n")
        .expect_err("refused");
    assert_eq!(
        refused,
        Refused {
            refusal: Refusal::ContentLength,
            shape: ErrorShape::Anthropic
        }
    );
}
