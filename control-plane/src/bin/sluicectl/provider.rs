//! `sluicectl provider`: where and how upstreams are reached.

use crate::*;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ProviderTypeArg {
    Openai,
    Anthropic,
    Google,
    AzureOpenai,
    Vllm,
    Custom,
}

#[derive(Args)]
pub(crate) struct ProviderFields {
    #[arg(long)]
    api_version: Option<String>,
    /// The wait for an answer's first byte and between its chunks (default 60 000), unless
    /// --first-byte-timeout-ms or --idle-timeout-ms set them.
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Extra header sent upstream, NAME=VALUE (repeatable). Never credentials.
    #[arg(long = "header", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
    #[command(flatten)]
    retry: RetryFlags,
    #[command(flatten)]
    timeouts: TimeoutFlags,
}

#[derive(Subcommand)]
pub(crate) enum ProviderCommand {
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
        /// Send traced requests' attempts no W3C trace context (`traceparent`, `tracestate`).
        #[arg(long)]
        no_trace_context: bool,
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
        /// Whether traced requests' attempts send it their W3C trace context.
        #[arg(long)]
        trace_context: Option<bool>,
        /// Return every retry setting not given here to the proxy's default.
        #[arg(long)]
        reset_retry: bool,
        /// Return every timeout not given here to inheriting.
        #[arg(long)]
        reset_timeouts: bool,
    },
    Delete {
        path: String,
    },
}

pub(crate) const PROVIDER_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "type",
    "base_url",
    "api_version",
    "timeout_ms",
    "active",
    "extra_headers",
    "retry",
    "timeouts",
    "trace_context",
];

pub(crate) fn provider_row(p: pb::Provider) -> Vec<Value> {
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
        json!(retry_text(p.retry.as_ref())),
        json!(timeouts_text(p.timeouts.as_ref())),
        json!(p.send_trace_context),
    ]
}

pub(crate) fn provider_type(kind: ProviderTypeArg) -> i32 {
    (match kind {
        ProviderTypeArg::Openai => pb::ProviderType::Openai,
        ProviderTypeArg::Anthropic => pb::ProviderType::Anthropic,
        ProviderTypeArg::Google => pb::ProviderType::Google,
        ProviderTypeArg::AzureOpenai => pb::ProviderType::AzureOpenai,
        ProviderTypeArg::Vllm => pb::ProviderType::Vllm,
        ProviderTypeArg::Custom => pb::ProviderType::Custom,
    }) as i32
}

pub(crate) async fn provider(
    client: &mut Client,
    command: ProviderCommand,
) -> anyhow::Result<Listing> {
    Ok(match command {
        ProviderCommand::Create {
            path: p,
            kind,
            base_url,
            fields,
            allow_private_network,
            no_trace_context,
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
                    retry: fields.retry.policy(),
                    timeouts: fields.timeouts.policy(),
                    extra_headers: fields.headers.into_iter().collect::<HashMap<_, _>>(),
                    allow_private_network,
                    send_trace_context: Some(!no_trace_context),
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
            trace_context,
            reset_retry,
            reset_timeouts,
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
                    retry: fields.retry.policy(),
                    reset_retry,
                    timeouts: fields.timeouts.policy(),
                    reset_timeouts,
                    extra_headers: fields.headers.into_iter().collect(),
                    replace_extra_headers: replace_headers,
                    active,
                    allow_private_network,
                    send_trace_context: trace_context,
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
