//! Sortable unique ids.

use rand::RngCore;

/// A new UUIDv7 as text: time-ordered, so ids sort by creation and index well. The random
/// bits come from the thread-local CSPRNG rather than a system call per id, which matters on
/// the request path.
pub fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
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
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id() > ids[999]);
    }
}
