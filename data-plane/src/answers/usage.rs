//! The tokens an answer used, normalised to OpenAI's convention whatever the family: input
//! includes cached input, output includes reasoning.

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
}
