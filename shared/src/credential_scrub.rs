//! Removes a credential from bytes an upstream sent back. Upstreams echo the key they were
//! given (OpenAI's "Incorrect API key provided: …", a misconfigured custom server, a hostile
//! one), and whatever leaves the process — an error body, a header, a message Sluice quotes, a
//! log line — must not carry it. An echo is found in the forms it takes on the wire: as sent,
//! JSON- or percent-escaped, hex (either case), and base64 (standard or URL-safe, at any
//! alignment inside a longer blob, so `base64("user:" + key)` is caught too).

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

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
/// It runs on every answer, and nearly every answer holds no credential, so what it builds up
/// front is only what rules a place out: the first four bytes of each form (their first two
/// looked for sixteen places at a time), and the bytes any form can hold. The forms themselves
/// are built the first time a place begins with one of those four bytes.
#[derive(Default)]
pub struct CredentialScrubber {
    /// The key, for building [`Forms`] when they are first needed.
    secret: Vec<u8>,
    /// The first four bytes of each form (little-endian), and how many there are.
    prefixes: [u32; MOST_FORMS],
    prefix_count: usize,
    /// The first two bytes of each prefix: the places worth a look at all.
    leading: LeadingPairs,
    /// Bit `b` set: byte `b` can appear in some form (what a held-back tail must consist of).
    alphabet: [u64; 4],
    forms: OnceLock<Forms>,
}

/// The first four bytes of every form of a key depend on its first six bytes alone: each
/// encoding goes byte by byte, and base64's core begins within them at every alignment.
const LEADING_BYTES: usize = 6;

/// The bytes the escaped and encoded forms can hold whatever the key: escapes, hex digits
/// and both base64 alphabets.
const ENCODED_ALPHABET: [u64; 4] = {
    let bytes = b"\\%0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz+/-_";
    let mut bits = [0_u64; 4];
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at] as usize;
        bits[byte / 64] |= 1 << (byte % 64);
        at += 1;
    }
    bits
};

fn set_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

fn bit(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

impl CredentialScrubber {
    pub fn new(secret: &str) -> Self {
        let raw = secret.as_bytes();
        let mut scrubber = Self::default();
        if raw.len() < MIN_RAW {
            return scrubber;
        }
        scrubber.secret = raw.to_vec();
        let mut add = |word: [u8; 4]| {
            let word = u32::from_le_bytes(word);
            if !scrubber.prefixes[..scrubber.prefix_count].contains(&word) {
                scrubber.prefixes[scrubber.prefix_count] = word;
                scrubber.prefix_count += 1;
                scrubber
                    .leading
                    .add([word.to_le_bytes()[0], word.to_le_bytes()[1]]);
            }
        };
        if raw.len() >= LEADING_BYTES {
            leading_words(raw, &mut add);
        } else {
            // Too short to work the forms out from their start: build them (they are short).
            let forms = Forms::build(raw, 4);
            for index in 0..forms.count {
                if let [a, b, c, d, ..] = *forms.form(index) {
                    add([a, b, c, d]);
                }
            }
        }
        scrubber.alphabet = ENCODED_ALPHABET;
        for &byte in raw {
            set_bit(&mut scrubber.alphabet, usize::from(byte));
        }
        scrubber
    }

    fn forms(&self) -> &Forms {
        self.forms
            .get_or_init(|| Forms::build(&self.secret, MIN_ENCODED))
    }

    /// The first form of the credential in `haystack` at or after `from`: where, and how long.
    fn find(&self, haystack: &[u8], from: usize) -> Option<(usize, usize)> {
        if self.prefix_count == 0 {
            return None;
        }
        let prefixes = &self.prefixes[..self.prefix_count];
        let rest = haystack.get(from..)?;
        // Every form is at least four bytes long.
        let starts = rest.len().checked_sub(3)?;
        self.leading.each_place(rest, starts, |offset| {
            let window = &rest[offset..offset + 4];
            let word = u32::from_le_bytes([window[0], window[1], window[2], window[3]]);
            if !prefixes.contains(&word) {
                return None;
            }
            let at = from + offset;
            self.forms().starting(&haystack[at..]).map(|len| (at, len))
        })
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
        match text.last() {
            // Events end on a line break, which no form holds.
            Some(&last) if self.prefix_count > 0 && bit(&self.alphabet, usize::from(last)) => {
                self.forms().partial_tail(text)
            }
            _ => 0,
        }
    }
}

/// The distinct first two bytes of the forms' prefixes (a dozen at most), looked for sixteen
/// places at a time: answers are kilobytes of text that nearly always hold no form, and a test
/// of every place one by one was the largest part of relaying a stream. A single first byte
/// let through every `c` of `chat.completion.chunk` for a key whose base64 begins with one.
#[derive(Default)]
struct LeadingPairs {
    pairs: [[u8; 2]; MOST_FORMS],
    count: usize,
    /// Bit `b` set: some pair begins with byte `b` (what the byte-at-a-time tail tests first).
    firsts: [u64; 4],
}

impl LeadingPairs {
    fn add(&mut self, pair: [u8; 2]) {
        if !self.pairs[..self.count].contains(&pair) {
            self.pairs[self.count] = pair;
            self.count += 1;
            set_bit(&mut self.firsts, usize::from(pair[0]));
        }
    }

    /// Calls `check` with each place below `end` where one of these pairs begins, in order,
    /// until it returns something.
    fn each_place<T>(
        &self,
        haystack: &[u8],
        end: usize,
        mut check: impl FnMut(usize) -> Option<T>,
    ) -> Option<T> {
        let pairs = &self.pairs[..self.count];
        let end = end.min(haystack.len().saturating_sub(1));
        let mut block = 0;
        // Each wide pass first fills a register per pair, which a text too short for one of
        // its blocks (a header value, most of an event) would pay for nothing.
        #[cfg(target_arch = "x86_64")]
        if haystack.len() >= 33 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            if let Some(done) = unsafe { avx2_places(pairs, haystack, end, &mut block, &mut check) }
            {
                return done;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if block + 17 <= haystack.len() && block < end {
            // SAFETY: SSE2 is part of every x86_64 CPU, and each load reads the sixteen bytes
            // from `block` or `block + 1`, which the loop keeps inside `haystack`; the loads
            // need no alignment.
            unsafe {
                use std::arch::x86_64::{
                    __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
                    _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
                };
                let mut wanted = [(_mm_setzero_si128(), _mm_setzero_si128()); MOST_FORMS];
                for (lanes, &[first, second]) in wanted.iter_mut().zip(pairs) {
                    *lanes = (_mm_set1_epi8(first as i8), _mm_set1_epi8(second as i8));
                }
                let wanted = &wanted[..pairs.len()];
                let at =
                    |place: usize| _mm_loadu_si128(haystack.as_ptr().add(place).cast::<__m128i>());
                while block < end && block + 17 <= haystack.len() {
                    let (firsts, seconds) = (at(block), at(block + 1));
                    let mut hits = _mm_setzero_si128();
                    for &(first, second) in wanted {
                        let pair = _mm_and_si128(
                            _mm_cmpeq_epi8(firsts, first),
                            _mm_cmpeq_epi8(seconds, second),
                        );
                        hits = _mm_or_si128(hits, pair);
                    }
                    let mask = _mm_movemask_epi8(hits) as u32;
                    if let Some(done) = each_hit(mask, block, end, &mut check) {
                        return done;
                    }
                    block += 16;
                }
            }
        }
        (block..end)
            .filter(|&place| {
                bit(&self.firsts, usize::from(haystack[place]))
                    && pairs.contains(&[haystack[place], haystack[place + 1]])
            })
            .find_map(check)
    }
}

/// Calls `check` with each place a bit of `mask` marks (bit `i`: place `block + i`), in
/// order: `Some` with the answer once `check` finds one or a place reaches `end`.
fn each_hit<T>(
    mut mask: u32,
    block: usize,
    end: usize,
    check: &mut impl FnMut(usize) -> Option<T>,
) -> Option<Option<T>> {
    while mask != 0 {
        let place = block + mask.trailing_zeros() as usize;
        if place >= end {
            return Some(None);
        }
        if let Some(found) = check(place) {
            return Some(Some(found));
        }
        mask &= mask - 1;
    }
    None
}

/// [`LeadingPairs::each_place`] thirty-two places at a time, from `*block` on while a whole
/// block and the byte after it lie in `haystack`: `Some` with the answer once it is known,
/// `None` with `*block` where the narrower passes go on.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_places<T>(
    pairs: &[[u8; 2]],
    haystack: &[u8],
    end: usize,
    block: &mut usize,
    check: &mut impl FnMut(usize) -> Option<T>,
) -> Option<Option<T>> {
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm256_setzero_si256,
    };
    let mut wanted = [(_mm256_setzero_si256(), _mm256_setzero_si256()); MOST_FORMS];
    for (lanes, &[first, second]) in wanted.iter_mut().zip(pairs) {
        *lanes = (
            _mm256_set1_epi8(first as i8),
            _mm256_set1_epi8(second as i8),
        );
    }
    let wanted = &wanted[..pairs.len()];
    // SAFETY: each load reads the thirty-two bytes from `place`, and the loop keeps
    // `*block + 33` (the second load's end) inside `haystack`; the loads need no alignment.
    let at = |place: usize| unsafe {
        _mm256_loadu_si256(haystack.as_ptr().add(place).cast::<__m256i>())
    };
    while *block < end && *block + 33 <= haystack.len() {
        let (firsts, seconds) = (at(*block), at(*block + 1));
        let mut hits = _mm256_setzero_si256();
        for &(first, second) in wanted {
            let pair = _mm256_and_si256(
                _mm256_cmpeq_epi8(firsts, first),
                _mm256_cmpeq_epi8(seconds, second),
            );
            hits = _mm256_or_si256(hits, pair);
        }
        let mask = _mm256_movemask_epi8(hits) as u32;
        if let Some(done) = each_hit(mask, *block, end, check) {
            return Some(done);
        }
        *block += 32;
    }
    None
}

impl Drop for LeadingPairs {
    fn drop(&mut self) {
        self.pairs.zeroize();
        self.firsts.zeroize();
    }
}

/// Every form of one key, back to back.
#[derive(Default)]
struct Forms {
    bytes: Vec<u8>,
    /// Where each form lies in `bytes`, longest first (a form that contains another is
    /// replaced whole).
    spans: [(u32, u32); MOST_FORMS],
    count: usize,
}

impl Forms {
    /// The forms of `raw`, each encoded one at least `shortest` bytes long.
    fn build(raw: &[u8], shortest: usize) -> Self {
        let mut forms = Self {
            bytes: Vec::with_capacity(raw.len() * 16 + 8),
            ..Self::default()
        };
        forms.bytes.extend_from_slice(raw);
        forms.keep(0, 1);
        for solidus in [false, true] {
            let start = forms.bytes.len();
            json_escaped(raw, solidus, &mut forms.bytes);
            forms.keep(start, shortest);
        }
        let start = forms.bytes.len();
        percent_encoded(raw, &mut forms.bytes);
        forms.keep(start, shortest);
        for digits in [b"0123456789abcdef", b"0123456789ABCDEF"] {
            let start = forms.bytes.len();
            for byte in raw {
                forms.bytes.push(digits[usize::from(byte >> 4)]);
                forms.bytes.push(digits[usize::from(byte & 0xf)]);
            }
            forms.keep(start, shortest);
        }
        let mut padded = vec![0_u8; 2 + raw.len()];
        padded[2..].copy_from_slice(raw);
        for alignment in 0..3 {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let start = forms.bytes.len();
                base64_core(
                    engine,
                    &padded[2 - alignment..],
                    alignment,
                    &mut forms.bytes,
                );
                forms.keep(start, shortest);
            }
        }
        padded.zeroize();
        let count = forms.count;
        forms.spans[..count].sort_by_key(|&(_, len)| std::cmp::Reverse(len));
        forms
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
        // Offsets fit: a key is at most 8 KiB, its forms a few times that.
        self.spans[self.count] = (start as u32, len as u32);
        self.count += 1;
    }

    fn form(&self, index: usize) -> &[u8] {
        let (start, len) = self.spans[index];
        &self.bytes[start as usize..(start + len) as usize]
    }

    /// The length of the longest form `rest` begins with.
    fn starting(&self, rest: &[u8]) -> Option<usize> {
        (0..self.count)
            .map(|i| self.form(i))
            .find(|form| rest.starts_with(form))
            .map(<[u8]>::len)
    }

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

impl Drop for Forms {
    fn drop(&mut self) {
        self.bytes.zeroize();
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
        self.secret.zeroize();
        self.prefixes.zeroize();
    }
}

impl fmt::Debug for CredentialScrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialScrubber([redacted])")
    }
}

/// Hands `each` the first four bytes of every form of `raw` (at least [`LEADING_BYTES`]
/// long), as [`Forms::build`] would make them, worked out from its first bytes alone.
fn leading_words(raw: &[u8], mut each: impl FnMut([u8; 4])) {
    let mut first_four = |bytes: &[u8]| {
        if let [a, b, c, d, ..] = *bytes {
            each([a, b, c, d]);
        }
    };
    first_four(raw);
    let mut scratch = Vec::with_capacity(4 * 3);
    for solidus in [false, true] {
        scratch.clear();
        json_escaped(&raw[..4], solidus, &mut scratch);
        first_four(&scratch);
    }
    scratch.clear();
    percent_encoded(&raw[..4], &mut scratch);
    first_four(&scratch);
    scratch.zeroize();
    for digits in [b"0123456789abcdef", b"0123456789ABCDEF"] {
        first_four(&[
            digits[usize::from(raw[0] >> 4)],
            digits[usize::from(raw[0] & 0xf)],
            digits[usize::from(raw[1] >> 4)],
            digits[usize::from(raw[1] & 0xf)],
        ]);
    }
    for alignment in 0..3 {
        // The key behind `alignment` bytes of a neighbour; six bytes make eight characters.
        let mut padded = [0_u8; LEADING_BYTES];
        padded[alignment..].copy_from_slice(&raw[..LEADING_BYTES - alignment]);
        let first = (alignment * 8).div_ceil(6);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let mut chars = [0_u8; 8];
            if engine.encode_slice(padded, &mut chars).is_ok() {
                first_four(&chars[first..]);
            }
            chars.zeroize();
        }
        padded.zeroize();
    }
}

/// The key as it reads inside a JSON string: `"` and `\\` escaped, and `/` too when
/// `solidus` (JSON allows both).
fn json_escaped(raw: &[u8], solidus: bool, out: &mut Vec<u8>) {
    for &byte in raw {
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

    proptest::proptest! {
        /// The prefix filter only ever rules out places where no form begins: the first form
        /// found is the one a search of every place for every form finds.
        #[test]
        fn the_filter_finds_what_a_full_search_finds(
            key in "[ -~]{4,40}",
            pieces in proptest::collection::vec((0usize..12, "[ -~]{0,40}"), 0..6),
        ) {
            let scrubber = CredentialScrubber::new(&key);
            let every = Forms::build(key.as_bytes(), MIN_ENCODED);
            let mut text = Vec::new();
            for (form, filler) in &pieces {
                text.extend_from_slice(filler.as_bytes());
                if *form < every.count {
                    text.extend_from_slice(every.form(*form));
                }
            }
            let naive = (0..text.len()).find_map(|at| every.starting(&text[at..]).map(|len| (at, len)));
            proptest::prop_assert_eq!(scrubber.find(&text, 0), naive);
        }
    }

    #[test]
    fn the_encoded_alphabet_holds_every_escape_and_base64_byte() {
        let escapes = b"\\%0123456789abcdefABCDEF";
        let base64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_";
        let mut expected = [0_u64; 4];
        for &byte in escapes.iter().chain(base64) {
            set_bit(&mut expected, usize::from(byte));
        }
        assert_eq!(ENCODED_ALPHABET, expected);
    }

    #[test]
    fn debug_shows_nothing() {
        let shown = format!("{:?}", CredentialScrubber::new(KEY));
        assert!(!shown.contains("canary"), "{shown}");
    }
}
