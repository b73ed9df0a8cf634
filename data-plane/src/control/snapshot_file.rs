//! The last validated snapshot on disk, so a restarted proxy serves before the control plane
//! returns. Provider keys in it are still sealed. Layout: `SLSNAP1\n` ‖ SHA-256(payload) ‖
//! payload (the encoded snapshot); a truncated or altered file fails the checksum and is
//! refused, never half-loaded.

use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use sluice_proto::config::v1 as pb;

use crate::control::identity::{IdentityError, write_private};

const MAGIC: &[u8] = b"SLSNAP1\n";
const FILE: &str = "snapshot.bin";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a Sluice snapshot, or truncated or altered (checksum mismatch)")]
    Corrupt(PathBuf),
    #[error(transparent)]
    Write(#[from] IdentityError),
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

pub fn save(data_dir: &Path, snapshot: &pb::Snapshot) -> Result<(), SnapshotFileError> {
    let payload = snapshot.encode_to_vec();
    let mut contents = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
    contents.extend_from_slice(MAGIC);
    contents.extend_from_slice(&Sha256::digest(&payload));
    contents.extend_from_slice(&payload);
    write_private(&path(data_dir), &contents)?;
    Ok(())
}

/// `Ok(None)` when there is no saved snapshot yet.
pub fn load(data_dir: &Path) -> Result<Option<pb::Snapshot>, SnapshotFileError> {
    let path = path(data_dir);
    let contents = match std::fs::read(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotFileError::Io { path, source }),
    };
    let Some(rest) = contents.strip_prefix(MAGIC) else {
        return Err(SnapshotFileError::Corrupt(path));
    };
    if rest.len() < 32 || Sha256::digest(&rest[32..]).as_slice() != &rest[..32] {
        return Err(SnapshotFileError::Corrupt(path));
    }
    pb::Snapshot::decode(&rest[32..])
        .map(Some)
        .map_err(|_| SnapshotFileError::Corrupt(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let snapshot = pb::Snapshot {
            version: 7,
            generated_at_us: 1,
            ..Default::default()
        };
        save(dir.path(), &snapshot).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().version, 7);

        let good = std::fs::read(path(dir.path())).unwrap();
        for cut in [0, 3, MAGIC.len() + 10, good.len() - 1] {
            std::fs::write(path(dir.path()), &good[..cut]).unwrap();
            assert!(
                matches!(load(dir.path()), Err(SnapshotFileError::Corrupt(_))),
                "cut {cut}"
            );
        }
        for at in 0..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0x10;
            std::fs::write(path(dir.path()), &flipped).unwrap();
            assert!(load(dir.path()).is_err(), "bit at {at}");
        }
    }
}
