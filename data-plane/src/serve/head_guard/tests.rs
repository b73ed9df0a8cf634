//! The framer byte by byte: well-formed requests pass untouched however they are split;
//! every malformed head is refused with its reason.

use super::*;

/// Feeds `input` to a framer in pieces of `piece` bytes, as a socket might deliver it, and
/// returns what it passes and its refusal, if any.
fn frame(input: &[u8], piece: usize) -> (Vec<u8>, Option<Refusal>) {
    let mut framer = Framer::new();
    let mut buffered: Vec<u8> = Vec::new();
    let mut passed = Vec::new();
    for piece in input.chunks(piece.max(1)) {
        buffered.extend_from_slice(piece);
        loop {
            match framer.step(&buffered) {
                Step::Pass(n) if n > 0 => {
                    passed.extend(buffered.drain(..n));
                }
                Step::Refuse(refusal, _) => return (passed, Some(refusal)),
                _ => break,
            }
        }
    }
    (passed, None)
}

const GOOD: &[&[u8]] = &[
    b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n{\"a\":\"b\"}\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\nA\r\n:\"0123456\"}\r\n0\r\nx-trailer: t\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"\r\nGET /healthz HTTP/1.0\r\n\r\n",
    b"GET /readyz HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
];

#[test]
fn well_formed_requests_pass_byte_for_byte_however_they_are_split() {
    let pipelined: Vec<u8> = GOOD.concat();
    for piece in [1, 2, 3, 7, 64, 4096] {
        for request in GOOD.iter().copied().chain([pipelined.as_slice()]) {
            let (passed, refused) = frame(request, piece);
            assert_eq!(refused, None, "{}", String::from_utf8_lossy(request));
            assert_eq!(passed, request, "piece {piece}");
        }
    }
}

#[test]
fn http2_passes_untouched() {
    let mut h2 = H2_PREFACE.to_vec();
    h2.extend_from_slice(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage \x01 that is not http/1");
    for piece in [1, 5, 100] {
        let (passed, refused) = frame(&h2, piece);
        assert_eq!(refused, None);
        assert_eq!(passed, h2);
    }
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
            let (_, refused) = frame(input, piece);
            // Cut short, a head may end before the framer has seen its fault.
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
    // A refusal after a good request: the good one passes first.
    let mut both = GOOD[1].to_vec();
    both.extend_from_slice(b"GET / HTTP/9.9\r\n\r\n");
    let (passed, refused) = frame(&both, 5);
    assert_eq!(passed, GOOD[1]);
    assert_eq!(refused, Some(Refusal::Version));
}

#[test]
fn a_chunked_body_it_cannot_follow_is_left_to_hyper() {
    let input = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nGET / HTTP/9\r\n\r\n";
    let (passed, refused) = frame(input, 4);
    assert_eq!(refused, None);
    assert_eq!(passed, input);
}

#[test]
fn refusals_round_trip_through_the_synthetic_path_and_cannot_be_forged() {
    for refusal in Refusal::ALL {
        let request = synthetic_request(refusal, "anthropic");
        let text = String::from_utf8_lossy(&request);
        let path = text.split(' ').nth(1).unwrap_or_default();
        assert_eq!(read_refused(path), Some((refusal, ErrorShape::Anthropic)));
    }
    assert_eq!(
        read_refused("/.sluice/refused/00000000/method/openai"),
        None
    );
    assert_eq!(shape_of(Some("/v1beta/models/g:generateContent")), "gemini");
    assert_eq!(shape_of(Some("/v1/messages")), "anthropic");
    assert_eq!(shape_of(None), "openai");
}
