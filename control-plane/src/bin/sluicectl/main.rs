//! `sluicectl <resource> <verb>`: the operator CLI over the admin API.

mod audit;
mod budget;
mod fleet;
mod model;
mod org;
mod output;
mod project;
mod provider;
mod provider_key;
mod rate_limit;
mod token;
mod upstream_settings;
mod usage;
mod vault;
mod vkey;

use audit::*;
use fleet::*;
use model::*;
use org::*;
use project::*;
use provider::*;
use provider_key::*;
use token::*;
use upstream_settings::*;
use vault::*;
use vkey::*;

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
use sluice_shared::tls::client::{ClientTlsFiles, Connector};
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
    /// The CA that vouches for an https:// control plane (default: the bundled web roots).
    #[arg(long, env = "SLUICE_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// A client certificate to present, for a control plane that asks for one.
    #[arg(
        long,
        env = "SLUICE_CLIENT_CERT_FILE",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    /// The client certificate's key.
    #[arg(
        long,
        env = "SLUICE_CLIENT_KEY_FILE",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
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
    /// Requests and tokens per window across the fleet, with what proxies hold of them.
    #[command(subcommand, name = "rate-limit")]
    RateLimit(rate_limit::RateLimitCommand),
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

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got '{text}'"))
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
    let connector = Connector::new(
        &cli.control_plane,
        &ClientTlsFiles {
            ca: cli.ca_file.clone(),
            cert: cli.client_cert.clone(),
            key: cli.client_key.clone(),
        },
    )?;
    let channel = Channel::from_shared(cli.control_plane.clone())
        .with_context(|| format!("bad control-plane address '{}'", cli.control_plane))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect_with_connector(connector)
        .await
        .map_err(|error| {
            anyhow!(
                "cannot reach the control plane at {}: {}",
                cli.control_plane,
                sluice_shared::upstream_connect::error_chain(&error)
            )
        })?;
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
        Resource::RateLimit(command) => rate_limit::run(&mut client, command).await?,
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
