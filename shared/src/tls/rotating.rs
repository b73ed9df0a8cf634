//! A value built from files, rebuilt when any of them changes. Connections ask for the current
//! value; the files are looked at (a `stat` each) at most once per second, and a rebuild that
//! fails keeps the last good value and says so once per change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::TlsFileError;

const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What a file looked like: a replaced or rewritten file differs in one of these.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Stamp>,
    looked_at: Instant,
}

pub struct Rotating<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsFileError> + Send + Sync>,
    state: Mutex<State<T>>,
}

impl<T> Rotating<T> {
    /// Builds the first value now: files that cannot be read at start are an error.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsFileError> + Send + Sync + 'static,
    ) -> Result<Self, TlsFileError> {
        let stamps = paths.iter().map(stamp).collect();
        let current = Arc::new(build()?);
        Ok(Self {
            what,
            paths,
            build: Box::new(build),
            state: Mutex::new(State {
                current,
                stamps,
                looked_at: Instant::now(),
            }),
        })
    }

    /// The value for a new connection.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.looked_at.elapsed() < LOOK_EVERY {
            return state.current.clone();
        }
        state.looked_at = Instant::now();
        let stamps: Vec<Stamp> = self.paths.iter().map(stamp).collect();
        if stamps == state.stamps {
            return state.current.clone();
        }
        // Remembered even when the rebuild fails, so a broken file is reported once, not on
        // every connection; fixing it changes the stamps again.
        state.stamps = stamps;
        match (self.build)() {
            Ok(value) => {
                tracing::info!(
                    what = self.what,
                    "TLS files changed: new connections use them"
                );
                state.current = Arc::new(value);
            }
            Err(error) => tracing::error!(
                what = self.what,
                %error,
                "TLS files changed but cannot be used; keeping the previous ones"
            ),
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(path: &std::path::Path, text: &str) {
        let staged = path.with_extension("staged");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, path).unwrap();
    }

    #[test]
    fn a_changed_file_is_used_after_the_next_look_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value.pem");
        std::fs::write(&path, "1").unwrap();
        let reading = path.clone();
        let rotating = Rotating::new("test", vec![path.clone()], move || {
            std::fs::read_to_string(&reading)
                .unwrap()
                .trim()
                .parse::<u32>()
                .map_err(|_| TlsFileError::NoCertificate {
                    path: reading.clone(),
                })
        })
        .unwrap();
        assert_eq!(*rotating.current(), 1);

        replace(&path, "2");
        // Looked at no more than once a second: the old value until then.
        assert_eq!(*rotating.current(), 1);
        std::thread::sleep(LOOK_EVERY + Duration::from_millis(100));
        assert_eq!(*rotating.current(), 2);

        replace(&path, "not a number");
        std::thread::sleep(LOOK_EVERY + Duration::from_millis(100));
        assert_eq!(
            *rotating.current(),
            2,
            "a broken file keeps the last good value"
        );

        replace(&path, "3");
        std::thread::sleep(LOOK_EVERY + Duration::from_millis(100));
        assert_eq!(*rotating.current(), 3, "fixing the file is picked up");
    }
}
