//! Provider keys sealed for one proxy.
//!
//! Each proxy holds an X25519 key pair (its private half never leaves it). For every snapshot
//! the control plane makes a one-off key pair, derives a shared AES-256-GCM-SIV key with
//! HKDF-SHA256 over the X25519 result, and seals each provider key under it, bound to the key's
//! id. The proxy derives the same key and opens a provider key only when a request needs it.
//! Anyone who reads the snapshot — on the wire, on the proxy's disk, in a debug dump — sees
//! ciphertext only.

use aes_gcm_siv::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::secret::SecretString;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HKDF_INFO: &[u8] = b"sluice/v1/snapshot-sealing";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealingError {
    #[error("a sealing public key must be 32 bytes, got {0}")]
    BadPublicKey(usize),
    #[error("the peer's public key is of low order: refusing a non-contributory exchange")]
    NonContributory,
    #[error("a sealed secret is malformed or truncated")]
    Malformed,
    #[error("a sealed secret failed authentication: altered, sealed for another proxy or key")]
    Unauthentic,
    #[error("a sealed secret is not text")]
    NotText,
    #[error("encryption failed")]
    EncryptionFailed,
}

/// A proxy's long-lived key pair.
pub struct SealingKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl SealingKeyPair {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes)
    }

    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The private half, for the proxy to persist (mode 0600) beside its on-disk snapshot.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The opener for a snapshot sealed with the control plane's one-off `sender_public`.
    pub fn opener(&self, sender_public: &[u8]) -> Result<SecretOpener, SealingError> {
        let sender = public_key(sender_public)?;
        let cipher = derive(&self.secret, &sender, &sender, &self.public)?;
        Ok(SecretOpener { cipher })
    }
}

impl std::fmt::Debug for SealingKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKeyPair")
            .field("public", &hex::encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

/// Seals secrets for one proxy; made once per snapshot.
pub struct SecretSealer {
    cipher: Aes256GcmSiv,
    sender_public: [u8; 32],
}

impl SecretSealer {
    pub fn for_recipient(recipient_public: &[u8]) -> Result<Self, SealingError> {
        let recipient = public_key(recipient_public)?;
        let one_off = SealingKeyPair::generate();
        let cipher = derive(&one_off.secret, &recipient, &one_off.public, &recipient)?;
        Ok(Self {
            cipher,
            sender_public: one_off.public_bytes(),
        })
    }

    /// Goes into the snapshot so the proxy can derive the same key.
    pub fn sender_public(&self) -> [u8; 32] {
        self.sender_public
    }

    /// `nonce ‖ ciphertext`, bound to `key_id`.
    pub fn seal(&self, key_id: &str, secret: &SecretString) -> Result<Vec<u8>, SealingError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad(key_id),
                },
            )
            .map_err(|_| SealingError::EncryptionFailed)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }
}

/// Opens the secrets of one snapshot, on the proxy, one at a time as requests need them.
pub struct SecretOpener {
    cipher: Aes256GcmSiv,
}

impl SecretOpener {
    pub fn open(&self, key_id: &str, sealed: &[u8]) -> Result<SecretString, SealingError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealingError::Malformed);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        // Opened in place, so the plaintext lives in exactly one buffer: the secret's own.
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_in_place(Nonce::from_slice(nonce), &aad(key_id), &mut *buffer)
            .map_err(|_| SealingError::Unauthentic)?;
        let text = String::from_utf8(std::mem::take(&mut *buffer)).map_err(|not_text| {
            drop(Zeroizing::new(not_text.into_bytes()));
            SealingError::NotText
        })?;
        Ok(SecretString::new(text))
    }
}

impl std::fmt::Debug for SecretOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretOpener")
    }
}

fn public_key(bytes: &[u8]) -> Result<PublicKey, SealingError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SealingError::BadPublicKey(bytes.len()))?;
    Ok(PublicKey::from(array))
}

/// Both sides bind both public keys into the derivation, so a key made for one pair of keys is
/// useless with any other.
fn derive(
    own_secret: &StaticSecret,
    peer_public: &PublicKey,
    sender_public: &PublicKey,
    recipient_public: &PublicKey,
) -> Result<Aes256GcmSiv, SealingError> {
    let shared = own_secret.diffie_hellman(peer_public);
    if !shared.was_contributory() {
        return Err(SealingError::NonContributory);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(sender_public.as_bytes());
    salt[32..].copy_from_slice(recipient_public.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(HKDF_INFO, key.as_mut())
        .map_err(|_| SealingError::EncryptionFailed)?;
    Aes256GcmSiv::new_from_slice(key.as_ref()).map_err(|_| SealingError::EncryptionFailed)
}

const AAD_PREFIX: &[u8] = b"sluice/v1/snapshot_secret/";

fn aad(key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + key_id.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::new(text.to_owned())
    }

    #[test]
    fn the_recipient_opens_what_was_sealed_for_it() {
        let proxy = SealingKeyPair::generate();
        let sealer = SecretSealer::for_recipient(&proxy.public_bytes()).unwrap();
        let sealed = sealer.seal("key-1", &secret("sk-canary-1")).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        let opener = proxy.opener(&sealer.sender_public()).unwrap();
        assert_eq!(
            opener.open("key-1", &sealed).unwrap().expose(),
            "sk-canary-1"
        );
    }

    #[test]
    fn another_proxy_another_key_id_or_a_flipped_bit_fail() {
        let proxy = SealingKeyPair::generate();
        let other = SealingKeyPair::generate();
        let sealer = SecretSealer::for_recipient(&proxy.public_bytes()).unwrap();
        let sealed = sealer.seal("key-1", &secret("sk-x")).unwrap();
        let wrong_proxy = other.opener(&sealer.sender_public()).unwrap();
        assert_eq!(
            wrong_proxy.open("key-1", &sealed).unwrap_err(),
            SealingError::Unauthentic
        );
        let opener = proxy.opener(&sealer.sender_public()).unwrap();
        assert_eq!(
            opener.open("key-2", &sealed).unwrap_err(),
            SealingError::Unauthentic
        );
        for at in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert!(opener.open("key-1", &tampered).is_err());
        }
        assert_eq!(
            opener.open("key-1", &sealed[..10]).unwrap_err(),
            SealingError::Malformed
        );
    }

    #[test]
    fn a_persisted_key_pair_still_opens() {
        let proxy = SealingKeyPair::generate();
        let sealer = SecretSealer::for_recipient(&proxy.public_bytes()).unwrap();
        let sealed = sealer.seal("k", &secret("sk-y")).unwrap();
        let restored = SealingKeyPair::from_secret_bytes(*proxy.secret_bytes());
        let opener = restored.opener(&sealer.sender_public()).unwrap();
        assert_eq!(opener.open("k", &sealed).unwrap().expose(), "sk-y");
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert_eq!(
            SecretSealer::for_recipient(&[1; 31]).err(),
            Some(SealingError::BadPublicKey(31))
        );
        // The all-zero point is of low order: the exchange would not depend on our secret.
        assert_eq!(
            SecretSealer::for_recipient(&[0; 32]).err(),
            Some(SealingError::NonContributory)
        );
    }
}
