//! The usage spool: every usage record is written to a memory-mapped file before the client
//! sees its answer, so a proxy killed at any instant (even `SIGKILL`: the kernel keeps the
//! mapped pages) has each answered request on disk. The reporter reads the records back,
//! delivers them in batches and deletes a segment file once all of it is acknowledged.
//!
//! The request path's cost is one `fetch_add` to reserve space, an encode into the mapping and
//! one atomic store to commit; there is no lock and no system call. Segments are preallocated
//! (`posix_fallocate`), so a full disk shows up as a failed rotation, never as `SIGBUS`.
//! A rotation — once per segment — takes a mutex that only rotations and the reporter use.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};
use memmap2::MmapRaw;
use prost::Message;
use sluice_proto::usage::v1 as pb;

use crate::usage::spool_format::{
    COMMIT_LEN, COMMITTED, EntryKind, HEADER_LEN, PAYLOAD_IN_BODY, committed_header, entry_len,
    seal_body,
};

const SEGMENT_SUFFIX: &str = "spool";
const LOCK_FILE: &str = "LOCK";
/// `end` of a segment no writer has yet found full.
const OPEN: usize = usize::MAX;

/// What to do when the spool reaches its size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse new LIVE requests (their cost could not be metered); MOCK traffic continues.
    Refuse,
    /// Delete the oldest undelivered records to make room, counting them as dropped.
    DropOldest,
}

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub segment_bytes: usize,
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the usage spool is at its size bound")]
    Full,
    #[error("usage spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("usage spool {0} is in use by another sluice-proxy; give each proxy its own data dir")]
    Locked(PathBuf),
    #[error("a usage record of {0} bytes does not fit a spool segment")]
    TooLarge(usize),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

// === impl Segment ===

/// One preallocated, memory-mapped spool file. Writers reserve disjoint ranges with one
/// `fetch_add`; reservations are contiguous, so the writer whose range crosses the end knows
/// exactly where the entries stop.
pub struct Segment {
    pub seq: u64,
    path: PathBuf,
    map: MmapRaw,
    reserved: AtomicUsize,
    end: AtomicUsize,
    /// Streams whose `Started` entry is here and whose `Completed` entry is not yet written:
    /// the file must outlive them.
    open_streams: AtomicUsize,
}

enum Reservation {
    Fits(usize),
    /// This writer's range was the first to cross the end: it records where entries stop.
    Crossed(usize),
    Past,
}

/// What the reader finds at an offset.
pub enum Read<'a> {
    Entry {
        kind: EntryKind,
        payload: &'a [u8],
        next: usize,
    },
    /// Reserved or not yet reserved: a writer may still put an entry here.
    Pending,
    /// No entry will ever be here.
    End,
}

impl Segment {
    fn create(dir: &Path, seq: u64, capacity: usize) -> Result<Self, SpoolError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let created = preallocate(&file, capacity)
            .and_then(|()| MmapRaw::map_raw(&file))
            .map_err(io_error(&path));
        let map = match created {
            Ok(map) => map,
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
        };
        Ok(Self {
            seq,
            path,
            map,
            reserved: AtomicUsize::new(0),
            end: AtomicUsize::new(OPEN),
            open_streams: AtomicUsize::new(0),
        })
    }

    /// Creates the segment and has its pages made writable in the background: a shared file
    /// mapping takes a page fault (with the filesystem's block bookkeeping, which may sleep) on
    /// the first write to each page, and those faults would otherwise land on requests.
    fn create_prefaulted(dir: &Path, seq: u64, capacity: usize) -> Result<Arc<Self>, SpoolError> {
        let segment = Arc::new(Self::create(dir, seq, capacity)?);
        let prefaulting = segment.clone();
        let spawned = std::thread::Builder::new()
            .name("usage-spool-prefault".into())
            .spawn(move || {
                // Writes nothing; on kernels without MADV_POPULATE_WRITE it fails and writers
                // fault pages in themselves, as before.
                let _ = prefaulting.map.advise(memmap2::Advice::PopulateWrite);
            });
        if let Err(error) = spawned {
            tracing::debug!(%error, "cannot prefault a usage spool segment");
        }
        Ok(segment)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.map.len()
    }

    fn reserve(&self, len: usize) -> Reservation {
        let capacity = self.capacity();
        let offset = self.reserved.fetch_add(len, Ordering::Relaxed);
        if offset.saturating_add(len) <= capacity {
            Reservation::Fits(offset)
        } else if offset <= capacity {
            Reservation::Crossed(offset)
        } else {
            Reservation::Past
        }
    }

    fn seal(&self, end: usize) {
        self.end.store(end, Ordering::Release);
    }

    /// Whether a writer has found this segment full (so no entry can follow `end`).
    pub fn sealed(&self) -> bool {
        self.end.load(Ordering::Acquire) != OPEN
    }

    /// Bytes reserved so far, up to the capacity: an upper bound of what readers may find.
    pub fn written_bound(&self) -> usize {
        self.reserved.load(Ordering::Relaxed).min(self.capacity())
    }

    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Acquire)
    }

    fn commit_word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is a multiple of 8 inside the mapping (callers check), the mapping
        // is page-aligned and lives as long as `self`; the commit word is only ever accessed
        // atomically.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    /// Writes one entry into a range this writer reserved, commit word last.
    fn write(&self, offset: usize, len: usize, kind: EntryKind, record: &pb::UsageRecord) {
        debug_assert!(offset.is_multiple_of(8) && offset + len <= self.capacity());
        // SAFETY: `[offset, offset + len)` lies inside the mapping and was handed to this
        // writer alone by `reserve`; no reader looks at it before the commit word is stored.
        let body = unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().add(offset + COMMIT_LEN),
                len - COMMIT_LEN,
            )
        };
        let payload_len = record.encoded_len();
        let mut payload = &mut body[PAYLOAD_IN_BODY..PAYLOAD_IN_BODY + payload_len];
        let kind = match record.encode(&mut payload) {
            Ok(()) => kind,
            // Cannot happen (the range was sized by `encoded_len`), but the space must still
            // be committed or the reader would wait on it forever.
            Err(_) => EntryKind::Void,
        };
        seal_body(body, kind, payload_len);
        self.commit_word(offset).store(COMMITTED, Ordering::Release);
    }

    /// The entry at `offset`, if it is complete.
    pub fn read(&self, offset: usize) -> Read<'_> {
        if offset >= self.end.load(Ordering::Acquire) {
            return Read::End;
        }
        if offset + HEADER_LEN > self.capacity() {
            return Read::End;
        }
        if self.commit_word(offset).load(Ordering::Acquire) != COMMITTED {
            return Read::Pending;
        }
        // SAFETY: a committed entry is never written again, and its header and payload lie
        // inside the mapping (checked below before the payload is sliced).
        let header =
            unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), HEADER_LEN) };
        let Some((kind, payload_len)) = committed_header(header) else {
            return Read::End;
        };
        let next = offset + entry_len(payload_len);
        if next > self.capacity() {
            return Read::End;
        }
        let payload = unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(offset + HEADER_LEN), payload_len)
        };
        Read::Entry {
            kind,
            payload,
            next,
        }
    }

    /// Makes what is written from `from` to `upto` durable (an `msync` of that range; what
    /// lies before `from` was made durable earlier): records survive power loss from the
    /// moment this returns.
    pub fn sync(&self, from: usize, upto: usize) -> io::Result<()> {
        let upto = upto.min(self.capacity());
        let from = from.min(upto);
        self.map.flush_range(from, upto - from)
    }
}

fn preallocate(file: &File, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain system call on a file descriptor this function borrows.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_SUFFIX}"))
}

// === impl UsageSpool ===

/// A stream's `Started` entry, held until its `Completed` entry is written.
pub struct StartedMark(Arc<Segment>);

impl Drop for StartedMark {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct UsageSpool {
    settings: SpoolSettings,
    max_segments: usize,
    current: ArcSwap<Segment>,
    /// Live segments, oldest first. Only rotations and the reporter take this lock.
    segments: Mutex<Vec<Arc<Segment>>>,
    next_seq: AtomicU64,
    /// Files left by an earlier process that the reporter has not yet delivered and deleted.
    recovered_files: AtomicUsize,
    refusing: AtomicBool,
    _lock: File,
}

impl UsageSpool {
    /// Opens (creating) the spool directory, locks it against a second proxy, and returns the
    /// spool with the files an earlier process left behind, oldest first, for recovery.
    pub fn open(settings: SpoolSettings) -> Result<(Arc<Self>, Vec<PathBuf>), SpoolError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock.try_lock()
            .map_err(|_| SpoolError::Locked(dir.clone()))?;
        let mut leftovers: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io_error(&dir))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let seq = path
                    .extension()
                    .filter(|ext| *ext == SEGMENT_SUFFIX)
                    .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok())?;
                Some((seq, path))
            })
            .collect();
        leftovers.sort();
        let next_seq = leftovers.last().map_or(1, |(seq, _)| seq + 1);
        let max_segments =
            usize::try_from(settings.max_bytes / settings.segment_bytes.max(1) as u64)
                .unwrap_or(usize::MAX)
                .max(2);
        let first = Segment::create_prefaulted(&dir, next_seq, settings.segment_bytes)?;
        let spool = Arc::new(Self {
            settings,
            max_segments,
            current: ArcSwap::new(first.clone()),
            segments: Mutex::new(vec![first]),
            next_seq: AtomicU64::new(next_seq + 1),
            recovered_files: AtomicUsize::new(leftovers.len()),
            refusing: AtomicBool::new(false),
            _lock: lock,
        });
        spool.update_refusing(1);
        Ok((spool, leftovers.into_iter().map(|(_, path)| path).collect()))
    }

    pub fn settings(&self) -> &SpoolSettings {
        &self.settings
    }

    /// Whether LIVE traffic must be refused: the spool is at its bound under [`WhenFull::Refuse`].
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Segment files in the directory: this process's and those an earlier one left.
    pub fn files_on_disk(&self) -> usize {
        self.segments_on_disk(self.lock_segments().len())
    }

    /// Whether the spool is at its bound, whatever the policy (for the metric).
    pub fn at_bound(&self) -> bool {
        self.segments_on_disk(self.lock_segments().len()) + 1 >= self.max_segments
    }

    /// Appends a finished request's record. `started` is the stream's mark, released once
    /// the record is on disk.
    pub fn complete(
        &self,
        record: &pb::UsageRecord,
        started: Option<StartedMark>,
    ) -> Result<(), SpoolError> {
        self.append(EntryKind::Completed, record)?;
        drop(started);
        Ok(())
    }

    /// Appends a stream's record as an estimate, before its headers go to the client.
    pub fn start(&self, estimate: &pb::UsageRecord) -> Result<StartedMark, SpoolError> {
        let segment = Guard::into_inner(self.append(EntryKind::Started, estimate)?);
        segment.open_streams.fetch_add(1, Ordering::AcqRel);
        Ok(StartedMark(segment))
    }

    fn append(
        &self,
        kind: EntryKind,
        record: &pb::UsageRecord,
    ) -> Result<Guard<Arc<Segment>>, SpoolError> {
        let len = entry_len(record.encoded_len());
        if len > self.settings.segment_bytes {
            return Err(SpoolError::TooLarge(len));
        }
        loop {
            // A guard, not a clone of the Arc: most appends need no reference afterwards.
            let segment = self.current.load();
            match segment.reserve(len) {
                Reservation::Fits(offset) => {
                    segment.write(offset, len, kind, record);
                    return Ok(segment);
                }
                Reservation::Crossed(offset) => {
                    segment.seal(offset);
                    self.rotate(&segment)?;
                }
                Reservation::Past => self.rotate(&segment)?,
            }
        }
    }

    fn rotate(&self, full: &Arc<Segment>) -> Result<(), SpoolError> {
        let mut segments = self.lock_segments();
        if !Arc::ptr_eq(&self.current.load(), full) {
            return Ok(());
        }
        if self.segments_on_disk(segments.len()) >= self.max_segments {
            self.refusing.store(
                self.settings.when_full == WhenFull::Refuse,
                Ordering::Relaxed,
            );
            return Err(SpoolError::Full);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let next =
            Segment::create_prefaulted(&self.settings.dir, seq, self.settings.segment_bytes)?;
        segments.push(next.clone());
        self.current.store(next);
        self.update_refusing(segments.len());
        Ok(())
    }

    fn segments_on_disk(&self, live: usize) -> usize {
        live + self.recovered_files.load(Ordering::Relaxed)
    }

    /// One segment of headroom is kept for requests already admitted.
    fn update_refusing(&self, live: usize) {
        let at_bound = self.segments_on_disk(live) + 1 >= self.max_segments;
        self.refusing.store(
            at_bound && self.settings.when_full == WhenFull::Refuse,
            Ordering::Relaxed,
        );
    }

    fn lock_segments(&self) -> MutexGuard<'_, Vec<Arc<Segment>>> {
        // The lock guards plain pushes and removals; a poisoned one still holds a valid list.
        self.segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // --- the reporter's side ---

    /// Live segments, oldest first.
    pub fn live_segments(&self) -> Vec<Arc<Segment>> {
        self.lock_segments().clone()
    }

    pub fn is_current(&self, segment: &Arc<Segment>) -> bool {
        Arc::ptr_eq(&self.current.load(), segment)
    }

    /// Deletes a segment whose records are all acknowledged (or dropped at the bound). Only
    /// a sealed segment, or any once writers have stopped.
    pub fn retire(&self, segment: &Arc<Segment>) -> Result<(), SpoolError> {
        let mut segments = self.lock_segments();
        segments.retain(|s| !Arc::ptr_eq(s, segment));
        let result = std::fs::remove_file(&segment.path).map_err(io_error(&segment.path));
        self.update_refusing(segments.len());
        result
    }

    /// A recovered file was delivered and deleted, or dropped.
    pub fn recovered_file_gone(&self) {
        let _ = self
            .recovered_files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.update_refusing(self.lock_segments().len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::spool_format::scan;

    fn settings(dir: &Path, segment_bytes: usize, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_owned(),
            segment_bytes,
            max_bytes,
            when_full: WhenFull::Refuse,
        }
    }

    fn record(id: usize) -> pb::UsageRecord {
        pb::UsageRecord {
            request_id: format!("req-{id:06}"),
            model: "gpt-test".into(),
            input_tokens: id as u64,
            ..Default::default()
        }
    }

    fn ids_on_disk(dir: &Path) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_SUFFIX))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|path| {
                let bytes = std::fs::read(path).unwrap();
                scan(&bytes)
                    .entries
                    .iter()
                    .map(|e| pb::UsageRecord::decode(e.payload).unwrap().request_id)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn concurrent_writers_rotate_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, leftovers) = UsageSpool::open(settings(dir.path(), 4096, 1 << 30)).unwrap();
        assert!(leftovers.is_empty());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        spool.complete(&record(t * 1000 + i), None).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(spool.live_segments().len() > 10, "rotation was exercised");
        let mut ids = ids_on_disk(dir.path());
        ids.sort();
        let mut expected: Vec<String> = (0..4)
            .flat_map(|t| (0..500).map(move |i| record(t * 1000 + i).request_id))
            .collect();
        expected.sort();
        assert_eq!(ids, expected);
    }

    #[test]
    fn the_reader_sees_entries_in_order_and_where_a_full_segment_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = UsageSpool::open(settings(dir.path(), 1024, 1 << 20)).unwrap();
        for i in 0..40 {
            spool.complete(&record(i), None).unwrap();
        }
        let mut found = Vec::new();
        for segment in spool.live_segments() {
            let mut offset = 0;
            loop {
                match segment.read(offset) {
                    Read::Entry { payload, next, .. } => {
                        found.push(pb::UsageRecord::decode(payload).unwrap().input_tokens);
                        offset = next;
                    }
                    Read::Pending => {
                        assert!(
                            spool.is_current(&segment),
                            "only the current segment may grow"
                        );
                        break;
                    }
                    Read::End => {
                        assert!(segment.sealed());
                        break;
                    }
                }
            }
        }
        assert_eq!(found, (0..40).collect::<Vec<u64>>());
    }

    #[test]
    fn at_the_bound_live_traffic_is_refused_and_space_freed_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = UsageSpool::open(settings(dir.path(), 1024, 3 * 1024)).unwrap();
        assert!(!spool.refusing());
        let mut written = 0;
        while spool.complete(&record(written), None).is_ok() {
            written += 1;
            assert!(written < 1000, "the bound never held");
        }
        assert!(spool.refusing());
        assert_eq!(ids_on_disk(dir.path()).len(), written);
        // One segment of headroom stays free for requests already admitted.
        for oldest in &spool.live_segments()[..2] {
            spool.retire(oldest).unwrap();
        }
        assert!(!spool.refusing());
        spool.complete(&record(written), None).unwrap();
    }

    #[test]
    fn a_second_proxy_cannot_share_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _first = UsageSpool::open(settings(dir.path(), 4096, 1 << 20)).unwrap();
        assert!(matches!(
            UsageSpool::open(settings(dir.path(), 4096, 1 << 20)),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn an_open_stream_is_counted_until_completed() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = UsageSpool::open(settings(dir.path(), 4096, 1 << 20)).unwrap();
        let mark = spool.start(&record(1)).unwrap();
        let segment = spool.live_segments()[0].clone();
        assert_eq!(segment.open_streams(), 1);
        spool.complete(&record(1), Some(mark)).unwrap();
        assert_eq!(segment.open_streams(), 0);
    }
}
