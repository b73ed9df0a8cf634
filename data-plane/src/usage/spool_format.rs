//! The usage spool's on-disk entry format, and the scan that reads it back after a crash.
//!
//! An entry is a 16-byte header and its payload, padded to 8 bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | commit word: [`COMMITTED`] once the whole entry is written, zero before |
//! | 4..8 | payload length (little endian) |
//! | 8..12 | CRC-32 of bytes 4..8, the kind byte and the payload |
//! | 12 | kind ([`EntryKind`]) |
//! | 13..16 | zero |
//!
//! Writers fill everything but the commit word, then store the commit word last, so a reader
//! in the same process never sees half an entry. After a crash (or a torn copy of the file) an
//! entry is trusted only if its commit word, length and CRC all agree; anything else is skipped
//! by searching forward, 8 bytes at a time, for the next entry that does.

pub const HEADER_LEN: usize = 16;
pub const ALIGN: usize = 8;
/// "SLUS" read as a little-endian word.
pub const COMMITTED: u32 = u32::from_le_bytes(*b"SLUS");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A finished request's usage record.
    Completed = 1,
    /// A stream whose headers went to the client: its record as an estimate, in case the
    /// proxy dies before the stream's `Completed` entry is written.
    Started = 2,
    /// Space a writer reserved but could not fill; readers step over it.
    Void = 3,
}

impl EntryKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Completed),
            2 => Some(Self::Started),
            3 => Some(Self::Void),
            _ => None,
        }
    }
}

/// Bytes an entry with this payload occupies.
pub fn entry_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len.div_ceil(ALIGN) * ALIGN
}

/// Bytes before an entry's body: the commit word, which is stored on its own, last.
pub const COMMIT_LEN: usize = 4;
/// Where the payload starts within an entry's body.
pub const PAYLOAD_IN_BODY: usize = HEADER_LEN - COMMIT_LEN;

/// Fills the rest of an entry's header for a payload already written at
/// `body[PAYLOAD_IN_BODY..]`; `body` is the entry without its commit word, which the caller
/// stores last.
pub fn seal_body(body: &mut [u8], kind: EntryKind, payload_len: usize) {
    let len = (payload_len as u32).to_le_bytes();
    let crc = checksum(
        len,
        kind as u8,
        &body[PAYLOAD_IN_BODY..PAYLOAD_IN_BODY + payload_len],
    );
    body[0..4].copy_from_slice(&len);
    body[4..8].copy_from_slice(&crc.to_le_bytes());
    body[8] = kind as u8;
    body[9..12].fill(0);
}

fn checksum(len: [u8; 4], kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Reads the length and kind of an entry whose commit word a reader has already seen; `None`
/// if the header is not one a writer produces (only possible in a damaged file).
pub fn committed_header(header: &[u8]) -> Option<(EntryKind, usize)> {
    let len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?) as usize;
    let kind = EntryKind::from_byte(*header.get(12)?)?;
    Some((kind, len))
}

/// One trusted entry found by [`scan`].
#[derive(Debug, PartialEq, Eq)]
pub struct ScannedEntry<'a> {
    pub kind: EntryKind,
    pub payload: &'a [u8],
}

/// What [`scan`] found in a spool file written by an earlier process.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan<'a> {
    pub entries: Vec<ScannedEntry<'a>>,
    /// Stretches of bytes that held no trustworthy entry but were followed by one, or ended
    /// the file with something other than zeros: torn or damaged entries.
    pub damaged_regions: usize,
}

/// Every trustworthy entry in `file`, in order. Never fails: damage is counted and stepped over.
pub fn scan(file: &[u8]) -> Scan<'_> {
    let mut out = Scan::default();
    let mut offset = 0;
    let mut in_damage = false;
    while offset + HEADER_LEN <= file.len() {
        match entry_at(file, offset) {
            Some((kind, payload, next)) => {
                if in_damage {
                    out.damaged_regions += 1;
                    in_damage = false;
                }
                if kind != EntryKind::Void {
                    out.entries.push(ScannedEntry { kind, payload });
                }
                offset = next;
            }
            None => {
                // Zeros are space nobody wrote yet; anything else is a torn or damaged entry.
                if file[offset..offset + ALIGN].iter().any(|b| *b != 0) {
                    in_damage = true;
                }
                offset += ALIGN;
            }
        }
    }
    if in_damage || file[offset.min(file.len())..].iter().any(|b| *b != 0) {
        out.damaged_regions += 1;
    }
    out
}

fn entry_at(file: &[u8], offset: usize) -> Option<(EntryKind, &[u8], usize)> {
    let header = file.get(offset..offset + HEADER_LEN)?;
    if u32::from_le_bytes(header[0..4].try_into().ok()?) != COMMITTED {
        return None;
    }
    let (kind, len) = committed_header(header)?;
    let start = offset + HEADER_LEN;
    let payload = file.get(start..start.checked_add(len)?)?;
    let stored = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let len_bytes: [u8; 4] = header[4..8].try_into().ok()?;
    if checksum(len_bytes, kind as u8, payload) != stored {
        return None;
    }
    Some((kind, payload, offset + entry_len(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; entry_len(payload.len())];
        bytes[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        seal_body(&mut bytes[COMMIT_LEN..], kind, payload.len());
        bytes[0..4].copy_from_slice(&COMMITTED.to_le_bytes());
        bytes
    }

    fn file_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut file: Vec<u8> = payloads
            .iter()
            .flat_map(|p| entry(EntryKind::Completed, p))
            .collect();
        // The rest of a preallocated segment is zeros.
        file.extend(std::iter::repeat_n(0, 256));
        file
    }

    #[test]
    fn entries_read_back_in_order_and_zeros_are_not_damage() {
        let file = file_of(&[b"first", b"", b"a payload of exactly 16"]);
        let scan = scan(&file);
        let payloads: Vec<&[u8]> = scan.entries.iter().map(|e| e.payload).collect();
        assert_eq!(payloads, [&b"first"[..], b"", b"a payload of exactly 16"]);
        assert_eq!(scan.damaged_regions, 0);
    }

    #[test]
    fn an_uncommitted_entry_in_the_middle_is_skipped_and_counted() {
        let mut file = entry(EntryKind::Completed, b"one");
        let mut torn = entry(EntryKind::Completed, b"never committed");
        torn[0..4].fill(0);
        file.extend(torn);
        file.extend(entry(EntryKind::Started, b"three"));
        let scan = scan(&file);
        assert_eq!(
            scan.entries,
            [
                ScannedEntry {
                    kind: EntryKind::Completed,
                    payload: b"one"
                },
                ScannedEntry {
                    kind: EntryKind::Started,
                    payload: b"three"
                }
            ]
        );
        assert_eq!(scan.damaged_regions, 1);
    }

    #[test]
    fn flipped_bits_fail_the_checksum() {
        let mut file = file_of(&[b"alpha", b"bravo", b"charlie"]);
        let second = entry_len(5);
        file[second + HEADER_LEN + 2] ^= 0x40;
        let scan = scan(&file);
        let payloads: Vec<&[u8]> = scan.entries.iter().map(|e| e.payload).collect();
        assert_eq!(payloads, [&b"alpha"[..], b"charlie"]);
        assert_eq!(scan.damaged_regions, 1);
    }

    #[test]
    fn every_truncation_keeps_each_whole_entry_and_never_panics() {
        let payloads: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; usize::from(i) * 7 + 1]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let file = file_of(&refs);
        // An entry is whole once its payload is; the padding after it carries nothing.
        let ends: Vec<usize> = payloads
            .iter()
            .scan(0, |start, p| {
                let end = *start + HEADER_LEN + p.len();
                *start += entry_len(p.len());
                Some(end)
            })
            .collect();
        for cut in 0..=file.len() {
            let scan = scan(&file[..cut]);
            let whole = ends.iter().filter(|end| **end <= cut).count();
            assert_eq!(scan.entries.len(), whole, "cut at {cut}");
            for (found, expected) in scan.entries.iter().zip(&payloads) {
                assert_eq!(found.payload, expected.as_slice());
            }
            // At most the one entry the cut went through is reported.
            assert!(scan.damaged_regions <= 1, "cut at {cut}");
        }
    }

    #[test]
    fn void_entries_are_stepped_over() {
        let mut file = entry(EntryKind::Void, &[0; 40]);
        file.extend(entry(EntryKind::Completed, b"kept"));
        let scan = scan(&file);
        assert_eq!(scan.entries.len(), 1);
        assert_eq!(scan.damaged_regions, 0);
    }
}
