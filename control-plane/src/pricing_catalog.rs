//! The pricing catalog: list prices and context windows of the major models, bundled with each
//! release (`pricing/catalog.toml`) and replaceable per call. Prices are integer micro-dollars
//! per million tokens, read as integers, so no price ever passes through a float.

use serde::Deserialize;

/// The catalog this release ships.
pub const BUNDLED: &str = include_str!("../pricing/catalog.toml");

const MAX_CATALOG_BYTES: usize = 1024 * 1024;
/// Over $1 000 per million tokens is a typo, not a price.
const MAX_PRICE: i64 = 1_000_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub as_of: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(rename = "model", default)]
    pub models: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub id: String,
    pub family: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Micro-dollars per million input tokens.
    pub input: i64,
    /// Input tokens served from the provider's prompt cache; absent: the input price.
    pub cached_input: Option<i64>,
    pub output: i64,
    pub context_window: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is over {MAX_CATALOG_BYTES} bytes")]
    TooLarge,
    #[error("the catalog is not valid: {0}")]
    Parse(String),
    #[error("catalog entry '{id}': {problem}")]
    Entry { id: String, problem: &'static str },
}

impl Catalog {
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        if text.len() > MAX_CATALOG_BYTES {
            return Err(CatalogError::TooLarge);
        }
        let catalog: Self = toml::from_str(text)
            .map_err(|error| CatalogError::Parse(error.message().to_owned()))?;
        for entry in &catalog.models {
            let problem = |problem| CatalogError::Entry {
                id: entry.id.clone(),
                problem,
            };
            if entry.id.is_empty() {
                return Err(problem("has no id"));
            }
            let prices = [Some(entry.input), entry.cached_input, Some(entry.output)];
            if prices
                .into_iter()
                .flatten()
                .any(|price| !(0..=MAX_PRICE).contains(&price))
            {
                return Err(problem(
                    "prices must be 0 to 1 000 000 000 micro-dollars per million tokens",
                ));
            }
        }
        Ok(catalog)
    }

    pub fn bundled() -> Result<Self, CatalogError> {
        Self::parse(BUNDLED)
    }

    /// The entry for an upstream model name: an exact id or alias, else the id of which the
    /// name is a dated snapshot ("gpt-4o-2024-08-06" → "gpt-4o").
    pub fn find(&self, name: &str) -> Option<&CatalogEntry> {
        self.models
            .iter()
            .find(|e| e.id == name || e.aliases.iter().any(|a| a == name))
            .or_else(|| {
                self.models
                    .iter()
                    .filter(|e| is_dated_snapshot(name, &e.id))
                    .max_by_key(|e| e.id.len())
            })
    }

    /// The entry for a model: by its deployments' upstream names first, then its own name.
    pub fn find_for<'a>(
        &self,
        model_name: &str,
        upstream_names: impl IntoIterator<Item = &'a str>,
    ) -> Option<&CatalogEntry> {
        upstream_names
            .into_iter()
            .find_map(|name| self.find(name))
            .or_else(|| self.find(model_name))
    }
}

/// `name` is `id` plus a date suffix: `-YYYY-MM-DD` or `-YYYYMMDD`.
fn is_dated_snapshot(name: &str, id: &str) -> bool {
    let Some(suffix) = name.strip_prefix(id).and_then(|s| s.strip_prefix('-')) else {
        return false;
    };
    let digits: String = suffix.chars().filter(|c| *c != '-').collect();
    digits.len() == 8
        && digits.chars().all(|c| c.is_ascii_digit())
        && (suffix.len() == 8 || suffix.len() == 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_parses_and_knows_the_major_models() {
        let catalog = Catalog::bundled().unwrap();
        for id in [
            "gpt-4o-mini",
            "gpt-5",
            "claude-sonnet-4-5",
            "gemini-2.5-pro",
        ] {
            assert!(catalog.find(id).is_some(), "{id} missing");
        }
        let mini = catalog.find("gpt-4o-mini").unwrap();
        assert_eq!(
            (mini.input, mini.cached_input, mini.output),
            (150_000, Some(75_000), 600_000)
        );
        for family in ["openai", "anthropic", "google"] {
            assert!(catalog.models.iter().any(|m| m.family == family));
        }
    }

    #[test]
    fn names_match_by_id_alias_or_dated_snapshot() {
        let catalog = Catalog::bundled().unwrap();
        assert_eq!(catalog.find("gpt-4o-2024-08-06").unwrap().id, "gpt-4o");
        assert_eq!(
            catalog.find("gpt-4o-mini-2024-07-18").unwrap().id,
            "gpt-4o-mini"
        );
        assert_eq!(
            catalog.find("claude-sonnet-4-5-20250929").unwrap().id,
            "claude-sonnet-4-5"
        );
        assert!(catalog.find("gpt-4o-turbo").is_none());
        assert!(catalog.find("my-finetune").is_none());
        assert_eq!(
            catalog
                .find_for("default-chat", ["unknown", "gpt-4.1-mini"])
                .unwrap()
                .id,
            "gpt-4.1-mini"
        );
        assert_eq!(catalog.find_for("o3", ["my-deployment"]).unwrap().id, "o3");
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_reason() {
        assert!(matches!(
            Catalog::parse("as_of = 3"),
            Err(CatalogError::Parse(_))
        ));
        let negative = "as_of = \"x\"\n[[model]]\nid = \"m\"\nfamily = \"openai\"\ninput = -1\noutput = 0\ncontext_window = 1\n";
        assert!(matches!(
            Catalog::parse(negative),
            Err(CatalogError::Entry { .. })
        ));
        let unknown = "as_of = \"x\"\nsurprise = 1\n";
        assert!(Catalog::parse(unknown).is_err());
    }
}
