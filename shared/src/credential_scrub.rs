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
use memchr::memmem;
use zeroize::Zeroize;

/// What an echoed credential is replaced with.
pub const SCRUBBED: &str = "[redacted]";

/// A raw key shorter than this is not searched for: it would match ordinary text.
const MIN_RAW: usize = 4;
/// Encoded forms shorter than this are not searched for, for the same reason.
const MIN_ENCODED: usize = 8;

/// The forms of one credential to look for. Built per request from the opened key, dropped
/// (and wiped) with it; `Debug` shows nothing of it. The default looks for nothing (a keyless
/// upstream was sent no credential).
#[derive(Default)]
pub struct CredentialScrubber {
    needles: Vec<Vec<u8>>,
}

impl CredentialScrubber {
    pub fn new(secret: &str) -> Self {
        let raw = secret.as_bytes();
        let mut needles: Vec<Vec<u8>> = Vec::with_capacity(12);
        if raw.len() >= MIN_RAW {
            needles.push(raw.to_vec());
        }
        let mut add = |needle: Vec<u8>| {
            if needle.len() >= MIN_ENCODED && !needles.contains(&needle) {
                needles.push(needle);
            } else {
                let mut needle = needle;
                needle.zeroize();
            }
        };
        add(json_escaped(secret, false).into_bytes());
        add(json_escaped(secret, true).into_bytes());
        add(percent_encoded(raw).into_bytes());
        add(hex::encode(raw).into_bytes());
        add(hex::encode_upper(raw).into_bytes());
        for alignment in 0..3 {
            add(base64_core(&STANDARD_NO_PAD, raw, alignment));
            add(base64_core(&URL_SAFE_NO_PAD, raw, alignment));
        }
        // Longest first: a form that contains another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        Self { needles }
    }

    /// Whether `haystack` holds the credential in any form.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|needle| memmem::find(haystack, needle).is_some())
    }

    /// `haystack` with every form of the credential replaced by [`SCRUBBED`]; borrowed when
    /// there was none.
    pub fn scrub<'a>(&self, haystack: &'a [u8]) -> Cow<'a, [u8]> {
        let mut text = Cow::Borrowed(haystack);
        for needle in &self.needles {
            if memmem::find(&text, needle).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(text.len());
            let mut rest: &[u8] = &text;
            while let Some(at) = memmem::find(rest, needle) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(SCRUBBED.as_bytes());
                rest = &rest[at + needle.len()..];
            }
            out.extend_from_slice(rest);
            text = Cow::Owned(out);
        }
        text
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
        for needle in &self.needles {
            let Some(&first) = needle.first() else {
                continue;
            };
            let most = (needle.len() - 1).min(text.len());
            for k in (longest + 1..=most).rev() {
                let tail = &text[text.len() - k..];
                if tail[0] == first && tail == &needle[..k] {
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
        for needle in &mut self.needles {
            needle.zeroize();
        }
    }
}

impl fmt::Debug for CredentialScrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialScrubber([redacted])")
    }
}

/// The key as it reads inside a JSON string: `"` and `\\` escaped, and `/` too when
/// `solidus` (JSON allows both).
fn json_escaped(secret: &str, solidus: bool) -> String {
    let mut out = String::with_capacity(secret.len() + 8);
    for c in secret.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if solidus => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out
}

/// The key percent-encoded (everything but RFC 3986's unreserved characters).
fn percent_encoded(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &byte in raw {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The base64 characters that depend on the key's bytes alone when the key starts
/// `alignment` bytes into a longer encoded blob: the characters that also cover a neighbour's
/// bits are cut from both ends, so the core is found whatever surrounds the key.
fn base64_core(engine: &impl Engine, raw: &[u8], alignment: usize) -> Vec<u8> {
    let mut padded = vec![0_u8; alignment];
    padded.extend_from_slice(raw);
    let mut encoded = engine.encode(&padded).into_bytes();
    padded.zeroize();
    let first = (alignment * 8).div_ceil(6);
    let last = (alignment + raw.len()) * 8 / 6;
    let core = encoded
        .get(first..last.max(first))
        .unwrap_or_default()
        .to_vec();
    encoded.zeroize();
    core
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
