//! Sortable unique ids.

/// A new UUIDv7 as text: time-ordered, so ids sort by creation and index well.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
