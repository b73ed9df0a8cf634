//! One module per console page; each renders from admin calls and posts its changes as admin
//! calls.

pub mod audit;
pub mod budgets;
pub mod fleet;
pub mod models;
pub mod organizations;
pub mod overview;
pub mod projects;
pub mod providers;
pub mod sign_in;
pub mod usage;

use serde::{Deserialize, Deserializer};
use sluice_proto::common::v1 as common;
use sluice_shared::secret::SecretString;

use super::request::Guarded;

/// A secret typed into a password field: wrapped the moment it is read, redacted in any
/// debug output, zeroized when dropped.
pub struct FormSecret(pub SecretString);

impl<'de> Deserialize<'de> for FormSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|value| Self(SecretString::new(value)))
    }
}

/// A form with nothing but its CSRF token (a button).
#[derive(Deserialize)]
pub struct Button {
    csrf: String,
}

impl Guarded for Button {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Implements [`Guarded`] for forms whose token field is `csrf`.
macro_rules! guarded {
    ($($form:ty),+ $(,)?) => {
        $(impl $crate::console::request::Guarded for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })+
    };
}

pub(crate) use guarded;

/// The organisation's lists several pages show.
pub mod lists {
    use sluice_proto::admin::v1 as pb;

    use super::super::request::{Failure, Page};

    pub async fn projects(page: &Page, org: &str) -> Result<Vec<pb::Project>, Failure> {
        let request = page.call(pb::ListProjectsRequest {
            organization: org.to_owned(),
        });
        Ok(page
            .answer(page.admin().list_projects(request).await)?
            .projects)
    }

    pub async fn models(page: &Page, org: &str) -> Result<Vec<pb::Model>, Failure> {
        let request = page.call(pb::ListModelsRequest {
            organization: org.to_owned(),
        });
        Ok(page.answer(page.admin().list_models(request).await)?.models)
    }

    pub async fn providers(page: &Page, org: &str) -> Result<Vec<pb::Provider>, Failure> {
        let request = page.call(pb::ListProvidersRequest {
            organization: org.to_owned(),
        });
        Ok(page
            .answer(page.admin().list_providers(request).await)?
            .providers)
    }
}

/// A form the console could not turn into a request, shown as the service's own refusals are.
pub fn invalid(page: &super::request::Page, message: String) -> super::request::Failure {
    super::request::Failure::Shown(super::errors::ShownError::invalid_form(
        message,
        &page.request_id,
    ))
}

pub fn posture_label(posture: i32) -> &'static str {
    match common::Posture::try_from(posture) {
        Ok(common::Posture::Live) => "LIVE",
        _ => "MOCK",
    }
}

pub const PROVIDER_TYPES: &[(common::ProviderType, &str, &str)] = &[
    (common::ProviderType::Openai, "openai", "OpenAI"),
    (common::ProviderType::Anthropic, "anthropic", "Anthropic"),
    (common::ProviderType::Google, "google", "Google Gemini"),
    (
        common::ProviderType::AzureOpenai,
        "azure-openai",
        "Azure OpenAI",
    ),
    (common::ProviderType::Vllm, "vllm", "vLLM"),
    (common::ProviderType::Custom, "custom", "OpenAI-compatible"),
];

pub fn provider_type_label(kind: i32) -> &'static str {
    PROVIDER_TYPES
        .iter()
        .find(|(each, _, _)| *each as i32 == kind)
        .map_or("unknown", |(_, _, label)| label)
}

/// An optional number typed into a form: empty is `None`.
pub fn optional_number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{field}: '{text}' is not a whole number"))
}

/// Dollars typed into a form ("12.50") as micro-dollars.
pub fn micros_from_dollars(field: &str, text: &str) -> Result<Option<i64>, String> {
    let text = text.trim().trim_start_matches('$');
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || format!("{field}: '{text}' is not an amount in dollars (e.g. 25 or 0.50)");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| invalid())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(fraction))
        .filter(|micros| *micros >= 0)
        .map(Some)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_typed_become_micros() {
        assert_eq!(micros_from_dollars("x", "12.5"), Ok(Some(12_500_000)));
        assert_eq!(micros_from_dollars("x", "$0.000001"), Ok(Some(1)));
        assert_eq!(micros_from_dollars("x", ""), Ok(None));
        assert!(micros_from_dollars("x", "1.2345678").is_err());
        assert!(micros_from_dollars("x", "-1").is_err());
        assert!(micros_from_dollars("x", "abc").is_err());
    }
}
