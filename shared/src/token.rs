//! Bearer credentials Sluice mints: virtual keys and admin tokens.
//!
//! Both are long random base62 strings behind a recognisable prefix. Only their SHA-256 is
//! stored: the values carry ≥190 bits of entropy, so a plain hash cannot be brute-forced and
//! lets a proxy look a key up without any other secret.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::secret::SecretString;

pub const VIRTUAL_KEY_PREFIX: &str = "sk-sluice-";
pub const ADMIN_TOKEN_PREFIX: &str = "sluice-admin-";
/// Random characters after the prefix: 32 is the floor the design asks for; 40 gives margin.
const RANDOM_CHARS: usize = 40;
/// How many characters of a credential may be shown to identify it.
const SHOWN_RANDOM_CHARS: usize = 4;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly minted credential: the value (shown once), its hash and its display prefix.
pub struct MintedToken {
    pub value: SecretString,
    pub hash: String,
    pub display_prefix: String,
}

pub fn mint(prefix: &str) -> MintedToken {
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect();
    let display_prefix = format!("{prefix}{}", &random[..SHOWN_RANDOM_CHARS]);
    let value = SecretString::new(format!("{prefix}{random}"));
    MintedToken {
        hash: hash(value.expose()),
        value,
        display_prefix,
    }
}

/// Hex SHA-256, the form in which credentials are stored and looked up.
pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_keys_have_the_documented_shape() {
        let minted = mint(VIRTUAL_KEY_PREFIX);
        let value = minted.value.expose();
        let random = value.strip_prefix(VIRTUAL_KEY_PREFIX).unwrap();
        assert!(random.len() >= 32);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(minted.hash, hash(value));
        assert!(value.starts_with(&minted.display_prefix));
        assert_eq!(minted.display_prefix.len(), VIRTUAL_KEY_PREFIX.len() + 4);
    }

    #[test]
    fn minted_values_differ() {
        assert_ne!(mint("x-").hash, mint("x-").hash);
    }
}
