//! Who this proxy is across restarts: its id and its sealing key pair, both kept in the data
//! directory (the key with mode 0600), so a restarted proxy can open the provider keys of the
//! snapshot it saved before the control plane returns.

use std::io::Write;
use std::path::{Path, PathBuf};

use sluice_shared::sealing::SealingKeyPair;

const ID_FILE: &str = "proxy-id";
const KEY_FILE: &str = "sealing.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a 32-byte hex key; delete it to make a new one")]
    BadKey(PathBuf),
}

pub struct Identity {
    pub proxy_id: String,
    pub sealing: SealingKeyPair,
}

impl Identity {
    pub fn load_or_create(
        data_dir: &Path,
        configured_id: Option<&str>,
    ) -> Result<Self, IdentityError> {
        create_private_dir(data_dir)?;
        let proxy_id = match configured_id {
            Some(id) => id.to_owned(),
            None => {
                let path = data_dir.join(ID_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
                    _ => {
                        let id = format!("proxy-{}", &sluice_shared::ids::new_id()[..23]);
                        write_private(&path, id.as_bytes())?;
                        id
                    }
                }
            }
        };
        let key_path = data_dir.join(KEY_FILE);
        let sealing = match std::fs::read_to_string(&key_path) {
            Ok(text) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut bytes)
                    .map_err(|_| IdentityError::BadKey(key_path.clone()))?;
                SealingKeyPair::from_secret_bytes(bytes)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let pair = SealingKeyPair::generate();
                write_private(
                    &key_path,
                    hex::encode(pair.secret_bytes().as_ref()).as_bytes(),
                )?;
                pair
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: key_path,
                    source,
                });
            }
        };
        Ok(Self { proxy_id, sealing })
    }
}

fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    std::fs::create_dir_all(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| IdentityError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Writes via a temporary file and a rename, so a crash never leaves half a file.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut file = create_private(&temporary).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// A new file (replacing any) that only this user may read.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), None).unwrap();
        let second = Identity::load_or_create(dir.path(), None).unwrap();
        assert_eq!(first.proxy_id, second.proxy_id);
        assert_eq!(first.sealing.public_bytes(), second.sealing.public_bytes());
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path(), None),
            Err(IdentityError::BadKey(_))
        ));
    }
}
