//! A client request as every later stage reads it: its top-level body fields, borrowed from the
//! body and parsed once ([`fields`]), and the metadata headers it carries ([`metadata`]).

pub mod fields;
pub mod metadata;
