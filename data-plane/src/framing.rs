//! How an HTTP/1.1 message body ends (RFC 9112 §6–7), and its bytes decoded from the one
//! buffer of the connection that carries it: by length, in chunks (extensions skipped,
//! trailers bounded and dropped) or until the connection closes. The proxy's server reads
//! request bodies with it and its upstream client reads answers; both treat the bytes as
//! hostile, so a chunk that breaks the format fails the message instead of being guessed at.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line (with any extensions) or a trailer line may be this long at most.
const MAX_LINE: usize = 4 * 1024;
/// All of a message's trailers together.
const MAX_TRAILERS: usize = 16 * 1024;
/// Body slices shorter than this are copied out of the read buffer (an event of a stream, a
/// whole small request) rather than shared with it, so the buffer is reused by the next read.
const COPY_BELOW: usize = 4 * 1024;

/// Where a body stands: how much is left, or where inside its chunks the next byte falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Sized(u64),
    Chunked(Chunk),
    /// Until the peer closes the connection.
    UntilClose,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
}

impl Framing {
    pub const CHUNKED: Framing = Framing::Chunked(Chunk::Size);
}

/// A body's bytes break its framing; the message cannot be read, nor its connection reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// What one step of decoding the buffered bytes gave.
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

/// Decodes what `buffer` holds of a body framed as `framing`, moving the framing on.
pub fn decode(framing: &mut Framing, buffer: &mut BytesMut) -> Result<Step, Malformed> {
    let mut at = 0;
    let span = next_span(framing, buffer, &mut at);
    buffer.advance(at);
    Ok(match span? {
        Span::Data(len) => Step::Data(take(buffer, len)),
        Span::NeedMore => Step::NeedMore,
        Span::End => Step::End,
    })
}

/// [`decode`], with all the data `buffer` holds gathered into one piece: a stream's events
/// arrive many chunks to a read, and every piece costs each stage after this one (the scrub,
/// the event framing, the client's chunk) again. The buffer is advanced once, past all of
/// them. An error or the end after the data is left for the next call to find.
pub fn decode_ready(framing: &mut Framing, buffer: &mut BytesMut) -> Result<Step, Malformed> {
    let mut at = 0;
    let span = next_span(framing, buffer, &mut at);
    if !matches!(span, Ok(Span::Data(_))) {
        buffer.advance(at);
    }
    let first = match span? {
        Span::Data(len) => len,
        Span::NeedMore => return Ok(Step::NeedMore),
        Span::End => return Ok(Step::End),
    };
    // Another chunk can follow only past this one's CRLF.
    if !matches!(framing, Framing::Chunked(_)) || buffer.len() <= at + first + 2 {
        buffer.advance(at);
        return Ok(Step::Data(take(buffer, first)));
    }
    let mut joined = BytesMut::with_capacity(buffer.len() - at);
    joined.extend_from_slice(&buffer[at..at + first]);
    at += first;
    while let Ok(Span::Data(len)) = next_span(framing, buffer, &mut at) {
        joined.extend_from_slice(&buffer[at..at + len]);
        at += len;
    }
    buffer.advance(at);
    Ok(Step::Data(joined.freeze()))
}

/// Where the next data of a body lies in its buffer.
enum Span {
    /// `len` bytes from where the framing's own bytes end; the framing has moved past them,
    /// the caller consumes them.
    Data(usize),
    NeedMore,
    End,
}

/// The next span of `input` from `*at` under `framing`, moving `*at` past the framing's own
/// bytes before it (also when it fails, so a caller that consumes up to `*at` keeps the
/// framing and its input in step).
fn next_span(framing: &mut Framing, input: &[u8], at: &mut usize) -> Result<Span, Malformed> {
    loop {
        let rest = &input[(*at).min(input.len())..];
        match *framing {
            Framing::Done => return Ok(Span::End),
            Framing::UntilClose if rest.is_empty() => return Ok(Span::NeedMore),
            Framing::UntilClose => return Ok(Span::Data(rest.len())),
            Framing::Sized(left) | Framing::Chunked(Chunk::Data(left)) => {
                if rest.is_empty() {
                    return Ok(Span::NeedMore);
                }
                let len = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                let left = left - len as u64;
                *framing = match (*framing, left) {
                    (Framing::Sized(_), 0) => Framing::Done,
                    (Framing::Sized(_), left) => Framing::Sized(left),
                    (_, 0) => Framing::Chunked(Chunk::DataEnd),
                    (_, left) => Framing::Chunked(Chunk::Data(left)),
                };
                return Ok(Span::Data(len));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if rest.len() < 2 {
                    return Ok(Span::NeedMore);
                }
                if &rest[..2] != b"\r\n" {
                    return Err(Malformed("a chunk does not end in CRLF"));
                }
                *at += 2;
                *framing = Framing::CHUNKED;
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(end) = line_end(rest, MAX_LINE)? else {
                    return Ok(Span::NeedMore);
                };
                let size = chunk_size(&rest[..end - 1])?;
                *at += end + 1;
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Trailers(seen)) => {
                let Some(end) = line_end(rest, MAX_LINE)? else {
                    return Ok(Span::NeedMore);
                };
                *at += end + 1;
                let line_len = end - 1;
                let seen = seen + line_len;
                if seen > MAX_TRAILERS {
                    return Err(Malformed("its trailers are larger than 16 KiB"));
                }
                // Trailers carry nothing either side needs; the empty line ends them.
                *framing = if line_len == 0 {
                    Framing::Done
                } else {
                    Framing::Chunked(Chunk::Trailers(seen))
                };
            }
        }
    }
}

/// Where the next CRLF-terminated line of `buffer` ends: the index of its LF (its content is
/// `buffer[..end - 1]`); `None` while it has not all arrived.
fn line_end(buffer: &[u8], longest: usize) -> Result<Option<usize>, Malformed> {
    let Some(end) = buffer.iter().take(longest + 2).position(|&b| b == b'\n') else {
        return if buffer.len() > longest + 1 {
            Err(Malformed("a chunk line is too long"))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buffer[end - 1] != b'\r' {
        return Err(Malformed("a chunk line does not end in CRLF"));
    }
    Ok(Some(end))
}

/// The first `len` buffered bytes, consumed. Small ones are copied out, so that the buffer
/// stays its connection's alone and the next read reuses it; a large one is handed out as it
/// lies, and the next read gets a fresh buffer.
fn take(buffer: &mut BytesMut, len: usize) -> Bytes {
    if len < COPY_BELOW {
        let bytes = Bytes::copy_from_slice(&buffer[..len]);
        buffer.advance(len);
        bytes
    } else {
        buffer.split_to(len).freeze()
    }
}

/// A chunk-size line's size: hex digits, then optional extensions after `;` or whitespace
/// (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let malformed = Malformed("a chunk size");
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(malformed);
    }
    digits.iter().try_fold(0_u64, |size, &digit| {
        let value = char::from(digit).to_digit(16).ok_or(malformed)?;
        Ok(size << 4 | u64::from(value))
    })
}

/// A `Content-Length` value: ASCII digits only, no sign, no list, no overflow.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0_u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether a `Transfer-Encoding` value ends in `chunked`: only the last coding says how the
/// message ends.
pub fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a `Connection` value holds `token` (`close`, `keep-alive`).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// A header value `httparse` accepted, as an `http` value without its bytes checked again:
/// httparse admits exactly the bytes `HeaderValue` does (tab, 0x20–0x7E, 0x80–0xFF), so a
/// second pass over every value of every head only repeats the first.
pub fn parsed_header_value(value: Bytes) -> http::HeaderValue {
    // SAFETY: the constructor is `unsafe` only because it skips `http`'s byte check (an
    // invalid value would break no memory safety, only `http`'s invariant); every byte of
    // `value` passed httparse's identical check, which the test below holds to for each byte.
    unsafe { http::HeaderValue::from_maybe_shared_unchecked(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn httparse_admits_exactly_the_header_value_bytes_http_does() {
        for byte in 0..=u8::MAX {
            let head = [b"GET / HTTP/1.1\r\nx: a".as_slice(), &[byte], b"b\r\n\r\n"].concat();
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let parsed = httparse::Request::new(&mut headers).parse(&head);
            let admitted = matches!(parsed, Ok(httparse::Status::Complete(_)));
            // A line break ends the value instead: not a byte a value holds either way.
            if byte == b'\r' || byte == b'\n' {
                continue;
            }
            assert_eq!(
                admitted,
                http::HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok(),
                "byte {byte:#04x}"
            );
        }
    }

    type Decoder = fn(&mut Framing, &mut BytesMut) -> Result<Step, Malformed>;

    /// What `decode` and `decode_ready` each make of `bytes`, which must be the same.
    fn decode_all(framing: Framing, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let one = decode_all_with(decode, framing, bytes);
        assert_eq!(one, decode_all_with(decode_ready, framing, bytes));
        one
    }

    fn decode_all_with(
        decoder: Decoder,
        framing: Framing,
        bytes: &[u8],
    ) -> Result<Vec<u8>, String> {
        let mut framing = framing;
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match decoder(&mut framing, &mut buffer).map_err(|e| e.to_string())? {
                Step::Data(data) => out.extend_from_slice(&data),
                Step::End => return Ok(out),
                Step::NeedMore => return Err("needs more".to_owned()),
            }
        }
    }

    #[test]
    fn ready_chunks_come_as_one_piece_whatever_the_reads() {
        let body = b"5\r\nhello\r\n1;x=y\r\n \r\n5\r\nworld\r\n0\r\nx-t: 1\r\n\r\n";
        let mut whole = BytesMut::from(&body[..]);
        let mut framing = Framing::CHUNKED;
        assert!(
            matches!(decode_ready(&mut framing, &mut whole), Ok(Step::Data(data)) if data == "hello world")
        );
        assert!(matches!(
            decode_ready(&mut framing, &mut whole),
            Ok(Step::End)
        ));
        for read in 1..body.len() {
            let (mut framing, mut buffer, mut out) =
                (Framing::CHUNKED, BytesMut::new(), Vec::new());
            for piece in body.chunks(read) {
                buffer.extend_from_slice(piece);
                while let Ok(Step::Data(data)) = decode_ready(&mut framing, &mut buffer) {
                    out.extend_from_slice(&data);
                }
            }
            assert_eq!(out, b"hello world", "reads of {read}");
            assert_eq!(framing, Framing::Done, "reads of {read}");
        }
        // Good chunks before a broken one come out; the break is found next.
        let mut broken = BytesMut::from(&b"2\r\nok\r\n2\r\nokXX"[..]);
        let mut framing = Framing::CHUNKED;
        assert!(
            matches!(decode_ready(&mut framing, &mut broken), Ok(Step::Data(data)) if data == "okok")
        );
        assert!(decode_ready(&mut framing, &mut broken).is_err());
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers_and_malformed_ones_fail() {
        let decoded = decode_all(
            Framing::CHUNKED,
            b"5;name=value\r\nhello\r\n1\r\n!\r\n0\r\nx-checksum: abc\r\n\r\n",
        );
        assert_eq!(decoded.unwrap(), b"hello!");
        // Large slices leave the read buffer as they lie, small ones are copied: both whole.
        let large = vec![b'x'; 10_000];
        assert_eq!(
            decode_all(Framing::Sized(large.len() as u64), &large).unwrap(),
            large
        );
        let mut chunked = format!("{:x}\r\n", large.len()).into_bytes();
        chunked.extend_from_slice(&large);
        chunked.extend_from_slice(b"\r\n3\r\nend\r\n0\r\n\r\n");
        let mut expected = large.clone();
        expected.extend_from_slice(b"end");
        assert_eq!(decode_all(Framing::CHUNKED, &chunked).unwrap(), expected);
        for malformed in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
        ] {
            let decoded = decode_all(Framing::CHUNKED, malformed);
            assert!(
                decoded.as_ref().is_err_and(|error| error != "needs more"),
                "{:?}: {decoded:?}",
                String::from_utf8_lossy(malformed)
            );
        }
        // A size line that never ends is refused once it is longer than any real one.
        let endless = [b'1'; 8 * 1024];
        assert!(
            decode_all(Framing::CHUNKED, &endless).is_err_and(|error| error.contains("too long"))
        );
    }

    #[test]
    fn header_values_read_as_the_rfc_says() {
        assert_eq!(content_length(b"42"), Some(42));
        for bad in [&b""[..], b"-1", b"4 2", b"5, 5", b"99999999999999999999999"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
        assert!(ends_chunked(b"gzip, Chunked "));
        assert!(!ends_chunked(b"chunked, gzip"));
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
