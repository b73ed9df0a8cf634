//! `sluicectl <resource> <verb>`: the operator CLI over the admin API.

mod budget;
mod output;
mod usage;

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice_proto::admin::v1 as pb;
use sluice_proto::admin::v1::admin_service_client::AdminServiceClient;
use sluice_shared::secret::SecretString;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{Format, Listing, time};

/// Operate a Sluice control plane.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Control-plane admin API address.
    #[arg(
        long,
        env = "SLUICE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    control_plane: String,
    /// Admin token (prefer the environment variable: argv is visible to other users).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    output: Format,
    #[command(subcommand)]
    resource: Resource,
}

#[derive(Subcommand)]
enum Resource {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Projects and their posture (MOCK or LIVE).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Upstream providers.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Provider keys (secrets are read from stdin, never from arguments).
    #[command(subcommand, name = "provider-key")]
    ProviderKey(ProviderKeyCommand),
    /// Models and their deployments.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Virtual keys for applications.
    #[command(subcommand)]
    Vkey(VkeyCommand),
    /// Spend and tokens, filtered and grouped (estimates shown apart).
    Usage(usage::UsageArgs),
    /// Spend limits (HARD refuses once spent, SOFT alerts) and their spend so far.
    #[command(subcommand)]
    Budget(budget::BudgetCommand),
    /// Admin, read-only and data-plane tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Master-key versions and re-wrapping.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Every proxy: the config version it serves, its last rejection, when it was last seen.
    Fleet,
}

#[derive(Subcommand)]
enum OrgCommand {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    Get {
        name: String,
    },
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    Update {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project; it starts in MOCK posture.
    Create {
        /// ORG/NAME
        path: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "")]
        default_model: String,
    },
    Get {
        path: String,
    },
    List {
        org: String,
    },
    Update {
        path: String,
        #[arg(long)]
        display_name: Option<String>,
        /// An empty value clears it.
        #[arg(long)]
        default_model: Option<String>,
    },
    Delete {
        path: String,
    },
    /// MOCK (no upstream calls, no cost) or LIVE (real calls, real money).
    SetPosture {
        path: String,
        posture: PostureArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PostureArg {
    Mock,
    Live,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderTypeArg {
    Openai,
    Anthropic,
    Google,
    AzureOpenai,
    Vllm,
    Custom,
}

#[derive(Args)]
struct ProviderFields {
    #[arg(long)]
    api_version: Option<String>,
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Extra header sent upstream, NAME=VALUE (repeatable). Never credentials.
    #[arg(long = "header", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum ProviderCommand {
    Create {
        /// ORG/NAME
        path: String,
        #[arg(long = "type", value_enum)]
        kind: ProviderTypeArg,
        #[arg(long)]
        base_url: String,
        #[command(flatten)]
        fields: ProviderFields,
        /// Permit plain http and loopback/private addresses (e.g. a local vLLM).
        #[arg(long)]
        allow_private_network: bool,
    },
    Get {
        path: String,
    },
    List {
        org: String,
    },
    Update {
        path: String,
        #[arg(long)]
        base_url: Option<String>,
        #[command(flatten)]
        fields: ProviderFields,
        /// Replace all extra headers with the --header values given (none: clear them).
        #[arg(long)]
        replace_headers: bool,
        #[arg(long)]
        active: Option<bool>,
        #[arg(long)]
        allow_private_network: Option<bool>,
    },
    Delete {
        path: String,
    },
}

#[derive(Subcommand)]
enum ProviderKeyCommand {
    /// Add a key; the secret is read from stdin.
    Add {
        /// ORG/PROVIDER/NAME
        path: String,
    },
    Get {
        path: String,
    },
    /// ORG or ORG/PROVIDER.
    List {
        path: String,
    },
    /// Add a new active key (secret from stdin) and move this one to RETIRING.
    Rotate {
        path: String,
        #[arg(long)]
        new_name: String,
    },
    Revoke {
        path: String,
        /// Even if it is a LIVE project's last usable key for a model (audited).
        #[arg(long)]
        force: bool,
    },
    Delete {
        path: String,
        /// Even if it is a LIVE project's last usable key for a model (audited).
        #[arg(long)]
        force: bool,
    },
    /// Ask the upstream whether the key works (its cheapest authenticated call) and record
    /// the answer as the key's health: valid, invalid_credentials, no_model_access,
    /// unreachable or unexpected.
    Test {
        path: String,
        /// Also check access to this upstream model.
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Args)]
struct ModelFields {
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
}

#[derive(Subcommand)]
enum ModelCommand {
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

#[derive(Subcommand)]
enum VkeyCommand {
    /// Create a key; it is printed once and never again.
    Create {
        /// ORG/PROJECT/NAME
        path: String,
        /// Comma-separated model names; empty: every model of the organization.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    Get {
        path: String,
    },
    /// ORG/PROJECT.
    List {
        path: String,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    Update {
        path: String,
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    Revoke {
        path: String,
    },
    Delete {
        path: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Admin,
    ReadOnly,
    DataPlane,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and never again.
    Create {
        name: String,
        #[arg(long, value_enum)]
        scope: ScopeArg,
    },
    List,
    Revoke {
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    List {
        #[arg(long, default_value = "")]
        actor: String,
        #[arg(long, default_value = "")]
        action: String,
        /// Keep events whose target starts with this.
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    Status,
    /// Re-wrap every provider key under the newest master key now.
    Rewrap,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got '{text}'"))
}

fn parse_deployment(text: &str) -> Result<pb::Deployment, String> {
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
fn deployment_text(d: &pb::Deployment) -> String {
    format!(
        "{}:{},weight={},priority={}",
        d.provider, d.upstream_model, d.weight, d.priority
    )
}

/// Splits `A/B[/C]` into exactly `n` non-empty parts.
fn path<const N: usize>(text: &str, shape: &str) -> anyhow::Result<[String; N]> {
    let parts: Vec<String> = text.split('/').map(str::to_owned).collect();
    if parts.len() != N || parts.iter().any(String::is_empty) {
        bail!("expected {shape}, got '{text}'");
    }
    parts
        .try_into()
        .map_err(|_| anyhow!("expected {shape}, got '{text}'"))
}

/// Reads a secret from stdin: all of it when piped, one line when typed.
fn read_secret(what: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprintln!("Paste the {what}, then press Enter:");
        stdin
            .read_line(&mut text)
            .context("reading the secret from stdin")?;
    } else {
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("reading the secret from stdin")?;
    }
    let secret = SecretString::new(text.trim_end_matches(['\r', '\n']).to_owned());
    drop(zeroize_string(text));
    if secret.is_empty() {
        bail!("no {what} on stdin: pipe it in, e.g. `printf %s \"$KEY\" | sluicectl ...`");
    }
    Ok(secret)
}

fn zeroize_string(mut text: String) -> String {
    zeroize::Zeroize::zeroize(&mut text);
    text
}

fn days_from_now_us(days: u32) -> i64 {
    sluice_shared::time::now_us().saturating_add(i64::from(days) * 86_400 * 1_000_000)
}

// === rendering of each resource ===

const ORG_COLUMNS: &[&str] = &["name", "display_name", "created_at", "id"];
fn org_row(o: pb::Organization) -> Vec<Value> {
    vec![
        json!(o.name),
        json!(o.display_name),
        time(o.created_at_us),
        json!(o.id),
    ]
}

const PROJECT_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "posture",
    "default_model",
    "created_at",
];
fn project_row(p: pb::Project) -> Vec<Value> {
    let posture = pb::Posture::try_from(p.posture)
        .map(|p| p.as_str_name())
        .unwrap_or("?");
    vec![
        json!(p.organization),
        json!(p.name),
        json!(posture.trim_start_matches("POSTURE_")),
        json!(p.default_model),
        time(p.created_at_us),
    ]
}

const PROVIDER_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "type",
    "base_url",
    "api_version",
    "timeout_ms",
    "active",
    "extra_headers",
];
fn provider_row(p: pb::Provider) -> Vec<Value> {
    let kind = pb::ProviderType::try_from(p.r#type)
        .map(|t| t.as_str_name())
        .unwrap_or("?");
    let mut headers: Vec<String> = p.extra_headers.keys().cloned().collect();
    headers.sort();
    vec![
        json!(p.organization),
        json!(p.name),
        json!(kind.trim_start_matches("PROVIDER_TYPE_")),
        json!(p.base_url),
        json!(p.api_version),
        json!(p.timeout_ms),
        json!(p.active),
        json!(headers),
    ]
}

const PROVIDER_KEY_COLUMNS: &[&str] = &[
    "organization",
    "provider",
    "name",
    "state",
    "last_four",
    "fingerprint",
    "health",
    "created_at",
];
fn provider_key_row(k: pb::ProviderKey) -> Vec<Value> {
    let state = pb::ProviderKeyState::try_from(k.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let health = pb::ProviderKeyHealth::try_from(k.health)
        .map(|h| h.as_str_name())
        .unwrap_or("?");
    vec![
        json!(k.organization),
        json!(k.provider),
        json!(k.name),
        json!(state.trim_start_matches("PROVIDER_KEY_STATE_")),
        json!(format!("…{}", k.last_four)),
        json!(k.fingerprint),
        json!(health.trim_start_matches("PROVIDER_KEY_HEALTH_")),
        time(k.created_at_us),
    ]
}

const MODEL_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "deployments",
    "input_price_micros_per_mtok",
    "cached_input_price_micros_per_mtok",
    "output_price_micros_per_mtok",
    "context_window",
    "price_source",
];
fn model_row(m: pb::Model) -> Vec<Value> {
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
    ]
}

const PRICING_COLUMNS: &[&str] = &[
    "model",
    "catalog_id",
    "input_price_micros_per_mtok",
    "cached_input_price_micros_per_mtok",
    "output_price_micros_per_mtok",
    "context_window",
    "result",
];
fn pricing_row(c: pb::PricingChange) -> Vec<Value> {
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

const VKEY_COLUMNS: &[&str] = &[
    "organization",
    "project",
    "name",
    "prefix",
    "allowed_models",
    "expires_at",
    "revoked_at",
];
fn vkey_row(v: pb::VirtualKey) -> Vec<Value> {
    vec![
        json!(v.organization),
        json!(v.project),
        json!(v.name),
        json!(v.prefix),
        json!(v.allowed_models),
        time(v.expires_at_us),
        time(v.revoked_at_us),
    ]
}

const TOKEN_COLUMNS: &[&str] = &["name", "scope", "prefix", "created_at", "revoked_at"];
fn token_row(t: pb::AdminToken) -> Vec<Value> {
    let scope = pb::TokenScope::try_from(t.scope)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    vec![
        json!(t.name),
        json!(scope.trim_start_matches("TOKEN_SCOPE_")),
        json!(t.prefix),
        time(t.created_at_us),
        time(t.revoked_at_us),
    ]
}

const AUDIT_COLUMNS: &[&str] = &["at", "actor", "action", "target", "detail"];
fn audit_row(e: pb::AuditEvent) -> Vec<Value> {
    vec![
        time(e.at_us),
        json!(e.actor),
        json!(e.action),
        json!(e.target),
        json!(e.detail),
    ]
}

fn required<T>(value: Option<T>) -> anyhow::Result<T> {
    value.ok_or_else(|| anyhow!("the control plane sent an empty response"))
}

// === commands ===

/// Adds the admin token to every call, marked sensitive so HTTP/2 never indexes it.
#[derive(Clone)]
struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = AdminServiceClient<InterceptedService<Channel, BearerToken>>;

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let token = cli.token.clone().ok_or_else(|| {
        anyhow!("no admin token: pass --token or set SLUICE_TOKEN (the first one is in <data_dir>/admin-token)")
    })?;
    let mut header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the admin token holds characters that cannot travel in a header"))?;
    header.set_sensitive(true);
    let channel = Channel::from_shared(cli.control_plane.clone())
        .with_context(|| format!("bad control-plane address '{}'", cli.control_plane))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("cannot reach the control plane at {}", cli.control_plane))?;
    Ok(AdminServiceClient::with_interceptor(
        channel,
        BearerToken(header),
    ))
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let mut client = connect(&cli).await?;
    let format = cli.output;
    let listing = match cli.resource {
        Resource::Org(command) => org(&mut client, command).await?,
        Resource::Project(command) => project(&mut client, command).await?,
        Resource::Provider(command) => provider(&mut client, command).await?,
        Resource::ProviderKey(command) => provider_key(&mut client, command).await?,
        Resource::Model(command) => model(&mut client, command).await?,
        Resource::Vkey(command) => return vkey(&mut client, command, format).await,
        Resource::Budget(command) => budget::run(&mut client, command).await?,
        Resource::Usage(args) => usage::run(&mut client, args).await?,
        Resource::Token(command) => return token(&mut client, command, format).await,
        Resource::Audit(command) => audit(&mut client, command).await?,
        Resource::Vault(command) => vault(&mut client, command).await?,
        Resource::Fleet => return fleet(&mut client, format).await,
    };
    Ok(listing.render(format))
}

fn deleted(what: &str, path: &str) -> Listing {
    Listing::one(&["deleted", "name"], vec![json!(what), json!(path)])
}

async fn org(client: &mut Client, command: OrgCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        OrgCommand::Create { name, display_name } => {
            let response = client
                .create_organization(pb::CreateOrganizationRequest { name, display_name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::Get { name } => {
            let response = client
                .get_organization(pb::GetOrganizationRequest { name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::List { prefix } => {
            let response = client
                .list_organizations(pb::ListOrganizationsRequest {
                    name_prefix: prefix,
                })
                .await?;
            Listing::many(
                ORG_COLUMNS,
                response
                    .into_inner()
                    .organizations
                    .into_iter()
                    .map(org_row)
                    .collect(),
            )
        }
        OrgCommand::Update { name, display_name } => {
            let response = client
                .update_organization(pb::UpdateOrganizationRequest { name, display_name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::Delete { name } => {
            client
                .delete_organization(pb::DeleteOrganizationRequest { name: name.clone() })
                .await?;
            deleted("organization", &name)
        }
    })
}

async fn project(client: &mut Client, command: ProjectCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        ProjectCommand::Create {
            path: p,
            display_name,
            default_model,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .create_project(pb::CreateProjectRequest {
                    organization,
                    name,
                    display_name,
                    default_model,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::Get { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .get_project(pb::GetProjectRequest { organization, name })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::List { org } => {
            let response = client
                .list_projects(pb::ListProjectsRequest { organization: org })
                .await?;
            Listing::many(
                PROJECT_COLUMNS,
                response
                    .into_inner()
                    .projects
                    .into_iter()
                    .map(project_row)
                    .collect(),
            )
        }
        ProjectCommand::Update {
            path: p,
            display_name,
            default_model,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .update_project(pb::UpdateProjectRequest {
                    organization,
                    name,
                    display_name,
                    default_model,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::Delete { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            client
                .delete_project(pb::DeleteProjectRequest { organization, name })
                .await?;
            deleted("project", &p)
        }
        ProjectCommand::SetPosture { path: p, posture } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let posture = match posture {
                PostureArg::Mock => pb::Posture::Mock,
                PostureArg::Live => pb::Posture::Live,
            } as i32;
            let response = client
                .set_project_posture(pb::SetProjectPostureRequest {
                    organization,
                    name,
                    posture,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
    })
}

fn provider_type(kind: ProviderTypeArg) -> i32 {
    (match kind {
        ProviderTypeArg::Openai => pb::ProviderType::Openai,
        ProviderTypeArg::Anthropic => pb::ProviderType::Anthropic,
        ProviderTypeArg::Google => pb::ProviderType::Google,
        ProviderTypeArg::AzureOpenai => pb::ProviderType::AzureOpenai,
        ProviderTypeArg::Vllm => pb::ProviderType::Vllm,
        ProviderTypeArg::Custom => pb::ProviderType::Custom,
    }) as i32
}

async fn provider(client: &mut Client, command: ProviderCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        ProviderCommand::Create {
            path: p,
            kind,
            base_url,
            fields,
            allow_private_network,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .create_provider(pb::CreateProviderRequest {
                    organization,
                    name,
                    r#type: provider_type(kind),
                    base_url,
                    api_version: fields.api_version.unwrap_or_default(),
                    timeout_ms: fields.timeout_ms.unwrap_or(0),
                    extra_headers: fields.headers.into_iter().collect::<HashMap<_, _>>(),
                    allow_private_network,
                })
                .await?;
            Listing::one(
                PROVIDER_COLUMNS,
                provider_row(required(response.into_inner().provider)?),
            )
        }
        ProviderCommand::Get { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .get_provider(pb::GetProviderRequest { organization, name })
                .await?;
            Listing::one(
                PROVIDER_COLUMNS,
                provider_row(required(response.into_inner().provider)?),
            )
        }
        ProviderCommand::List { org } => {
            let response = client
                .list_providers(pb::ListProvidersRequest { organization: org })
                .await?;
            Listing::many(
                PROVIDER_COLUMNS,
                response
                    .into_inner()
                    .providers
                    .into_iter()
                    .map(provider_row)
                    .collect(),
            )
        }
        ProviderCommand::Update {
            path: p,
            base_url,
            fields,
            replace_headers,
            active,
            allow_private_network,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            if !fields.headers.is_empty() && !replace_headers {
                bail!("--header on update needs --replace-headers (the new set replaces the old)");
            }
            let response = client
                .update_provider(pb::UpdateProviderRequest {
                    organization,
                    name,
                    base_url,
                    api_version: fields.api_version,
                    timeout_ms: fields.timeout_ms,
                    extra_headers: fields.headers.into_iter().collect(),
                    replace_extra_headers: replace_headers,
                    active,
                    allow_private_network,
                })
                .await?;
            Listing::one(
                PROVIDER_COLUMNS,
                provider_row(required(response.into_inner().provider)?),
            )
        }
        ProviderCommand::Delete { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            client
                .delete_provider(pb::DeleteProviderRequest { organization, name })
                .await?;
            deleted("provider", &p)
        }
    })
}

async fn provider_key(client: &mut Client, command: ProviderKeyCommand) -> anyhow::Result<Listing> {
    const SHAPE: &str = "ORG/PROVIDER/NAME";
    Ok(match command {
        ProviderKeyCommand::Add { path: p } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let secret = read_secret("provider key")?;
            let response = client
                .create_provider_key(pb::CreateProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    secret: secret.expose().to_owned(),
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::Get { path: p } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .get_provider_key(pb::GetProviderKeyRequest {
                    organization,
                    provider,
                    name,
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::List { path: p } => {
            let (organization, provider) = match p.split_once('/') {
                Some((org, provider)) => (org.to_owned(), provider.to_owned()),
                None => (p.clone(), String::new()),
            };
            let response = client
                .list_provider_keys(pb::ListProviderKeysRequest {
                    organization,
                    provider,
                })
                .await?;
            Listing::many(
                PROVIDER_KEY_COLUMNS,
                response
                    .into_inner()
                    .provider_keys
                    .into_iter()
                    .map(provider_key_row)
                    .collect(),
            )
        }
        ProviderKeyCommand::Rotate { path: p, new_name } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let secret = read_secret("new provider key")?;
            let response = client
                .rotate_provider_key(pb::RotateProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    new_name,
                    new_secret: secret.expose().to_owned(),
                })
                .await?
                .into_inner();
            Listing::many(
                PROVIDER_KEY_COLUMNS,
                vec![
                    provider_key_row(required(response.retiring)?),
                    provider_key_row(required(response.active)?),
                ],
            )
        }
        ProviderKeyCommand::Test { path: p, model } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .test_provider_key(pb::TestProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    model: model.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let health = pb::ProviderKeyHealth::try_from(response.health)
                .map_or("unknown", |h| h.as_str_name())
                .trim_start_matches("PROVIDER_KEY_HEALTH_")
                .to_lowercase();
            Listing::one(
                &["key", "result", "upstream_status", "message"],
                vec![
                    json!(p),
                    json!(health),
                    json!(response.upstream_status),
                    json!(response.message),
                ],
            )
        }
        ProviderKeyCommand::Revoke { path: p, force } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .revoke_provider_key(pb::RevokeProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    force,
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::Delete { path: p, force } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            client
                .delete_provider_key(pb::DeleteProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    force,
                })
                .await?;
            deleted("provider key", &p)
        }
    })
}

async fn model(client: &mut Client, command: ModelCommand) -> anyhow::Result<Listing> {
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

async fn vkey(client: &mut Client, command: VkeyCommand, format: Format) -> anyhow::Result<String> {
    const SHAPE: &str = "ORG/PROJECT/NAME";
    let listing = match command {
        VkeyCommand::Create {
            path: p,
            models,
            expires_in_days,
        } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .create_virtual_key(pb::CreateVirtualKeyRequest {
                    organization,
                    project,
                    name,
                    allowed_models: models.into_iter().filter(|m| !m.is_empty()).collect(),
                    expires_at_us: expires_in_days.map(days_from_now_us).unwrap_or(0),
                })
                .await?
                .into_inner();
            let key = SecretString::new(response.key.clone());
            return Ok(shown_once(
                "key",
                &key,
                VKEY_COLUMNS,
                vkey_row(required(response.virtual_key)?),
                format,
            ));
        }
        VkeyCommand::Get { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .get_virtual_key(pb::GetVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::List { path: p, prefix } => {
            let [organization, project] = path::<2>(&p, "ORG/PROJECT")?;
            let response = client
                .list_virtual_keys(pb::ListVirtualKeysRequest {
                    organization,
                    project,
                    prefix,
                })
                .await?;
            Listing::many(
                VKEY_COLUMNS,
                response
                    .into_inner()
                    .virtual_keys
                    .into_iter()
                    .map(vkey_row)
                    .collect(),
            )
        }
        VkeyCommand::Update {
            path: p,
            models,
            expires_in_days,
        } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .update_virtual_key(pb::UpdateVirtualKeyRequest {
                    organization,
                    project,
                    name,
                    replace_allowed_models: models.is_some(),
                    allowed_models: models
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| !m.is_empty())
                        .collect(),
                    expires_at_us: expires_in_days.map(days_from_now_us),
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::Revoke { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .revoke_virtual_key(pb::RevokeVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::Delete { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            client
                .delete_virtual_key(pb::DeleteVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            deleted("virtual key", &p)
        }
    };
    Ok(listing.render(format))
}

/// A credential printed the one time it exists in the clear, above (or beside) its record.
fn shown_once(
    field: &str,
    value: &SecretString,
    columns: &'static [&'static str],
    row: Vec<Value>,
    format: Format,
) -> String {
    match format {
        Format::Json => {
            let mut object = serde_json::Map::new();
            object.insert(field.to_owned(), json!(value.expose()));
            for (column, cell) in columns.iter().zip(row) {
                object.insert(column.to_string(), cell);
            }
            serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default()
        }
        Format::Table => format!(
            "{}\n\n{field}: {}\n(shown once: store it now; Sluice keeps only its hash)",
            Listing::one(columns, row).render(format),
            value.expose()
        ),
    }
}

async fn token(
    client: &mut Client,
    command: TokenCommand,
    format: Format,
) -> anyhow::Result<String> {
    let listing = match command {
        TokenCommand::Create { name, scope } => {
            let scope = match scope {
                ScopeArg::Admin => pb::TokenScope::Admin,
                ScopeArg::ReadOnly => pb::TokenScope::ReadOnly,
                ScopeArg::DataPlane => pb::TokenScope::DataPlane,
            } as i32;
            let response = client
                .create_admin_token(pb::CreateAdminTokenRequest { name, scope })
                .await?
                .into_inner();
            let token = SecretString::new(response.token.clone());
            return Ok(shown_once(
                "token",
                &token,
                TOKEN_COLUMNS,
                token_row(required(response.admin_token)?),
                format,
            ));
        }
        TokenCommand::List => {
            let response = client
                .list_admin_tokens(pb::ListAdminTokensRequest {})
                .await?;
            Listing::many(
                TOKEN_COLUMNS,
                response
                    .into_inner()
                    .admin_tokens
                    .into_iter()
                    .map(token_row)
                    .collect(),
            )
        }
        TokenCommand::Revoke { name } => {
            let response = client
                .revoke_admin_token(pb::RevokeAdminTokenRequest { name })
                .await?;
            Listing::one(
                TOKEN_COLUMNS,
                token_row(required(response.into_inner().admin_token)?),
            )
        }
    };
    Ok(listing.render(format))
}

async fn audit(client: &mut Client, command: AuditCommand) -> anyhow::Result<Listing> {
    let AuditCommand::List {
        actor,
        action,
        target,
        limit,
    } = command;
    let response = client
        .list_audit_events(pb::ListAuditEventsRequest {
            actor,
            action,
            target_prefix: target,
            limit,
        })
        .await?;
    Ok(Listing::many(
        AUDIT_COLUMNS,
        response
            .into_inner()
            .events
            .into_iter()
            .map(audit_row)
            .collect(),
    ))
}

async fn vault(client: &mut Client, command: VaultCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        VaultCommand::Status => {
            let status = client
                .get_vault_status(pb::GetVaultStatusRequest {})
                .await?
                .into_inner();
            let mut rows: Vec<Vec<Value>> = status
                .keys_per_master_key_version
                .into_iter()
                .map(|(version, keys)| {
                    vec![
                        json!(version),
                        json!(keys),
                        json!(version == status.active_master_key_version),
                    ]
                })
                .collect();
            rows.sort_by_key(|row| row[0].as_u64());
            if rows.is_empty() {
                rows.push(vec![
                    json!(status.active_master_key_version),
                    json!(0),
                    json!(true),
                ]);
            }
            Listing::many(&["master_key_version", "provider_keys", "active"], rows)
        }
        VaultCommand::Rewrap => {
            let response = client
                .rewrap_provider_keys(pb::RewrapProviderKeysRequest {})
                .await?;
            Listing::one(&["rewrapped"], vec![json!(response.into_inner().rewrapped)])
        }
    })
}

const FLEET_COLUMNS: &[&str] = &[
    "proxy_id",
    "connected",
    "acked_version",
    "nacked_version",
    "nack_reason",
    "last_seen_at",
    "address",
];

async fn fleet(client: &mut Client, format: Format) -> anyhow::Result<String> {
    let response = client
        .list_proxies(pb::ListProxiesRequest {})
        .await?
        .into_inner();
    let rows = response
        .proxies
        .into_iter()
        .map(|p| {
            vec![
                json!(p.proxy_id),
                json!(p.connected),
                json!(p.acked_version),
                json!(p.nacked_version),
                json!(p.nack_reason),
                time(p.last_seen_at_us),
                json!(p.address),
            ]
        })
        .collect();
    let listing = Listing::many(FLEET_COLUMNS, rows);
    Ok(match format {
        Format::Table => format!(
            "config version {}\n\n{}",
            response.config_version,
            listing.render(format)
        ),
        Format::Json => {
            let proxies: Value = serde_json::from_str(&listing.render(format))?;
            serde_json::to_string_pretty(
                &json!({"config_version": response.config_version, "proxies": proxies}),
            )?
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluicectl: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("sluicectl: {:?}: {}", status.code(), status.message()),
                None => eprintln!("sluicectl: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
