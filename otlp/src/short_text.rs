//! Text a sampled request's trace keeps — its ids, model names, the answer's id and finish
//! reasons — held inline when it is short, as it nearly always is. A trace is filled on a
//! serving thread and freed on the exporter's: a `String` for each of these was an allocation
//! on one thread and a free on the other (the allocator's slow path both ways), a dozen per
//! request.

use std::fmt;

/// Long enough for a UUID (36), a model name or an answer's id, as most are.
const INLINE: usize = 46;

#[derive(Clone, PartialEq, Eq)]
pub struct ShortText(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl ShortText {
    pub const EMPTY: Self = Self(Repr::Inline {
        len: 0,
        bytes: [0; INLINE],
    });

    pub fn new(text: &str) -> Self {
        let len = text.len();
        if len > INLINE {
            return Self(Repr::Heap(text.into()));
        }
        let mut bytes = [0; INLINE];
        bytes[..len].copy_from_slice(text.as_bytes());
        Self(Repr::Inline {
            // At most INLINE, which fits.
            len: len as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied whole from a `str`, so always UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(text) => text,
        }
    }

    /// The text's bytes, UTF-8 by construction (what the encoder writes: no check needed).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(text) => text.as_bytes(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Inline { len, .. } => *len == 0,
            Repr::Heap(text) => text.is_empty(),
        }
    }
}

impl Default for ShortText {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl From<&str> for ShortText {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl AsRef<str> for ShortText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::ops::Deref for ShortText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ShortText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_text_read_back_as_written() {
        for text in [
            "",
            "gpt-4o-mini",
            &"é".repeat(23),
            &"m".repeat(47),
            "0194-uuid",
        ] {
            let short = ShortText::new(text);
            assert_eq!(short.as_str(), text);
            assert_eq!(short.is_empty(), text.is_empty());
        }
        assert!(matches!(
            ShortText::new(&"x".repeat(46)).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(ShortText::new(&"x".repeat(47)).0, Repr::Heap(_)));
    }
}
