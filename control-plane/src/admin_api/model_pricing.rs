//! Where a model's prices come from. A model created without prices takes the catalog's (and
//! then follows the catalog); prices an operator sets are theirs and survive a catalog sync
//! unless it is forced. `sync_model_pricing` applies a catalog to a whole organisation.

use sluice_proto::admin::v1 as pb;
use tonic::Status;

use super::{given_settings, non_negative};
use crate::pricing_catalog::{Catalog, CatalogEntry};
use crate::store::{self, PriceSource};

pub(super) fn catalog(text: &str) -> Result<Catalog, Status> {
    if text.is_empty() {
        Catalog::bundled().map_err(|error| {
            Status::internal(format!("the bundled pricing catalog is broken: {error}"))
        })
    } else {
        Catalog::parse(text).map_err(|error| Status::invalid_argument(error.to_string()))
    }
}

fn upstream_names(deployments: &[store::Deployment]) -> impl Iterator<Item = &str> {
    deployments.iter().map(|d| d.upstream_model.as_str())
}

/// The catalog entry a model follows, if the catalog knows it.
pub(super) fn entry_for<'c>(
    catalog: &'c Catalog,
    name: &str,
    deployments: &[store::Deployment],
) -> Option<&'c CatalogEntry> {
    catalog.find_for(name, upstream_names(deployments))
}

/// Prices for a new model: the operator's if any were given, else the catalog's.
pub(super) fn for_new_model(
    req: &pb::CreateModelRequest,
    deployments: &[store::Deployment],
    catalog: &Catalog,
) -> Result<store::NewModel, Status> {
    let operator_priced = req.input_price_micros_per_mtok.is_some()
        || req.output_price_micros_per_mtok.is_some()
        || req.cached_input_price_micros_per_mtok.is_some();
    let entry = entry_for(catalog, &req.name, deployments);
    let mut new = store::NewModel {
        name: req.name.clone(),
        deployments: deployments.to_vec(),
        input_price_micros_per_mtok: 0,
        output_price_micros_per_mtok: 0,
        context_window: 0,
        cached_input_price_micros_per_mtok: None,
        price_source: PriceSource::Catalog,
        catalog_id: String::new(),
        retry: given_settings(req.retry)?,
        timeouts: given_settings(req.timeouts)?,
    };
    if operator_priced {
        new.price_source = PriceSource::Operator;
        new.input_price_micros_per_mtok = non_negative(
            "input_price_micros_per_mtok",
            req.input_price_micros_per_mtok.unwrap_or(0),
        )?;
        new.output_price_micros_per_mtok = non_negative(
            "output_price_micros_per_mtok",
            req.output_price_micros_per_mtok.unwrap_or(0),
        )?;
        new.cached_input_price_micros_per_mtok = req
            .cached_input_price_micros_per_mtok
            .map(|p| non_negative("cached_input_price_micros_per_mtok", p))
            .transpose()?;
    } else if let Some(entry) = entry {
        new.input_price_micros_per_mtok = entry.input;
        new.output_price_micros_per_mtok = entry.output;
        new.cached_input_price_micros_per_mtok = entry.cached_input;
        new.catalog_id = entry.id.clone();
    }
    new.context_window = req
        .context_window
        .or(entry.map(|e| e.context_window))
        .unwrap_or(0);
    Ok(new)
}

/// Sets a model to follow `entry`.
pub(super) fn catalog_patch(entry: &CatalogEntry) -> store::ModelPatch {
    store::ModelPatch {
        input_price_micros_per_mtok: Some(entry.input),
        output_price_micros_per_mtok: Some(entry.output),
        cached_input_price_micros_per_mtok: Some(entry.cached_input),
        context_window: Some(entry.context_window),
        price_source: Some(PriceSource::Catalog),
        catalog_id: Some(entry.id.clone()),
        ..store::ModelPatch::default()
    }
}

/// Whether `model` already has exactly `entry`'s figures.
pub(super) fn is_current(model: &store::Model, entry: &CatalogEntry) -> bool {
    model.price_source == PriceSource::Catalog
        && model.catalog_id == entry.id
        && model.input_price_micros_per_mtok == entry.input
        && model.output_price_micros_per_mtok == entry.output
        && model.cached_input_price_micros_per_mtok == entry.cached_input
        && model.context_window == entry.context_window
}

pub(super) fn change(model: &str, entry: &CatalogEntry, skipped: &str) -> pb::PricingChange {
    pb::PricingChange {
        model: model.to_owned(),
        catalog_id: entry.id.clone(),
        input_price_micros_per_mtok: entry.input,
        output_price_micros_per_mtok: entry.output,
        cached_input_price_micros_per_mtok: entry.cached_input,
        context_window: entry.context_window,
        skipped: skipped.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(upstream: &str) -> store::Deployment {
        store::Deployment {
            provider: "openai".into(),
            upstream_model: upstream.into(),
            weight: 1,
            priority: 0,
        }
    }

    fn request(name: &str) -> pb::CreateModelRequest {
        pb::CreateModelRequest {
            organization: "acme".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_model_takes_catalog_prices_unless_the_operator_gives_some() {
        let catalog = Catalog::bundled().unwrap();
        let deployments = [deployment("gpt-4o-mini-2024-07-18")];
        let new = for_new_model(&request("chat"), &deployments, &catalog).unwrap();
        assert_eq!(new.price_source, PriceSource::Catalog);
        assert_eq!(new.catalog_id, "gpt-4o-mini");
        assert_eq!(
            (
                new.input_price_micros_per_mtok,
                new.cached_input_price_micros_per_mtok,
                new.output_price_micros_per_mtok,
                new.context_window
            ),
            (150_000, Some(75_000), 600_000, 128_000)
        );

        let mut priced = request("chat");
        priced.input_price_micros_per_mtok = Some(1);
        let new = for_new_model(&priced, &deployments, &catalog).unwrap();
        assert_eq!(new.price_source, PriceSource::Operator);
        assert_eq!(
            (
                new.input_price_micros_per_mtok,
                new.output_price_micros_per_mtok
            ),
            (1, 0)
        );
        assert_eq!(
            new.context_window, 128_000,
            "the context window still comes from the catalog"
        );

        let unknown =
            for_new_model(&request("mine"), &[deployment("my-finetune")], &catalog).unwrap();
        assert_eq!(unknown.price_source, PriceSource::Catalog);
        assert_eq!(unknown.catalog_id, "");
        assert_eq!(unknown.input_price_micros_per_mtok, 0);

        priced.cached_input_price_micros_per_mtok = Some(-5);
        assert!(for_new_model(&priced, &deployments, &catalog).is_err());
    }
}
