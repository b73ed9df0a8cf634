//! Envelope encryption with AES-256-GCM-SIV.
//!
//! Each value gets its own random data key (DEK). The DEK encrypts the value; a versioned
//! master key (KEK) from the [`Keyring`] wraps the DEK. Both layers take the caller's
//! *associated data*, which names the record the value belongs to, so a ciphertext copied into
//! another record fails to open. Rotating the master key only re-wraps DEKs
//! ([`Keyring::rewrap`]); the encrypted values themselves never change.
//!
//! Sealed layout (all integers big-endian):
//! `magic "SLV1" | kek version u32 | wrap nonce 12 | wrapped DEK 48 | data nonce 12 | ciphertext+tag`

use std::collections::BTreeMap;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

const MAGIC: &[u8; 4] = b"SLV1";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const WRAPPED_DEK_LEN: usize = KEY_LEN + TAG_LEN;
const VERSION_AT: usize = MAGIC.len();
const WRAP_NONCE_AT: usize = VERSION_AT + 4;
const WRAPPED_DEK_AT: usize = WRAP_NONCE_AT + NONCE_LEN;
const DATA_NONCE_AT: usize = WRAPPED_DEK_AT + WRAPPED_DEK_LEN;
const CIPHERTEXT_AT: usize = DATA_NONCE_AT + NONCE_LEN;

/// Why a value could not be sealed or opened. None of these carry key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("a master key must be exactly {KEY_LEN} bytes, got {0}")]
    BadKeyLength(usize),
    #[error("master key version {0} appears twice")]
    DuplicateKeyVersion(u32),
    #[error("master key version 0 is reserved; versions start at 1")]
    ZeroKeyVersion,
    #[error("the keyring holds no master key")]
    EmptyKeyring,
    #[error("the sealed value is malformed or truncated")]
    Malformed,
    #[error("the sealed value names master key version {0}, which this keyring does not hold")]
    UnknownKeyVersion(u32),
    #[error(
        "the sealed value failed authentication: it was altered, belongs to another record, \
         or was sealed under a different master key"
    )]
    Unauthentic,
    #[error("encryption failed")]
    EncryptionFailed,
}

/// Versioned master keys. New values are sealed under the newest version; every version
/// present can still open what it sealed.
pub struct Keyring {
    keys: BTreeMap<u32, Aes256GcmSiv>,
    active: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    pub fn new(keys: Vec<(u32, SecretBytes)>) -> Result<Self, EnvelopeError> {
        let mut ring = BTreeMap::new();
        for (version, material) in keys {
            if version == 0 {
                return Err(EnvelopeError::ZeroKeyVersion);
            }
            let cipher = cipher_for(material.expose())?;
            if ring.insert(version, cipher).is_some() {
                return Err(EnvelopeError::DuplicateKeyVersion(version));
            }
        }
        let active = *ring.keys().next_back().ok_or(EnvelopeError::EmptyKeyring)?;
        Ok(Self { keys: ring, active })
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Encrypts `plaintext` under a fresh data key bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        self.seal_with(self.active, plaintext, aad)
    }

    /// Like [`Keyring::seal`], but wraps the data key with a chosen master-key version.
    pub fn seal_with(
        &self,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, EnvelopeError> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(dek.as_mut());
        let data_nonce = random_nonce();
        let ciphertext = cipher_for(dek.as_ref())?
            .encrypt(
                Nonce::from_slice(&data_nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| EnvelopeError::EncryptionFailed)?;
        let (wrap_nonce, wrapped_dek) = self.wrap(version, dek.as_ref(), aad)?;

        let mut sealed = Vec::with_capacity(CIPHERTEXT_AT + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&version.to_be_bytes());
        sealed.extend_from_slice(&wrap_nonce);
        sealed.extend_from_slice(&wrapped_dek);
        sealed.extend_from_slice(&data_nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts a value sealed for the record named by `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, EnvelopeError> {
        let parts = Parts::parse(sealed)?;
        let dek = self.unwrap(&parts, aad)?;
        let plaintext = cipher_for(dek.as_ref())?
            .decrypt(
                Nonce::from_slice(parts.data_nonce),
                Payload {
                    msg: parts.ciphertext,
                    aad,
                },
            )
            .map_err(|_| EnvelopeError::Unauthentic)?;
        Ok(SecretBytes::new(plaintext))
    }

    /// Re-wraps the data key under the active master key. The encrypted value is untouched,
    /// so this costs two small AEAD operations whatever the value's size.
    pub fn rewrap(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let parts = Parts::parse(sealed)?;
        let dek = self.unwrap(&parts, aad)?;
        let (wrap_nonce, wrapped_dek) = self.wrap(self.active, dek.as_ref(), aad)?;
        let mut rewrapped = sealed.to_vec();
        rewrapped[VERSION_AT..WRAP_NONCE_AT].copy_from_slice(&self.active.to_be_bytes());
        rewrapped[WRAP_NONCE_AT..WRAPPED_DEK_AT].copy_from_slice(&wrap_nonce);
        rewrapped[WRAPPED_DEK_AT..DATA_NONCE_AT].copy_from_slice(&wrapped_dek);
        Ok(rewrapped)
    }

    fn wrap(
        &self,
        version: u32,
        dek: &[u8],
        aad: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>), EnvelopeError> {
        let kek = self
            .keys
            .get(&version)
            .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
        let nonce = random_nonce();
        let wrapped = kek
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: dek,
                    aad: &wrap_aad(version, aad),
                },
            )
            .map_err(|_| EnvelopeError::EncryptionFailed)?;
        Ok((nonce, wrapped))
    }

    fn unwrap(&self, parts: &Parts<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let kek = self
            .keys
            .get(&parts.version)
            .ok_or(EnvelopeError::UnknownKeyVersion(parts.version))?;
        kek.decrypt(
            Nonce::from_slice(parts.wrap_nonce),
            Payload {
                msg: parts.wrapped_dek,
                aad: &wrap_aad(parts.version, aad),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Unauthentic)
    }
}

/// The master-key version a sealed value names, without opening it.
pub fn sealed_key_version(sealed: &[u8]) -> Result<u32, EnvelopeError> {
    Parts::parse(sealed).map(|parts| parts.version)
}

struct Parts<'a> {
    version: u32,
    wrap_nonce: &'a [u8],
    wrapped_dek: &'a [u8],
    data_nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> Parts<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, EnvelopeError> {
        if sealed.len() < CIPHERTEXT_AT + TAG_LEN || !sealed.starts_with(MAGIC) {
            return Err(EnvelopeError::Malformed);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&sealed[VERSION_AT..WRAP_NONCE_AT]);
        Ok(Self {
            version: u32::from_be_bytes(version),
            wrap_nonce: &sealed[WRAP_NONCE_AT..WRAPPED_DEK_AT],
            wrapped_dek: &sealed[WRAPPED_DEK_AT..DATA_NONCE_AT],
            data_nonce: &sealed[DATA_NONCE_AT..CIPHERTEXT_AT],
            ciphertext: &sealed[CIPHERTEXT_AT..],
        })
    }
}

/// The wrap layer also binds the master-key version, so editing the version in the header
/// cannot make another key's unwrap succeed.
fn wrap_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(aad.len() + 20);
    bound.extend_from_slice(b"sluice/dek/v1/");
    bound.extend_from_slice(&version.to_be_bytes());
    bound.extend_from_slice(aad);
    bound
}

fn cipher_for(key: &[u8]) -> Result<Aes256GcmSiv, EnvelopeError> {
    Aes256GcmSiv::new_from_slice(key).map_err(|_| EnvelopeError::BadKeyLength(key.len()))
}

/// A random nonce per encryption. GCM-SIV tolerates an accidental repeat, but we never plan one.
fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn key(byte: u8) -> SecretBytes {
        SecretBytes::new(vec![byte; KEY_LEN])
    }

    fn ring(keys: &[(u32, u8)]) -> Keyring {
        Keyring::new(keys.iter().map(|&(v, b)| (v, key(b))).collect()).unwrap()
    }

    const AAD_A: &[u8] = b"sluice/v1/provider_key/record-a";
    const AAD_B: &[u8] = b"sluice/v1/provider_key/record-b";

    #[test]
    fn round_trip() {
        let ring = ring(&[(1, 7)]);
        let sealed = ring.seal(b"sk-canary-secret", AAD_A).unwrap();
        assert_eq!(
            ring.open(&sealed, AAD_A).unwrap().expose(),
            b"sk-canary-secret"
        );
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
    }

    #[test]
    fn another_records_binding_fails() {
        let ring = ring(&[(1, 7)]);
        let sealed = ring.seal(b"secret", AAD_A).unwrap();
        assert_eq!(
            ring.open(&sealed, AAD_B).unwrap_err(),
            EnvelopeError::Unauthentic
        );
    }

    #[test]
    fn any_flipped_bit_fails_typed() {
        let ring = ring(&[(1, 7)]);
        let sealed = ring.seal(b"secret", AAD_A).unwrap();
        for at in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            let error = ring.open(&tampered, AAD_A).unwrap_err();
            assert!(
                matches!(
                    error,
                    EnvelopeError::Unauthentic
                        | EnvelopeError::Malformed
                        | EnvelopeError::UnknownKeyVersion(_)
                ),
                "byte {at}: {error:?}"
            );
        }
    }

    #[test]
    fn truncation_fails_typed() {
        let ring = ring(&[(1, 7)]);
        let sealed = ring.seal(b"secret", AAD_A).unwrap();
        for len in 0..sealed.len() {
            assert!(ring.open(&sealed[..len], AAD_A).is_err());
        }
    }

    #[test]
    fn wrong_master_key_fails() {
        let sealed = ring(&[(1, 7)]).seal(b"secret", AAD_A).unwrap();
        assert_eq!(
            ring(&[(1, 8)]).open(&sealed, AAD_A).unwrap_err(),
            EnvelopeError::Unauthentic
        );
        assert_eq!(
            ring(&[(2, 7)]).open(&sealed, AAD_A).unwrap_err(),
            EnvelopeError::UnknownKeyVersion(1)
        );
    }

    #[test]
    fn rotation_rewraps_and_old_values_still_open() {
        let old = ring(&[(1, 7)]);
        let sealed = old.seal(b"secret", AAD_A).unwrap();
        let rotated = ring(&[(1, 7), (2, 9)]);
        assert_eq!(rotated.active_version(), 2);
        assert_eq!(rotated.open(&sealed, AAD_A).unwrap().expose(), b"secret");

        let rewrapped = rotated.rewrap(&sealed, AAD_A).unwrap();
        assert_eq!(sealed_key_version(&rewrapped).unwrap(), 2);
        assert_eq!(rewrapped[DATA_NONCE_AT..], sealed[DATA_NONCE_AT..]);
        let new_only = ring(&[(2, 9)]);
        assert_eq!(
            new_only.open(&rewrapped, AAD_A).unwrap().expose(),
            b"secret"
        );
        assert_eq!(
            rotated.rewrap(&sealed, AAD_B).unwrap_err(),
            EnvelopeError::Unauthentic
        );
    }

    #[test]
    fn keyring_rejects_bad_input() {
        assert_eq!(
            Keyring::new(vec![(1, SecretBytes::new(vec![1; 16]))]).unwrap_err(),
            EnvelopeError::BadKeyLength(16)
        );
        assert_eq!(
            Keyring::new(vec![]).unwrap_err(),
            EnvelopeError::EmptyKeyring
        );
        assert_eq!(
            Keyring::new(vec![(0, key(1))]).unwrap_err(),
            EnvelopeError::ZeroKeyVersion
        );
        assert_eq!(
            Keyring::new(vec![(3, key(1)), (3, key(2))]).unwrap_err(),
            EnvelopeError::DuplicateKeyVersion(3)
        );
    }

    #[test]
    fn nonces_do_not_repeat() {
        let ring = ring(&[(1, 7)]);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let sealed = ring.seal(b"x", AAD_A).unwrap();
            assert!(seen.insert(sealed[WRAP_NONCE_AT..WRAPPED_DEK_AT].to_vec()));
            assert!(seen.insert(sealed[DATA_NONCE_AT..CIPHERTEXT_AT].to_vec()));
        }
    }

    /// RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV): the primitive under the envelope.
    #[test]
    fn rfc8452_vectors() {
        let one = format!("01{}", "00".repeat(31));
        let nonce = format!("03{}", "00".repeat(11));
        let vectors: [(&str, &str, &str, &str, &str); 4] = [
            (&one, &nonce, "", "", "07f5f4169bbf55a8400cd47ea6fd400f"),
            (
                &one,
                &nonce,
                "",
                "0100000000000000",
                "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
            ),
            (
                &one,
                &nonce,
                "01",
                "0200000000000000",
                "1de22967237a813291213f267e3b452f02d01ae33e4ec854",
            ),
            (
                "3c535de192eaed3822a2fbbe2ca9dfc88255e14a661b8aa82cc54236093bbc23",
                "688089e55540db1872504e1c",
                "734320ccc9d9bbbb19cb81b2af4ecbc3e72834321f7aa0f70b7282b4f33df23f167541",
                "ced532ce4159b035277d4dfbb7db62968b13cd4eec",
                "626660c26ea6612fb17ad91e8e767639edd6c9faee9d6c7029675b89eaf4ba1ded1a286594",
            ),
        ];
        for (key, nonce, aad, plaintext, ciphertext) in vectors {
            let cipher = cipher_for(&hex::decode(key).unwrap()).unwrap();
            let nonce = hex::decode(nonce).unwrap();
            let (aad, plaintext) = (hex::decode(aad).unwrap(), hex::decode(plaintext).unwrap());
            let sealed = cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &plaintext,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(hex::encode(&sealed), ciphertext);
            let opened = cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(opened, plaintext);
        }
    }

    #[test]
    fn debug_shows_versions_only() {
        let shown = format!("{:?}", ring(&[(1, 0x41)]));
        assert!(!shown.contains("AAAA") && !shown.contains("65, 65"));
    }
}
