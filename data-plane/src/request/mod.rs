//! A client request as every later stage reads it: its body read within bounds ([`body`]), its
//! top-level body fields, borrowed from the body and parsed once ([`fields`]), and the
//! metadata headers it carries ([`metadata`]).

pub mod body;
pub mod fields;
pub mod metadata;
