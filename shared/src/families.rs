//! The facts both halves need about a provider family, kept once so the control plane's key
//! check and the proxy's traffic reach an upstream the same way: where the key travels, the
//! version a family requires (and how a provider's `api_version` and an operator's own header
//! override it), and the cheapest authenticated call that tests a key.

/// A provider family: the wire format and authentication its upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI itself.
    OpenAi,
    /// Servers that speak OpenAI's API and may run without a key (vLLM, custom).
    SelfHosted,
    AzureOpenAi,
    Anthropic,
    Gemini,
}

/// How a provider key travels upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key as the whole value of this header.
    Header(&'static str),
}

/// A version header a family requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionHeader {
    pub name: &'static str,
    /// Sent when the provider names no `api_version`.
    pub default: &'static str,
}

/// The Messages API version Sluice speaks to Anthropic unless a provider names another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

impl Family {
    pub fn credential(self) -> Credential {
        match self {
            Family::OpenAi | Family::SelfHosted => Credential::Bearer,
            Family::AzureOpenAi => Credential::Header("api-key"),
            Family::Anthropic => Credential::Header("x-api-key"),
            Family::Gemini => Credential::Header("x-goog-api-key"),
        }
    }

    /// Whether a provider of this family may run without a key.
    pub fn keyless(self) -> bool {
        self == Family::SelfHosted
    }

    pub fn version_header(self) -> Option<VersionHeader> {
        (self == Family::Anthropic).then_some(VersionHeader {
            name: "anthropic-version",
            default: ANTHROPIC_VERSION,
        })
    }

    /// The query parameter that carries the provider's `api_version` (Azure's `api-version`),
    /// which such a family requires.
    pub fn version_query(self) -> Option<&'static str> {
        (self == Family::AzureOpenAi).then_some("api-version")
    }

    /// The version header to send for a provider with `api_version` and the operator's
    /// `extra_headers`: none when the operator set that header (theirs is sent as it is), else
    /// the provider's `api_version`, else the family's default.
    pub fn version_header_value<'a>(
        self,
        api_version: &'a str,
        mut extra_header_names: impl Iterator<Item = &'a str>,
    ) -> Option<(&'static str, &'a str)> {
        let header = self.version_header()?;
        if extra_header_names.any(|name| name.eq_ignore_ascii_case(header.name)) {
            return None;
        }
        Some((
            header.name,
            if api_version.is_empty() {
                header.default
            } else {
                api_version
            },
        ))
    }

    /// The path under the provider's base URL of the cheapest authenticated call: listing the
    /// models, or reading `model` when one is named.
    pub fn key_check_path(self, model: Option<&str>) -> Vec<&str> {
        let mut path = match self {
            Family::AzureOpenAi if model.is_some() => vec!["openai", "deployments"],
            Family::AzureOpenAi => vec!["openai", "models"],
            Family::Anthropic => vec!["v1", "models"],
            Family::Gemini => vec!["v1beta", "models"],
            Family::OpenAi | Family::SelfHosted => vec!["models"],
        };
        path.extend(model);
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_header_wins_then_the_providers_version_then_the_default() {
        let none: [&str; 0] = [];
        assert_eq!(
            Family::Anthropic.version_header_value("", none.into_iter()),
            Some(("anthropic-version", ANTHROPIC_VERSION))
        );
        assert_eq!(
            Family::Anthropic.version_header_value("2024-10-22", ["x-team"].into_iter()),
            Some(("anthropic-version", "2024-10-22"))
        );
        assert_eq!(
            Family::Anthropic.version_header_value("2024-10-22", ["Anthropic-Version"].into_iter()),
            None
        );
        assert_eq!(
            Family::OpenAi.version_header_value("x", none.into_iter()),
            None
        );
        assert_eq!(
            Family::AzureOpenAi.key_check_path(Some("gpt4o")),
            ["openai", "deployments", "gpt4o"]
        );
        assert_eq!(Family::Gemini.key_check_path(None), ["v1beta", "models"]);
    }
}
