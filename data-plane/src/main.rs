//! `sluice-proxy`: parse settings, load identity and any saved snapshot, then serve while the
//! config and usage streams run in the background.

// glibc malloc's arena locks made up most of the proxy's futex calls under load: requests
// free on one worker what another allocated. jemalloc's thread caches take those frees.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sluice_data_plane::budgets::leases::LeaseBook;
use sluice_data_plane::control::config_client::{Applier, ConfigClient};
use sluice_data_plane::control::identity::Identity;
use sluice_data_plane::control::lease_client::LeaseClient;
use sluice_data_plane::control::usage_reporter::UsageReporter;
use sluice_data_plane::gateway::Gateway;
use sluice_data_plane::serve::{ServerLimits, serve};
use sluice_data_plane::settings::Settings;
use sluice_data_plane::upstream::{UpstreamClient, load_roots};
use sluice_data_plane::usage::spool::UsageSpool;
use sluice_shared::tls::server::ServerTls;

/// The Sluice proxy.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// A TOML settings file; SLUICE_PROXY_* environment variables override it.
    #[arg(long, env = "SLUICE_PROXY_CONFIG")]
    config: Option<PathBuf>,
}

const EXIT_BAD_SETTINGS: u8 = 64;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const USAGE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const TELEMETRY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref(), std::env::vars()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice-proxy: bad settings: {error}");
            return ExitCode::from(EXIT_BAD_SETTINGS);
        }
    };
    let extra_roots = match settings.upstream_ca_file.as_deref().map(load_roots) {
        None => Vec::new(),
        Some(Ok(roots)) => roots,
        Some(Err(error)) => {
            eprintln!("sluice-proxy: bad settings: setting upstream_ca_file: {error}");
            return ExitCode::from(EXIT_BAD_SETTINGS);
        }
    };
    sluice_shared::logging::init(&settings.log, settings.log_format);
    match run(settings, extra_roots) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// jemalloc's own counters: requests for small and large allocations over every arena (thread
/// caches fold theirs in as they flush), and the bytes allocated, as of a fresh epoch.
fn heap_stats() -> Option<sluice_data_plane::HeapStats> {
    use tikv_jemalloc_ctl::{epoch, raw};
    epoch::advance().ok()?;
    // SAFETY: each name is a jemalloc statistic of the type read (two u64 counters, one
    // size_t), NUL-terminated as mallctl requires.
    let (small, large, allocated) = unsafe {
        (
            raw::read::<u64>(b"stats.arenas.4096.small.nrequests\0").ok()?,
            raw::read::<u64>(b"stats.arenas.4096.large.nrequests\0").ok()?,
            raw::read::<usize>(b"stats.allocated\0").ok()?,
        )
    };
    Some(sluice_data_plane::HeapStats {
        allocations: small.saturating_add(large),
        allocated_bytes: u64::try_from(allocated).unwrap_or(u64::MAX),
    })
}

fn run(
    mut settings: Settings,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> anyhow::Result<()> {
    // This thread runs the accept loop and the control-plane streams; requests run on the
    // serving threads (`server`), each with a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let identity = Arc::new(Identity::load_or_create(
            &settings.data_dir,
            settings.proxy_id.as_deref(),
        )?);
        let (spool, recovered) = UsageSpool::open(settings.spool())?;
        let (retry_budget, ejection) = (settings.retry_budget(), settings.ejection());
        let token = Arc::new(settings.token);
        if !recovered.is_empty() {
            tracing::info!(files = recovered.len(), "usage spool holds undelivered usage from an earlier run; delivering it first");
        }
        let epoch = u64::try_from(sluice_shared::time::now_us()).unwrap_or(1).max(1);
        let gateway = Gateway::new(
            spool.clone(),
            UpstreamClient::with_extra_roots(extra_roots),
            settings.max_body_bytes,
            LeaseBook::new(epoch, settings.lease_wait),
            settings.default_max_output_tokens,
            retry_budget,
            ejection,
        );
        gateway.heap_stats.set(heap_stats).ok();
        let otel_endpoint = settings
            .otel
            .traces
            .as_ref()
            .map(|traces| format!("{} ({:?})", traces.destination.endpoint.origin().ascii_serialization(), traces.destination.protocol));
        if let Some(metrics) = settings.otel.metrics.take() {
            let rendering = gateway.clone();
            let exporter = sluice_otlp::metrics::MetricsExporter::start(
                settings.otel.service_name.clone(),
                settings.otel.resource.clone(),
                metrics,
                Box::new(move || rendering.render_metrics_with_exemplars()),
            )?;
            tracing::info!("exporting OpenTelemetry metrics");
            gateway.metrics_exporter.set(exporter).ok();
        }
        if let Some(telemetry) = sluice_data_plane::telemetry::Telemetry::start(settings.otel)? {
            tracing::info!(endpoint = otel_endpoint.as_deref().unwrap_or_default(), "exporting OpenTelemetry traces");
            gateway.telemetry.set(telemetry).ok();
        }
        if settings.access_log {
            let log = sluice_data_plane::telemetry::access_log::AccessLog::start(settings.log_format, settings.access_log_file.as_deref())?;
            gateway.access_log.set(log).ok();
        }
        let applier = Arc::new(Applier {
            gateway: gateway.clone(),
            identity: identity.clone(),
            data_dir: settings.data_dir.clone(),
            upstream_hosts: settings.upstream_hosts.clone(),
        });
        applier.load_saved();

        // A descriptor per client connection, and room for the upstream pools, the spool
        // and the control plane's streams.
        let wanted = (settings.max_connections as u64).saturating_add(1024);
        match sluice_data_plane::serve::open_files::raise_to_hard_limit() {
            Some(limit) if limit < wanted => tracing::warn!(
                limit,
                max_connections = settings.max_connections,
                "the open-files limit is below what max_connections needs (it, plus 1 024): raise the hard limit (ulimit -Hn, LimitNOFILE) or lower max_connections"
            ),
            _ => {}
        }
        let client_tls = match &settings.tls {
            // HTTP/2 first: the official SDKs that speak it get it.
            Some(files) => Some(Arc::new(ServerTls::new(files, &[b"h2", b"http/1.1"])?)),
            None => None,
        };
        let listener = listen(settings.listen_addr)?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tls = client_tls.is_some(), proxy_id = %identity.proxy_id, "sluice-proxy listening");

        let connector = sluice_shared::tls::client::Connector::new(&settings.control_plane, &settings.control_plane_tls)?;
        let channel = tonic::transport::Endpoint::from_shared(settings.control_plane.clone())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector_lazy(connector.clone());
        tokio::spawn(
            ConfigClient {
                applier,
                control_plane: settings.control_plane.clone(),
                connector,
                token: token.clone(),
            }
            .run(),
        );
        tokio::spawn(
            LeaseClient {
                gateway: gateway.clone(),
                channel: channel.clone(),
                token: token.clone(),
                proxy_id: identity.proxy_id.clone(),
                refresh: settings.lease_refresh_interval,
            }
            .run(),
        );
        let (stop_usage, usage_stop) = tokio::sync::watch::channel(false);
        let reporter = tokio::spawn(
            UsageReporter {
                gateway: gateway.clone(),
                spool,
                recovered,
                channel,
                token,
                proxy_id: identity.proxy_id.clone(),
                batch_size: settings.usage_batch_size,
                flush_interval: settings.usage_flush_interval,
                shutdown: usage_stop,
            }
            .run(),
        );
        let limits = ServerLimits {
            max_connections: settings.max_connections,
            max_connections_per_client: settings.max_connections_per_client,
            first_request_timeout: settings.first_request_timeout,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            body_stall_timeout: settings.body_stall_timeout,
            drain_timeout: DRAIN_TIMEOUT,
            workers: settings.workers,
        };
        let telemetry = gateway.telemetry.get().cloned();
        let access_log = gateway.access_log.get().cloned();
        let metrics_exporter = gateway.metrics_exporter.get().cloned();
        serve(listener, client_tls, gateway, limits, shutdown_signal()).await?;
        if let Some(log) = access_log {
            let _ = tokio::task::spawn_blocking(move || log.shut_down()).await;
        }
        if let Some(exporter) = metrics_exporter {
            let _ = tokio::task::spawn_blocking(move || exporter.shut_down(TELEMETRY_FLUSH_TIMEOUT)).await;
        }
        if let Some(telemetry) = telemetry {
            // The last requests' spans go out before the process does.
            let _ = tokio::task::spawn_blocking(move || telemetry.shut_down(TELEMETRY_FLUSH_TIMEOUT)).await;
        }
        // Requests are done; hand their usage to the control plane before exiting.
        let _ = stop_usage.send(true);
        if tokio::time::timeout(USAGE_FLUSH_TIMEOUT, reporter)
            .await
            .is_err()
        {
            tracing::warn!("could not deliver all usage before exiting; the rest stays in the spool for the next start");
        }
        tracing::info!("sluice-proxy stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = interrupt.await;
}

/// The client listener, with a backlog for the bursts a balancer sends when proxies come and
/// go: the default of 1 024 overflows under a few thousand connects at once, and the kernel
/// then drops handshakes that clients retry only after a second or more.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 8_192;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
