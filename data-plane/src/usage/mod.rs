//! Usage records on their way to the control plane: the crash-safe on-disk spool, its entry format,
//! and the wire encoding of a batch.

pub mod spool;
pub mod spool_format;
pub mod wire;
