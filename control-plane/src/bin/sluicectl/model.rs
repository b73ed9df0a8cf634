//! `sluicectl model`: models, their deployments (`PROVIDER:UPSTREAM_MODEL[,weight=N][,priority=N]`) and prices.

use crate::*;

#[derive(Args)]
pub(crate) struct ModelFields {
    /// PROVIDER:UPSTREAM_MODEL[,weight=N][,priority=N] (repeatable). The upstream model is
    /// everything after the first colon, so it may hold colons itself (`ft:gpt-4o-mini:acme`,
    /// `llama3:8b`); weight defaults to 1, priority to 0 (tried first).
    #[arg(long = "deployment", value_parser = parse_deployment)]
    deployments: Vec<pb::Deployment>,
    /// Micro-dollars per million input tokens.
    #[arg(long)]
    input_price: Option<i64>,
    /// Micro-dollars per million output tokens.
    #[arg(long)]
    output_price: Option<i64>,
    /// Micro-dollars per million input tokens served from the provider's prompt cache
    /// (default: the input price). Any price makes the model's prices operator-set.
    #[arg(long)]
    cached_input_price: Option<i64>,
    /// Default: the pricing catalog's, when it knows the model.
    #[arg(long)]
    context_window: Option<u32>,
    #[command(flatten)]
    retry: RetryFlags,
    #[command(flatten)]
    timeouts: TimeoutFlags,
}

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    Create {
        /// ORG/NAME
        path: String,
        #[command(flatten)]
        fields: ModelFields,
    },
    Get {
        path: String,
    },
    List {
        org: String,
    },
    /// Any --deployment given replaces all deployments.
    Update {
        path: String,
        #[command(flatten)]
        fields: ModelFields,
        /// Drop operator-set prices and follow the pricing catalog again.
        #[arg(long, conflicts_with_all = ["input_price", "output_price", "cached_input_price"])]
        catalog_pricing: bool,
        /// Return every retry setting not given here to inheriting from the provider.
        #[arg(long)]
        reset_retry: bool,
        /// Return every timeout not given here to inheriting.
        #[arg(long)]
        reset_timeouts: bool,
    },
    /// Apply the pricing catalog (bundled, or --file) to the organization's models that
    /// follow it; operator-set prices are kept unless --force.
    SyncPricing {
        org: String,
        /// A catalog in the bundled file's format (control-plane/pricing/catalog.toml).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace operator-set prices too.
        #[arg(long)]
        force: bool,
    },
    Delete {
        path: String,
    },
}

pub(crate) fn parse_deployment(text: &str) -> Result<pb::Deployment, String> {
    const SHAPE: &str = "PROVIDER:UPSTREAM_MODEL[,weight=N][,priority=N]";
    let mut parts = text.split(',');
    let target = parts.next().unwrap_or_default();
    let Some((provider, model)) = target
        .split_once(':')
        .filter(|(provider, model)| !provider.is_empty() && !model.is_empty())
    else {
        return Err(format!("expected {SHAPE}, got '{text}'"));
    };
    let mut deployment = pb::Deployment {
        provider: provider.to_owned(),
        upstream_model: model.to_owned(),
        weight: 1,
        priority: 0,
    };
    for option in parts {
        let (name, value) = option
            .split_once('=')
            .ok_or_else(|| format!("expected {SHAPE}, got '{text}'"))?;
        let number = value
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("{name} must be a whole number, got '{value}'"))?;
        match name.trim() {
            "weight" => deployment.weight = number,
            "priority" => deployment.priority = number,
            other => {
                return Err(format!(
                    "unknown deployment option '{other}' (weight, priority)"
                ));
            }
        }
    }
    Ok(deployment)
}

/// A deployment as `--deployment` takes it.
pub(crate) fn deployment_text(d: &pb::Deployment) -> String {
    format!(
        "{}:{},weight={},priority={}",
        d.provider, d.upstream_model, d.weight, d.priority
    )
}

pub(crate) const MODEL_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "deployments",
    "input_price_micros_per_mtok",
    "cached_input_price_micros_per_mtok",
    "output_price_micros_per_mtok",
    "context_window",
    "price_source",
    "retry",
    "timeouts",
];

pub(crate) fn model_row(m: pb::Model) -> Vec<Value> {
    let source = match pb::PriceSource::try_from(m.price_source) {
        Ok(pb::PriceSource::Catalog) if m.catalog_id.is_empty() => {
            "catalog (not in catalog)".to_owned()
        }
        Ok(pb::PriceSource::Catalog) => format!("catalog {}", m.catalog_id),
        Ok(pb::PriceSource::Operator) => "operator".to_owned(),
        _ => "unknown".to_owned(),
    };
    let deployments: Vec<String> = m.deployments.iter().map(deployment_text).collect();
    vec![
        json!(m.organization),
        json!(m.name),
        json!(deployments),
        json!(m.input_price_micros_per_mtok),
        json!(
            m.cached_input_price_micros_per_mtok
                .unwrap_or(m.input_price_micros_per_mtok)
        ),
        json!(m.output_price_micros_per_mtok),
        json!(m.context_window),
        json!(source),
        json!(retry_text(m.retry.as_ref())),
        json!(timeouts_text(m.timeouts.as_ref())),
    ]
}

pub(crate) const PRICING_COLUMNS: &[&str] = &[
    "model",
    "catalog_id",
    "input_price_micros_per_mtok",
    "cached_input_price_micros_per_mtok",
    "output_price_micros_per_mtok",
    "context_window",
    "result",
];

pub(crate) fn pricing_row(c: pb::PricingChange) -> Vec<Value> {
    vec![
        json!(c.model),
        json!(c.catalog_id),
        json!(c.input_price_micros_per_mtok),
        json!(
            c.cached_input_price_micros_per_mtok
                .unwrap_or(c.input_price_micros_per_mtok)
        ),
        json!(c.output_price_micros_per_mtok),
        json!(c.context_window),
        json!(if c.skipped.is_empty() {
            "applied"
        } else {
            c.skipped.as_str()
        }),
    ]
}

pub(crate) async fn model(client: &mut Client, command: ModelCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        ModelCommand::Create { path: p, fields } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .create_model(pb::CreateModelRequest {
                    organization,
                    name,
                    deployments: fields.deployments,
                    input_price_micros_per_mtok: fields.input_price,
                    output_price_micros_per_mtok: fields.output_price,
                    cached_input_price_micros_per_mtok: fields.cached_input_price,
                    context_window: fields.context_window,
                    retry: fields.retry.policy(),
                    timeouts: fields.timeouts.policy(),
                })
                .await?;
            Listing::one(
                MODEL_COLUMNS,
                model_row(required(response.into_inner().model)?),
            )
        }
        ModelCommand::Get { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .get_model(pb::GetModelRequest { organization, name })
                .await?;
            Listing::one(
                MODEL_COLUMNS,
                model_row(required(response.into_inner().model)?),
            )
        }
        ModelCommand::List { org } => {
            let response = client
                .list_models(pb::ListModelsRequest { organization: org })
                .await?;
            Listing::many(
                MODEL_COLUMNS,
                response
                    .into_inner()
                    .models
                    .into_iter()
                    .map(model_row)
                    .collect(),
            )
        }
        ModelCommand::Update {
            path: p,
            fields,
            catalog_pricing,
            reset_retry,
            reset_timeouts,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .update_model(pb::UpdateModelRequest {
                    organization,
                    name,
                    replace_deployments: !fields.deployments.is_empty(),
                    deployments: fields.deployments,
                    input_price_micros_per_mtok: fields.input_price,
                    output_price_micros_per_mtok: fields.output_price,
                    cached_input_price_micros_per_mtok: fields.cached_input_price,
                    context_window: fields.context_window,
                    catalog_pricing,
                    retry: fields.retry.policy(),
                    reset_retry,
                    timeouts: fields.timeouts.policy(),
                    reset_timeouts,
                })
                .await?;
            Listing::one(
                MODEL_COLUMNS,
                model_row(required(response.into_inner().model)?),
            )
        }
        ModelCommand::SyncPricing {
            org,
            file,
            dry_run,
            force,
        } => {
            let catalog_toml = match file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => String::new(),
            };
            let response = client
                .sync_model_pricing(pb::SyncModelPricingRequest {
                    organization: org,
                    catalog_toml,
                    dry_run,
                    force,
                })
                .await?
                .into_inner();
            for unknown in &response.unknown {
                eprintln!(
                    "not in the catalog (as of {}): {unknown}",
                    response.catalog_as_of
                );
            }
            Listing::many(
                PRICING_COLUMNS,
                response.changes.into_iter().map(pricing_row).collect(),
            )
        }
        ModelCommand::Delete { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            client
                .delete_model(pb::DeleteModelRequest { organization, name })
                .await?;
            deleted("model", &p)
        }
    })
}
