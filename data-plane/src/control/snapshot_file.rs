//! The last validated snapshot on disk, so a restarted proxy serves before the control plane
//! returns. Provider keys in it are still sealed. Layout: `SLSNAP1\n` ‖ SHA-256(payload) ‖
//! payload (the encoded snapshot); a truncated or altered file fails the checksum and is
//! refused, never half-loaded.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use sluice_proto::config::v1 as pb;

use crate::control::identity::create_private;

const MAGIC: &[u8] = b"SLSNAP1\n";
const FILE: &str = "snapshot.bin";
/// `Snapshot.virtual_keys`' field number.
const VIRTUAL_KEYS_FIELD: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a Sluice snapshot, or truncated or altered (checksum mismatch)")]
    Corrupt(PathBuf),
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Saves `head` (a snapshot without virtual keys) with `keys` as one snapshot, encoded as it is
/// written: with a hundred thousand keys the whole encoding would be a transient 12 MiB.
pub fn save(
    data_dir: &Path,
    head: &pb::Snapshot,
    keys: impl Iterator<Item = pb::VirtualKeyConfig>,
) -> Result<(), SnapshotFileError> {
    let path = path(data_dir);
    let temporary = path.with_extension("tmp");
    let io = |source| SnapshotFileError::Io {
        path: temporary.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(create_private(&temporary).map_err(io)?);
    // The checksum comes first in the file but is known last: a placeholder, filled in below.
    file.write_all(MAGIC).map_err(io)?;
    file.write_all(&[0; 32]).map_err(io)?;
    let mut digest = Sha256::new();
    let mut chunk = Vec::with_capacity(64 * 1024);
    head.encode(&mut chunk)
        .map_err(|e| io(std::io::Error::other(e)))?;
    for key in keys {
        // Repeated fields concatenate: the keys appended after the head decode as its own.
        prost::encoding::message::encode(VIRTUAL_KEYS_FIELD, &key, &mut chunk);
        if chunk.len() >= 60 * 1024 {
            digest.update(&chunk);
            file.write_all(&chunk).map_err(io)?;
            chunk.clear();
        }
    }
    digest.update(&chunk);
    file.write_all(&chunk).map_err(io)?;
    let mut file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
    file.write_all(&digest.finalize()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(|source| SnapshotFileError::Io { path, source })
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
        let keys = (0..3).map(|n| pb::VirtualKeyConfig {
            id: format!("key-{n}"),
            ..Default::default()
        });
        save(dir.path(), &snapshot, keys).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.version, 7);
        let ids: Vec<&str> = loaded.virtual_keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(
            ids,
            ["key-0", "key-1", "key-2"],
            "every key, in the order given"
        );

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
