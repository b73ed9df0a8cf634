//! A JSON text walked once, front to back, for the few members a reader wants: a stream's
//! events are read for a handful of keys each, and building each event through serde (every
//! key checked as UTF-8, every value walked by a visitor) was the largest part of relaying a
//! stream. What the reader does not ask for is skipped over without being looked into.
//!
//! Keys are compared as sent: a key spelt with escapes (`"us\u0061ge"`) is not the key. What
//! is not JSON ends the walk where it stops making sense; nothing here panics or allocates.

pub struct JsonCursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> JsonCursor<'a> {
    pub fn new(json: &'a [u8]) -> Self {
        Self { bytes: json, at: 0 }
    }

    /// Walks the object at the cursor: `each` is called with every key and the cursor at its
    /// value, which `each` may read (with any method here) or leave to be skipped. `None` if
    /// there is no object here or it is cut short.
    pub fn object(&mut self, mut each: impl FnMut(&'a [u8], &mut Self)) -> Option<()> {
        self.object_while(|key, cursor| {
            each(key, cursor);
            true
        })
    }

    /// [`Self::object`], stopping (with `Some`, the cursor left inside the object) once
    /// `each` returns `false`: a reader that has found what it wanted skips nothing more.
    pub fn object_while(
        &mut self,
        mut each: impl FnMut(&'a [u8], &mut Self) -> bool,
    ) -> Option<()> {
        self.open(b'{')?;
        if self.close(b'}') {
            return Some(());
        }
        loop {
            self.at = skip_space(self.bytes, self.at);
            if self.bytes.get(self.at) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(self.bytes, self.at)?;
            let key = &self.bytes[self.at + 1..key_end - 1];
            self.at = skip_space(self.bytes, key_end);
            if self.bytes.get(self.at) != Some(&b':') {
                return None;
            }
            self.at += 1;
            let mut more = true;
            self.member_value(|cursor| more = each(key, cursor))?;
            if !more {
                return Some(());
            }
            if !self.after_item(b'}')? {
                return Some(());
            }
        }
    }

    /// Walks the array at the cursor: `each` is called with the cursor at every element, which
    /// it may read or leave to be skipped.
    pub fn array(&mut self, mut each: impl FnMut(&mut Self)) -> Option<()> {
        self.open(b'[')?;
        if self.close(b']') {
            return Some(());
        }
        loop {
            self.member_value(&mut each)?;
            if !self.after_item(b']')? {
                return Some(());
            }
        }
    }

    /// The JSON text of the value at the cursor, which moves past it.
    pub fn value(&mut self) -> Option<&'a [u8]> {
        let start = skip_space(self.bytes, self.at);
        let end = value_end(self.bytes, start)?;
        self.at = end;
        Some(&self.bytes[start..end])
    }

    /// Hands the cursor at a value to `read`, then skips the value if `read` left it.
    fn member_value(&mut self, read: impl FnOnce(&mut Self)) -> Option<()> {
        self.at = skip_space(self.bytes, self.at);
        let start = self.at;
        read(self);
        if self.at == start {
            // Already at the value: no second look for space before it.
            self.at = value_end(self.bytes, start)?;
        }
        Some(())
    }

    fn open(&mut self, bracket: u8) -> Option<()> {
        let at = skip_space(self.bytes, self.at);
        (self.bytes.get(at) == Some(&bracket)).then(|| self.at = at + 1)
    }

    /// Steps past `bracket` if it comes next.
    fn close(&mut self, bracket: u8) -> bool {
        let at = skip_space(self.bytes, self.at);
        let closes = self.bytes.get(at) == Some(&bracket);
        if closes {
            self.at = at + 1;
        }
        closes
    }

    /// After an item: `true` past a comma (another item follows), `false` past the
    /// container's `close`, `None` at anything else.
    fn after_item(&mut self, close: u8) -> Option<bool> {
        self.at = skip_space(self.bytes, self.at);
        let next = *self.bytes.get(self.at)?;
        self.at += 1;
        match next {
            b',' => Some(true),
            byte if byte == close => Some(false),
            _ => None,
        }
    }
}

/// Past any space at `at`. Compact JSON, what upstreams send, has none between its tokens:
/// that case is one comparison (this is called around every key and value, and looping over
/// the four space bytes there was the largest single cost of reading an event).
#[inline(always)]
fn skip_space(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(&byte) if byte > b' ' => at,
        _ => skip_space_run(bytes, at),
    }
}

fn skip_space_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = bytes.get(at) {
        at += 1;
    }
    at
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of each zero byte of `word` set; above the lowest zero byte, other bytes may
/// show too, so only the lowest set bit is to be trusted.
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The end (exclusive) of the string whose opening quote is at `at`. Eight bytes at a time
/// (the strings of an event are too short for a vectorised search's set-up to pay).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut place = at + 1;
    loop {
        if let Some(word) = bytes.get(place..place + 8) {
            let word = u64::from_le_bytes(word.try_into().ok()?);
            let stops = zero_bytes(word ^ (ONES * u64::from(b'"')))
                | zero_bytes(word ^ (ONES * u64::from(b'\\')));
            if stops == 0 {
                place += 8;
                continue;
            }
            place += (stops.trailing_zeros() / 8) as usize;
        }
        match *bytes.get(place)? {
            b'"' => return Some(place + 1),
            // The byte after a backslash is never the string's end.
            b'\\' => place += 2,
            _ => place += 1,
        }
    }
}

/// The end (exclusive) of the value that starts at `at`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => container_end(bytes, at),
        b't' => literal_end(bytes, at, b"true"),
        b'f' => literal_end(bytes, at, b"false"),
        b'n' => literal_end(bytes, at, b"null"),
        b'-' | b'0'..=b'9' => Some(token_end(bytes, at)),
        _ => None,
    }
}

/// Where a number's token ends: at the next delimiter (what is inside is the client's
/// parser's to judge, as with every scalar here).
fn token_end(bytes: &[u8], at: usize) -> usize {
    bytes[at..]
        .iter()
        .position(|&byte| is_delimiter(byte))
        .map_or(bytes.len(), |len| at + len)
}

/// The end of `word` at `at`, if it is there whole and nothing but a delimiter follows it.
fn literal_end(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (bytes.get(at..end)? == word && bytes.get(end).is_none_or(|&byte| is_delimiter(byte)))
        .then_some(end)
}

fn is_delimiter(byte: u8) -> bool {
    matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
}

/// The end (exclusive) of the object or array that opens at `at`, strings inside skipped.
fn container_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0_usize;
    let mut place = at;
    loop {
        match *bytes.get(place)? {
            b'"' => {
                place = string_end(bytes, place)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(place + 1);
                }
            }
            _ => {}
        }
        place += 1;
    }
}

/// Whether `bytes` is one whole JSON object or array and nothing else: opened and closed,
/// every string closed, nothing after it but space. What a cut body, an HTML error page or an
/// empty body fails. The grammar inside (a misplaced comma, a bracket closing the wrong kind)
/// is left to the client's parser: serde's full check cost the benchmark's 303-byte answer
/// 4 400 instructions, this walk 1 600 (a byte-at-a-time state machine, 6 600), and upstreams
/// that fail do so by cutting or replacing their answer, not by misspelling it.
pub fn is_whole_document(bytes: &[u8]) -> bool {
    let start = skip_space(bytes, 0);
    if !matches!(bytes.get(start), Some(b'{' | b'[')) {
        return false;
    }
    container_end(bytes, start).is_some_and(|end| skip_space(bytes, end) == bytes.len())
}

/// The characters of the JSON string `json` (quotes included) once its escapes are read, as
/// `str::chars().count()` of the decoded text would count them. `None` if it is no string.
pub fn string_chars(json: &[u8]) -> Option<usize> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut chars = 0;
    let mut at = 0;
    while let Some(&byte) = inner.get(at) {
        if byte == b'\\' {
            at += match inner.get(at + 1) {
                Some(b'u') => {
                    // A surrogate pair is two escapes for one character: count its second.
                    let high = inner.get(at + 2..at + 4).is_some_and(|digits| {
                        matches!(
                            digits,
                            [b'd' | b'D', b'8'..=b'9' | b'a'..=b'b' | b'A'..=b'B']
                        )
                    });
                    chars += usize::from(!high);
                    6
                }
                _ => {
                    chars += 1;
                    2
                }
            };
        } else {
            // Count the bytes that begin a UTF-8 character.
            chars += usize::from(byte & 0xC0 != 0x80);
            at += 1;
        }
    }
    Some(chars)
}

#[cfg(test)]
mod tests;
