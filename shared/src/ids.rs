//! Sortable unique ids.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

/// The last id's timestamp and counter: `milliseconds << 12 | counter`.
static LAST: AtomicU64 = AtomicU64::new(0);

/// A new UUIDv7 as text: time-ordered, and strictly increasing within this process (RFC 9562's
/// 12-bit counter in `rand_a`, so ids made in one millisecond still sort by creation), so they
/// index well and "newest first" needs no second key. The random bits come from the
/// thread-local CSPRNG rather than a system call per id, which matters on the request path.
pub fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0))
        .unwrap_or(0)
        & 0xFFFF_FFFF_FFFF;
    let now = millis << 12;
    let next = |last: u64| if now > last { now } else { last + 1 };
    // The closure never declines, so the update always succeeds and returns the previous value.
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(next(last)))
        .unwrap_or_else(|last| last);
    let stamp = next(previous);
    let (millis, counter) = (stamp >> 12, stamp & 0xFFF);
    let mut random = [0u8; 8];
    rand::rng().fill_bytes(&mut random);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70 | ((counter >> 8) as u8 & 0x0F);
    bytes[7] = (counter & 0xFF) as u8;
    bytes[8] = 0x80 | (random[0] & 0x3F);
    bytes[9..].copy_from_slice(&random[1..]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes` into `out` (two digits a byte; `out` is twice as long): trace and
/// span ids are written on the request path, where `hex::encode`'s allocation and iterator
/// cost several times this.
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
    }
}

/// Lower-case hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_unique_and_sortable() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let parsed = uuid::Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids made in order sort in order"
        );
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id() > ids[999]);
    }
}
