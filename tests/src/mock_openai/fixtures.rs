//! The canned answers of `tests/fixtures/`, one file per answer in its family's wire format,
//! compiled in so the mock needs no path at run time.

use serde_json::Value;

const FILES: &[(&str, &str)] = &[
    (
        "openai/chat_completion.json",
        include_str!("../../fixtures/openai/chat_completion.json"),
    ),
    (
        "openai/chat_completion_chunk.json",
        include_str!("../../fixtures/openai/chat_completion_chunk.json"),
    ),
    (
        "openai/chat_completion_usage_chunk.json",
        include_str!("../../fixtures/openai/chat_completion_usage_chunk.json"),
    ),
    (
        "openai/embeddings.json",
        include_str!("../../fixtures/openai/embeddings.json"),
    ),
    (
        "openai/response.json",
        include_str!("../../fixtures/openai/response.json"),
    ),
    (
        "openai/error.json",
        include_str!("../../fixtures/openai/error.json"),
    ),
    (
        "anthropic/message.json",
        include_str!("../../fixtures/anthropic/message.json"),
    ),
    (
        "anthropic/stream.json",
        include_str!("../../fixtures/anthropic/stream.json"),
    ),
    (
        "anthropic/error.json",
        include_str!("../../fixtures/anthropic/error.json"),
    ),
    (
        "gemini/generate_content.json",
        include_str!("../../fixtures/gemini/generate_content.json"),
    ),
    (
        "gemini/error.json",
        include_str!("../../fixtures/gemini/error.json"),
    ),
];

/// The fixture at `path` under `tests/fixtures/`, parsed.
pub fn fixture(path: &str) -> Value {
    let (_, text) = FILES
        .iter()
        .find(|(name, _)| *name == path)
        .unwrap_or_else(|| panic!("no fixture {path}"));
    serde_json::from_str(text).unwrap_or_else(|error| panic!("fixture {path}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::super::{ANTHROPIC_CACHE_READ, COMPLETION_TOKENS, GEMINI_THOUGHTS, PROMPT_TOKENS};
    use super::fixture;

    #[test]
    fn every_fixture_parses() {
        for (path, _) in super::FILES {
            fixture(path);
        }
    }

    /// The mock's token counts are the fixtures' own, so a test can rely on either.
    #[test]
    fn fixtures_report_the_mock_token_counts() {
        for path in [
            "openai/chat_completion.json",
            "openai/chat_completion_usage_chunk.json",
        ] {
            let usage = &fixture(path)["usage"];
            assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS, "{path}");
            assert_eq!(usage["completion_tokens"], COMPLETION_TOKENS, "{path}");
        }
        let response = &fixture("openai/response.json")["usage"];
        assert_eq!(response["input_tokens"], PROMPT_TOKENS);
        assert_eq!(response["output_tokens"], COMPLETION_TOKENS);
        let message = &fixture("anthropic/message.json")["usage"];
        assert_eq!(message["input_tokens"], PROMPT_TOKENS);
        assert_eq!(message["cache_read_input_tokens"], ANTHROPIC_CACHE_READ);
        assert_eq!(message["output_tokens"], COMPLETION_TOKENS);
        let stream = fixture("anthropic/stream.json");
        assert_eq!(stream[0]["message"]["usage"]["input_tokens"], PROMPT_TOKENS);
        assert_eq!(stream[5]["usage"]["output_tokens"], COMPLETION_TOKENS);
        let gemini = &fixture("gemini/generate_content.json")["usageMetadata"];
        assert_eq!(gemini["promptTokenCount"], PROMPT_TOKENS);
        assert_eq!(gemini["candidatesTokenCount"], COMPLETION_TOKENS);
        assert_eq!(gemini["thoughtsTokenCount"], GEMINI_THOUGHTS);
    }
}
