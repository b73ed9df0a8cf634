//! The vault: provider keys encrypted under versioned master keys.
//!
//! Master keys come from `SLUICE_MASTER_KEY` or a key file as one or more `VERSION:BASE64`
//! entries (a lone `BASE64` is version 1). The newest version seals new keys; every version
//! present opens what it sealed. Rotation: add a new version, restart (replicas one by one),
//! and the control plane re-wraps every data key under it in the background; once
//! `GetVaultStatus` shows no key under an old version, that version can be removed.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_shared::envelope::{EnvelopeError, Keyring};
use sluice_shared::secret::{SecretBytes, SecretString};

use crate::store::{Store, StoreError};

const MASTER_KEY_LEN: usize = 32;
const CHECK_PLAINTEXT: &[u8] = b"sluice vault check";
const REWRAP_BATCH: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "master key entry {entry} is not valid: expected VERSION:BASE64 of {MASTER_KEY_LEN} bytes \
         (create one with `sluice-control-plane generate-master-key`)"
    )]
    BadMasterKey { entry: usize },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(
        "master key version {0} does not match the one this database was created with: \
         start with the original key for that version"
    )]
    WrongMasterKey(u32),
    #[error(
        "{keys} provider keys are still wrapped by master key version {version}, which is \
         missing: add it back to the keyring"
    )]
    MissingMasterKey { version: u32, keys: u64 },
    #[error("the secret does not decrypt to text")]
    NotText,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A provider key ready to store: ciphertext and what may be shown about it.
pub struct SealedSecret {
    pub sealed: Vec<u8>,
    pub master_key_version: u32,
    pub last_four: String,
    pub fingerprint: String,
}

pub struct Vault {
    keyring: Keyring,
    fingerprint_key: SecretBytes,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// Parses `VERSION:BASE64` entries separated by commas or white space.
pub fn parse_master_keys(text: &SecretString) -> Result<Vec<(u32, SecretBytes)>, VaultError> {
    let entries: Vec<&str> = text
        .expose()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .collect();
    let lone = entries.len() == 1;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let bad = || VaultError::BadMasterKey { entry: index + 1 };
            let (version, encoded) = match entry.split_once(':') {
                Some((version, encoded)) => (version.parse::<u32>().map_err(|_| bad())?, encoded),
                None if lone => (1, *entry),
                None => return Err(bad()),
            };
            let material = STANDARD.decode(encoded).map_err(|_| bad())?;
            if material.len() != MASTER_KEY_LEN {
                return Err(bad());
            }
            Ok((version, SecretBytes::new(material)))
        })
        .collect()
}

/// A new random master key, base64, for `generate-master-key` and dev mode.
pub fn generate_master_key() -> SecretString {
    let mut material = [0u8; MASTER_KEY_LEN];
    rand_bytes(&mut material);
    let encoded = STANDARD.encode(material);
    zeroize_bytes(&mut material);
    SecretString::new(encoded)
}

fn rand_bytes(buffer: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buffer);
}

fn zeroize_bytes(buffer: &mut [u8]) {
    use zeroize::Zeroize;
    buffer.zeroize();
}

impl Vault {
    pub fn new(master_keys: Vec<(u32, SecretBytes)>) -> Result<Self, VaultError> {
        let fingerprint_key = match master_keys.iter().max_by_key(|(version, _)| *version) {
            Some((_, material)) => derive(material.expose(), b"sluice/fingerprint/v1")?,
            None => return Err(EnvelopeError::EmptyKeyring.into()),
        };
        let keyring = Keyring::new(master_keys)?;
        Ok(Self {
            keyring,
            fingerprint_key,
        })
    }

    pub fn active_version(&self) -> u32 {
        self.keyring.active_version()
    }

    pub fn seal_provider_key(
        &self,
        key_id: &str,
        org_id: &str,
        secret: &SecretString,
    ) -> Result<SealedSecret, VaultError> {
        let sealed = self.keyring.seal(
            secret.expose().as_bytes(),
            &provider_key_aad(key_id, org_id),
        )?;
        Ok(SealedSecret {
            sealed,
            master_key_version: self.keyring.active_version(),
            last_four: secret.last_four(),
            fingerprint: self.fingerprint(secret)?,
        })
    }

    pub fn open_provider_key(
        &self,
        key_id: &str,
        org_id: &str,
        sealed: &[u8],
    ) -> Result<SecretString, VaultError> {
        let plaintext = self
            .keyring
            .open(sealed, &provider_key_aad(key_id, org_id))?;
        let text = std::str::from_utf8(plaintext.expose()).map_err(|_| VaultError::NotText)?;
        Ok(SecretString::new(text.to_owned()))
    }

    /// A keyed hash of the secret: stable for one active master-key version, useless to
    /// anyone without the master key. The version is part of it, so fingerprints made under
    /// different versions never look alike.
    pub fn fingerprint(&self, secret: &SecretString) -> Result<String, VaultError> {
        let digest = derive(self.fingerprint_key.expose(), secret.expose().as_bytes())?;
        let mut hex = hex::encode(digest.expose());
        hex.truncate(16);
        Ok(format!("v{}:{hex}", self.keyring.active_version()))
    }

    /// Refuses a keyring that cannot open what this database holds: a wrong key for a known
    /// version, or a missing version that still wraps keys. Then records a check value for
    /// each new version.
    pub async fn verify_against<S: Store>(&self, store: &S) -> Result<(), VaultError> {
        let checks: BTreeMap<u32, Vec<u8>> = store.vault_checks().await?.into_iter().collect();
        let in_use: BTreeMap<u32, u64> = store
            .provider_keys_per_master_key_version()
            .await?
            .into_iter()
            .collect();
        for (&version, keys) in &in_use {
            if !self.keyring.versions().any(|held| held == version) && *keys > 0 {
                return Err(VaultError::MissingMasterKey {
                    version,
                    keys: *keys,
                });
            }
        }
        for version in self.keyring.versions() {
            match checks.get(&version) {
                Some(check) => {
                    let opened = self.keyring.open(check, &check_aad(version));
                    if !matches!(opened, Ok(ref value) if value.expose() == CHECK_PLAINTEXT) {
                        return Err(VaultError::WrongMasterKey(version));
                    }
                }
                None => {
                    let sealed =
                        self.keyring
                            .seal_with(version, CHECK_PLAINTEXT, &check_aad(version))?;
                    store.add_vault_check(version, sealed).await?;
                }
            }
        }
        Ok(())
    }

    /// Re-wraps every provider key not yet under the active master key. Safe to run on
    /// several replicas at once: each replacement is a compare-and-set.
    pub async fn rewrap_all<S: Store>(&self, store: &S) -> Result<u64, VaultError> {
        let active = self.keyring.active_version();
        let mut rewrapped = 0;
        let mut failed = std::collections::HashSet::new();
        loop {
            let limit =
                REWRAP_BATCH.saturating_add(u32::try_from(failed.len()).unwrap_or(u32::MAX));
            let batch = store.sealed_keys_not_under(active, limit).await?;
            let mut progressed = false;
            for key in &batch {
                if failed.contains(&key.id) {
                    continue;
                }
                match self
                    .keyring
                    .rewrap(&key.sealed_secret, &provider_key_aad(&key.id, &key.org_id))
                {
                    Ok(sealed) => {
                        if store
                            .replace_sealed_secret(&key.id, &key.sealed_secret, sealed, active)
                            .await?
                        {
                            rewrapped += 1;
                        }
                        progressed = true;
                    }
                    Err(error) => {
                        tracing::error!(provider_key_id = %key.id, %error, "cannot re-wrap provider key");
                        failed.insert(key.id.clone());
                    }
                }
            }
            if !progressed {
                return Ok(rewrapped);
            }
        }
    }
}

/// Binds a provider key's ciphertext to its record and organization.
fn provider_key_aad(key_id: &str, org_id: &str) -> Vec<u8> {
    format!("sluice/v1/provider_key/{key_id}/{org_id}").into_bytes()
}

fn check_aad(version: u32) -> Vec<u8> {
    format!("sluice/v1/vault_check/{version}").into_bytes()
}

fn derive(key: &[u8], message: &[u8]) -> Result<SecretBytes, VaultError> {
    // HMAC takes keys of any length; the error arm exists only because the trait is generic.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| VaultError::Envelope(EnvelopeError::BadKeyLength(key.len())))?;
    mac.update(message);
    Ok(SecretBytes::new(mac.finalize().into_bytes().to_vec()))
}
