//! A string that must never be printed: provider keys, virtual keys, admin tokens.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret string. `Debug` and `Display` print a placeholder, it has no `Clone` and no
/// `Serialize`, and its memory is wiped on drop. The only way to the value is
/// [`SecretString::expose`], so every use of the plaintext is greppable.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

const REDACTED: &str = "[redacted]";

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext. Call it only where the value must leave the process (an upstream
    /// header) or be encrypted.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last four characters, the only part of a secret an operator is ever shown.
    pub fn last_four(&self) -> String {
        let count = self.0.chars().count();
        self.0.chars().skip(count.saturating_sub(4)).collect()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Secret bytes (key material). Same guarantees as [`SecretString`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(value: Vec<u8>) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = SecretString::new("sk-canary-1234567890".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(&secret)), "Some(\n    [redacted],\n)");
        let bytes = SecretBytes::new(b"key material".to_vec());
        assert!(!format!("{bytes:?}").contains("key"));
    }

    #[test]
    fn last_four_counts_characters_not_bytes() {
        assert_eq!(SecretString::new("abcdef".into()).last_four(), "cdef");
        assert_eq!(SecretString::new("ab".into()).last_four(), "ab");
        assert_eq!(SecretString::new("xxé€ab".into()).last_four(), "é€ab");
    }

    #[test]
    fn wipes_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<SecretString>();
        assert_zeroize_on_drop::<SecretBytes>();
    }
}
