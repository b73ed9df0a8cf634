//! Removes a credential from bytes an upstream sent back. Upstreams echo the key they were
//! given (OpenAI's "Incorrect API key provided: …", a misconfigured custom server, a hostile
//! one), and whatever leaves the process — an error body, a header, a message Sluice quotes, a
//! log line — must not carry it. An echo is found in the forms it takes on the wire: as sent,
//! JSON- or percent-escaped, hex (either case), and base64 (standard or URL-safe, at any
//! alignment inside a longer blob, so `base64("user:" + key)` is caught too).

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroize;

/// What an echoed credential is replaced with.
pub const SCRUBBED: &str = "[redacted]";

/// A raw key shorter than this is not searched for: it would match ordinary text.
const MIN_RAW: usize = 4;
/// Encoded forms shorter than this are not searched for, for the same reason.
const MIN_ENCODED: usize = 8;
/// As sent, two JSON escapings, percent-encoded, hex twice, base64 twice at three alignments.
const MOST_FORMS: usize = 12;

/// The forms of one credential to look for. Built per request from the opened key, dropped
/// (and wiped) with it; `Debug` shows nothing of it. The default looks for nothing (a keyless
/// upstream was sent no credential).
///
/// It runs on every answer, so it is built with one allocation and searches in one pass: a
/// table of the bytes that begin a form picks the few places worth comparing.
#[derive(Default)]
pub struct CredentialScrubber {
    /// Every form, back to back.
    bytes: Vec<u8>,
    /// Where each form lies in `bytes`, longest first (a form that contains another is
    /// replaced whole).
    forms: [(u32, u32); MOST_FORMS],
    count: usize,
    /// Bit `b` set: some form begins with byte `b`.
    first: [u64; 4],
}

impl CredentialScrubber {
    pub fn new(secret: &str) -> Self {
        let raw = secret.as_bytes();
        let mut scrubber = Self {
            bytes: Vec::with_capacity(raw.len() * 16 + 8),
            ..Self::default()
        };
        if raw.len() < MIN_RAW {
            return scrubber;
        }
        scrubber.bytes.extend_from_slice(raw);
        scrubber.keep(0, raw.len());
        for solidus in [false, true] {
            let start = scrubber.bytes.len();
            json_escaped(secret, solidus, &mut scrubber.bytes);
            scrubber.keep(start, MIN_ENCODED);
        }
        let start = scrubber.bytes.len();
        percent_encoded(raw, &mut scrubber.bytes);
        scrubber.keep(start, MIN_ENCODED);
        for digits in [b"0123456789abcdef", b"0123456789ABCDEF"] {
            let start = scrubber.bytes.len();
            for byte in raw {
                scrubber.bytes.push(digits[usize::from(byte >> 4)]);
                scrubber.bytes.push(digits[usize::from(byte & 0xf)]);
            }
            scrubber.keep(start, MIN_ENCODED);
        }
        let mut padded = vec![0_u8; 2 + raw.len()];
        padded[2..].copy_from_slice(raw);
        for alignment in 0..3 {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let start = scrubber.bytes.len();
                base64_core(
                    engine,
                    &padded[2 - alignment..],
                    alignment,
                    &mut scrubber.bytes,
                );
                scrubber.keep(start, MIN_ENCODED);
            }
        }
        padded.zeroize();
        let count = scrubber.count;
        scrubber.forms[..count].sort_by_key(|&(_, len)| std::cmp::Reverse(len));
        scrubber
    }

    /// Keeps the form that was just appended from `start` if it is long enough and new;
    /// otherwise takes it back off.
    fn keep(&mut self, start: usize, shortest: usize) {
        let len = self.bytes.len() - start;
        let form = &self.bytes[start..];
        let known = (0..self.count).any(|i| self.form(i) == form);
        if len < shortest.max(1) || known || self.count == MOST_FORMS {
            self.bytes[start..].zeroize();
            self.bytes.truncate(start);
            return;
        }
        let first = form[0];
        self.first[usize::from(first >> 6)] |= 1 << (first & 63);
        // Offsets fit: a key is at most 8 KiB, its forms a few times that.
        self.forms[self.count] = (start as u32, len as u32);
        self.count += 1;
    }

    fn form(&self, index: usize) -> &[u8] {
        let (start, len) = self.forms[index];
        &self.bytes[start as usize..(start + len) as usize]
    }

    /// The first form of the credential in `haystack` at or after `from`: where, and how long.
    fn find(&self, haystack: &[u8], from: usize) -> Option<(usize, usize)> {
        if self.count == 0 {
            return None;
        }
        for at in from..haystack.len() {
            let byte = haystack[at];
            if self.first[usize::from(byte >> 6)] & (1 << (byte & 63)) == 0 {
                continue;
            }
            let rest = &haystack[at..];
            if let Some(len) = (0..self.count)
                .map(|i| self.form(i))
                .find(|form| rest.starts_with(form))
                .map(<[u8]>::len)
            {
                return Some((at, len));
            }
        }
        None
    }

    /// Whether `haystack` holds the credential in any form.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.find(haystack, 0).is_some()
    }

    /// `haystack` with every form of the credential replaced by [`SCRUBBED`]; borrowed when
    /// there was none.
    pub fn scrub<'a>(&self, haystack: &'a [u8]) -> Cow<'a, [u8]> {
        let Some((mut at, mut len)) = self.find(haystack, 0) else {
            return Cow::Borrowed(haystack);
        };
        let mut out = Vec::with_capacity(haystack.len());
        let mut copied = 0;
        loop {
            out.extend_from_slice(&haystack[copied..at]);
            out.extend_from_slice(SCRUBBED.as_bytes());
            copied = at + len;
            match self.find(haystack, copied) {
                Some(next) => (at, len) = next,
                None => break,
            }
        }
        out.extend_from_slice(&haystack[copied..]);
        Cow::Owned(out)
    }

    /// [`Self::scrub`] for text. Replacing ASCII needles in UTF-8 keeps it UTF-8; a needle that
    /// is not ASCII (a key never is) could split a character, which the lossy decode mends.
    pub fn scrub_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.scrub(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
            }),
        }
    }

    /// The length of the longest tail of `text` that could be the start of a form of the
    /// credential (so the rest of it may come in the next chunk of a stream).
    fn partial_tail(&self, text: &[u8]) -> usize {
        let mut longest = 0;
        for index in 0..self.count {
            let form = self.form(index);
            let most = (form.len() - 1).min(text.len());
            for k in (longest + 1..=most).rev() {
                let tail = &text[text.len() - k..];
                if tail[0] == form[0] && tail == &form[..k] {
                    longest = k;
                    break;
                }
            }
        }
        longest
    }
}

/// [`CredentialScrubber`] over a stream that arrives in chunks: a form of the credential split
/// between two chunks is caught by holding back a chunk's tail while it could be the start of
/// one. Streams of events end their chunks on a line break, which starts no credential, so in
/// practice nothing is held and chunks pass as they came.
#[derive(Debug, Default)]
pub struct StreamScrubber {
    scrubber: CredentialScrubber,
    held: Vec<u8>,
}

impl StreamScrubber {
    pub fn new(scrubber: CredentialScrubber) -> Self {
        Self {
            scrubber,
            held: Vec::new(),
        }
    }

    /// What of `chunk` (after anything held from the last one) can be sent now, scrubbed.
    pub fn next<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        let scrubbed = if self.held.is_empty() {
            self.scrubber.scrub(chunk)
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(chunk);
            let clean = self.scrubber.scrub(&joined).into_owned();
            joined.zeroize();
            Cow::Owned(clean)
        };
        let keep = self.scrubber.partial_tail(&scrubbed);
        if keep == 0 {
            return scrubbed;
        }
        let send = scrubbed.len() - keep;
        self.held.extend_from_slice(&scrubbed[send..]);
        match scrubbed {
            Cow::Borrowed(chunk) => Cow::Borrowed(&chunk[..send]),
            Cow::Owned(mut clean) => {
                clean.truncate(send);
                Cow::Owned(clean)
            }
        }
    }

    /// The end of the stream: what was held back, which turned out to be no credential.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

impl Drop for StreamScrubber {
    fn drop(&mut self) {
        self.held.zeroize();
    }
}

impl Drop for CredentialScrubber {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for CredentialScrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialScrubber([redacted])")
    }
}

/// The key as it reads inside a JSON string: `"` and `\\` escaped, and `/` too when
/// `solidus` (JSON allows both).
fn json_escaped(secret: &str, solidus: bool, out: &mut Vec<u8>) {
    for &byte in secret.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' if solidus => out.extend_from_slice(b"\\/"),
            byte => out.push(byte),
        }
    }
}

/// The key percent-encoded (everything but RFC 3986's unreserved characters).
fn percent_encoded(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in raw {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        }
    }
}

/// The base64 characters that depend on the key's bytes alone when the key starts
/// `alignment` bytes into a longer encoded blob (`padded` is the key behind that many zero
/// bytes): the characters that also cover a neighbour's bits are cut from both ends, so the
/// core is found whatever surrounds the key.
fn base64_core(engine: &impl Engine, padded: &[u8], alignment: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + padded.len().div_ceil(3) * 4, 0);
    let written = engine.encode_slice(padded, &mut out[start..]).unwrap_or(0);
    let first = (alignment * 8).div_ceil(6);
    let end = (padded.len() * 8 / 6).min(written);
    let kept = end.saturating_sub(first);
    if kept > 0 {
        out.copy_within(start + first..start + end, start);
    }
    out[start + kept..].zeroize();
    out.truncate(start + kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-canary-0123456789abcdef";

    fn scrubbed(text: &str) -> String {
        CredentialScrubber::new(KEY).scrub_str(text).into_owned()
    }

    #[test]
    fn every_echoed_form_is_removed() {
        let scrubber = CredentialScrubber::new(KEY);
        let forms = [
            KEY.to_owned(),
            format!("Bearer {KEY}"),
            hex::encode(KEY),
            hex::encode_upper(KEY),
            base64::engine::general_purpose::STANDARD.encode(KEY),
            base64::engine::general_purpose::URL_SAFE.encode(KEY),
            // Inside longer blobs, at each alignment.
            base64::engine::general_purpose::STANDARD.encode(format!("user:{KEY}")),
            base64::engine::general_purpose::STANDARD.encode(format!("ab{KEY}xyz")),
            base64::engine::general_purpose::STANDARD.encode(format!("a{KEY}")),
        ];
        for form in forms {
            let text =
                format!(r#"{{"error":{{"message":"Incorrect API key provided: {form}."}}}}"#);
            assert!(scrubber.found_in(text.as_bytes()), "{form}");
            let clean = scrubber.scrub_str(&text);
            assert!(!scrubber.found_in(clean.as_bytes()), "{form}: {clean}");
            assert!(!clean.contains(KEY));
            assert!(clean.contains(SCRUBBED));
            // What is left is still the JSON it was.
            assert!(
                serde_json::from_str::<serde_json::Value>(&clean).is_ok(),
                "{clean}"
            );
        }
    }

    #[test]
    fn text_without_the_key_is_borrowed_untouched() {
        let scrubber = CredentialScrubber::new(KEY);
        let text = "Incorrect API key provided: sk-...cdef.";
        assert!(matches!(scrubber.scrub_str(text), Cow::Borrowed(_)));
        assert!(!scrubber.found_in(text.as_bytes()));
    }

    #[test]
    fn escaped_echoes_are_removed() {
        let key = r#"k3y/with"odd\chars"#;
        let scrubber = CredentialScrubber::new(key);
        let json = serde_json::json!({ "message": key }).to_string();
        assert!(!scrubber.scrub_str(&json).contains("odd"), "{json}");
        let slashes = r#"{"message":"k3y\/with\"odd\\chars"}"#;
        assert!(!scrubber.scrub_str(slashes).contains("odd"));
        let percent = "key=k3y%2Fwith%22odd%5Cchars";
        assert!(!scrubber.scrub_str(percent).contains("odd"));
    }

    #[test]
    fn every_occurrence_goes_and_tiny_keys_do_not_eat_text() {
        assert_eq!(
            scrubbed(&format!("{KEY} and {KEY}")),
            "[redacted] and [redacted]"
        );
        let tiny = CredentialScrubber::new("ab");
        assert_eq!(tiny.scrub_str("about abba"), "about abba");
    }

    #[test]
    fn a_key_split_between_chunks_is_caught_and_clean_chunks_pass_untouched() {
        let text = format!("data: {{\"message\":\"key {KEY} here\"}}\n\n");
        for split in 1..text.len() {
            let mut stream = StreamScrubber::new(CredentialScrubber::new(KEY));
            let mut out = stream.next(&text.as_bytes()[..split]).into_owned();
            out.extend_from_slice(&stream.next(&text.as_bytes()[split..]));
            out.extend(stream.finish());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(
                out, "data: {\"message\":\"key [redacted] here\"}\n\n",
                "split at {split}"
            );
        }
        let mut stream = StreamScrubber::new(CredentialScrubber::new(KEY));
        let event = b"data: {\"choices\":[]}\n\n";
        assert!(matches!(stream.next(event), Cow::Borrowed(same) if same == event));
        // A tail that only looked like the start of the key comes out at the end.
        assert_eq!(stream.next(b"ends with sk-can").as_ref(), b"ends with ");
        assert_eq!(stream.finish(), b"sk-can");
    }

    #[test]
    fn debug_shows_nothing() {
        let shown = format!("{:?}", CredentialScrubber::new(KEY));
        assert!(!shown.contains("canary"), "{shown}");
    }
}
