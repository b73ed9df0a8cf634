//! Wires settings, store, vault and services into a running control plane.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::admin::v1::admin_service_server::AdminServiceServer;
use sluice_proto::config::v1::config_service_server::ConfigServiceServer;
use sluice_proto::usage::v1::lease_service_server::LeaseServiceServer;
use sluice_shared::secret::SecretString;
use sluice_shared::tls::server::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::admin_api::auth::TokenAuth;
use crate::admin_api::{AdminApi, mint_admin_token};
use crate::config_stream::ConfigStreamService;
use crate::lease_service::LeaseGrants;
use crate::metrics::{Metrics, MetricsLayer};
use crate::settings::Settings;
use crate::snapshot_builder::ConfigPublisher;
use crate::store::{AnyStore, Audit, Store, StoreError, TokenScope};
use crate::usage_ingest::UsageIngest;
use crate::usage_ingest::server::UsageServer;
use crate::vault::{self, Vault, VaultError};

const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";
const BOOTSTRAP_TOKEN_FILE: &str = "admin-token";
const DEV_MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no master key: set SLUICE_MASTER_KEY (or master_key_file) to a key made with \
         `sluice-control-plane generate-master-key`, or start with --dev for a local \
         throwaway setup"
    )]
    NoMasterKey,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("cannot start the OpenTelemetry exporter: {source}")]
    Telemetry { source: std::io::Error },
    #[error("TLS: {source}")]
    Tls {
        source: sluice_shared::tls::TlsFileError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How long the last spans may take to leave at shutdown.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the control plane until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    create_private_dir(&settings.data_dir)?;
    let vault = Arc::new(Vault::new(vault::parse_master_keys(&master_key(
        &settings,
    )?)?)?);
    match AnyStore::open(&settings.database_url).await? {
        AnyStore::Sqlite(store) => launch(settings, Arc::new(store), vault, shutdown).await,
        AnyStore::Postgres(store) => launch(settings, Arc::new(store), vault, shutdown).await,
    }
}

async fn launch<S: Store>(
    mut settings: Settings,
    store: Arc<S>,
    vault: Arc<Vault>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    vault.verify_against(store.as_ref()).await?;
    bootstrap_admin_token(&settings, store.as_ref()).await?;

    let rewrap_store = store.clone();
    let rewrap_vault = vault.clone();
    tokio::spawn(async move {
        match rewrap_vault.rewrap_all(rewrap_store.as_ref()).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(
                count,
                "re-wrapped provider keys under the active master key"
            ),
            Err(error) => tracing::error!(%error, "background re-wrap failed"),
        }
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi<S>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let changed = Arc::new(Notify::new());
    let publisher = ConfigPublisher::new(store.clone(), changed.clone());
    let config_watch = publisher.subscribe();
    let publisher_task = tokio::spawn(publisher.run());

    let admin = TokenAuth::admin(
        AdminServiceServer::new(AdminApi::new(store.clone(), vault.clone())),
        store.clone(),
        changed,
    );
    let metrics_export = settings.otel.metrics.take();
    let (service_name, resource) = (
        settings.otel.service_name.clone(),
        settings.otel.resource.clone(),
    );
    let tracer = crate::telemetry::Tracer::start(settings.otel)
        .map_err(|source| ServeError::Telemetry { source })?;
    if tracer.is_some() {
        tracing::info!("exporting OpenTelemetry traces");
    }
    let metrics = Arc::new(Metrics::traced_by(tracer.clone()));
    // The console's calls are counted and traced as the listener's are.
    let console_stack: crate::console::AdminStack = tower::util::BoxCloneSyncService::new(
        tower::Layer::layer(&MetricsLayer(metrics.clone()), admin.clone()),
    );
    if let Some(export) = metrics_export {
        let rendering = metrics.clone();
        let exporter = sluice_otlp::metrics::MetricsExporter::start(
            service_name,
            resource,
            export,
            Box::new(move || rendering.render()),
        )
        .map_err(|source| ServeError::Telemetry { source })?;
        tracing::info!("exporting OpenTelemetry metrics");
        metrics.exporter.set(exporter).ok();
    }
    let metrics_exporter = metrics.exporter.get().cloned();
    let budget_gauges_task = tokio::spawn(crate::budget_gauges::refresh(
        store.clone(),
        metrics.clone(),
        settings.budget_metrics_interval,
    ));
    let tls = match &settings.tls {
        Some(files) => Some(Arc::new(
            // HTTP/1.1 beside gRPC's HTTP/2, for Prometheus scrapes of /metrics.
            ServerTls::new(files, &[b"h2", b"http/1.1"])
                .map_err(|source| ServeError::Tls { source })?,
        )),
        None => None,
    };
    let require_certificate = tls
        .as_ref()
        .is_some_and(|tls| tls.checks_client_certificates());
    let config = TokenAuth::data_plane(
        ConfigServiceServer::new(ConfigStreamService::new(
            store.clone(),
            vault,
            config_watch,
            metrics.clone(),
        )),
        store.clone(),
        require_certificate,
    );
    let usage = TokenAuth::data_plane(
        UsageServer::new(UsageIngest::new(store.clone(), metrics.clone())),
        store.clone(),
        require_certificate,
    );
    let leases = TokenAuth::data_plane(
        LeaseServiceServer::new(LeaseGrants::new(
            store.clone(),
            settings.lease_ttl,
            metrics.clone(),
        )),
        store,
        require_certificate,
    );

    let listener = bind(settings.listen_addr).await?;
    let addr = local_addr(&listener, settings.listen_addr)?;
    let data_plane_listener = match settings.data_plane_listen_addr {
        Some(wanted) => {
            let listener = bind(wanted).await?;
            let addr = local_addr(&listener, wanted)?;
            Some((listener, addr))
        }
        None => None,
    };
    if let Some((_, data_plane_addr)) = &data_plane_listener {
        tracing::info!(
            addr = %data_plane_addr,
            tls = tls.is_some(),
            proxy_certificates = require_certificate,
            "sluice-control-plane data-plane listener: config, usage and leases"
        );
    }
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let console_task = match &settings.console {
        Some(console) => {
            let listener = bind(console.listen_addr).await?;
            let addr = local_addr(&listener, console.listen_addr)?;
            // Browsers bring no client certificate: the console's TLS asks for none.
            let console_tls = match &settings.tls {
                Some(files) => Some(Arc::new(
                    ServerTls::new(
                        &sluice_shared::tls::server::ServerTlsFiles {
                            client_ca: None,
                            ..files.clone()
                        },
                        &[b"http/1.1"],
                    )
                    .map_err(|source| ServeError::Tls { source })?,
                )),
                None => None,
            };
            tracing::info!(
                %addr,
                tls = console_tls.is_some(),
                "sluice-control-plane console listening"
            );
            let server =
                crate::console::Console::new(console_stack, console.expiry, console_tls.is_some());
            Some(tokio::spawn(server.serve(
                listener,
                console_tls,
                stopped(stopping.clone()),
            )))
        }
        None => {
            drop(console_stack);
            None
        }
    };

    // Tests and scripts read this line to learn the port when listening on port 0.
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        proxy_certificates = require_certificate,
        "sluice-control-plane listening"
    );
    let beyond_loopback = std::iter::once(addr)
        .chain(data_plane_listener.as_ref().map(|(_, addr)| *addr))
        .chain(settings.console.as_ref().map(|console| console.listen_addr))
        .any(|addr| !addr.ip().is_loopback());
    if tls.is_none() && beyond_loopback {
        tracing::warn!(
            %addr,
            "INSECURE: plaintext gRPC beyond loopback (allow_insecure_listen): tokens and \
             sealed keys cross the network unencrypted"
        );
        metrics
            .insecure_listener
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    // HTTP/1.1 beside gRPC on every listener, for Prometheus scrapes of /metrics.
    let operators = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(MetricsLayer(metrics.clone()))
        .add_service(health_service.clone())
        .add_service(reflection)
        .add_service(admin);
    match data_plane_listener {
        None => {
            operators
                .add_service(config)
                .add_service(usage)
                .add_service(leases)
                .serve_with_incoming_shutdown(
                    crate::listener::incoming(listener, tls),
                    stopped(stopping),
                )
                .await?
        }
        Some((data_plane_listener, _)) => {
            let proxies = tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(MetricsLayer(metrics))
                .add_service(health_service)
                .add_service(config)
                .add_service(usage)
                .add_service(leases)
                .serve_with_incoming_shutdown(
                    crate::listener::incoming(data_plane_listener, tls.clone()),
                    stopped(stopping.clone()),
                );
            let operators = operators.serve_with_incoming_shutdown(
                crate::listener::incoming(listener, tls),
                stopped(stopping),
            );
            tokio::try_join!(operators, proxies)?;
        }
    }
    if let Some(console) = console_task {
        console.abort();
    }
    publisher_task.abort();
    budget_gauges_task.abort();
    if let Some(exporter) = metrics_exporter {
        let _ = tokio::task::spawn_blocking(move || exporter.shut_down(TRACE_FLUSH_TIMEOUT)).await;
    }
    if let Some(tracer) = tracer {
        // The last spans go out before the process does.
        let _ = tokio::task::spawn_blocking(move || tracer.shut_down(TRACE_FLUSH_TIMEOUT)).await;
    }
    tracing::info!("sluice-control-plane stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, wanted: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind {
        addr: wanted,
        source,
    })
}

/// The master key from the environment, a key file, or (dev mode only) a generated file in
/// the data directory.
fn master_key(settings: &Settings) -> Result<SecretString, ServeError> {
    if let Some(key) = &settings.master_key {
        return Ok(SecretString::new(key.expose().to_owned()));
    }
    if let Some(path) = &settings.master_key_file {
        return read_secret_file(path);
    }
    if !settings.dev_mode {
        return Err(ServeError::NoMasterKey);
    }
    let path = settings.data_dir.join(DEV_MASTER_KEY_FILE);
    if path.exists() {
        return read_secret_file(&path);
    }
    let key = vault::generate_master_key();
    write_private_file(&path, key.expose())?;
    tracing::warn!(path = %path.display(), "dev mode: generated a master key; do not use it in production");
    Ok(key)
}

fn read_secret_file(path: &Path) -> Result<SecretString, ServeError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    Ok(SecretString::new(text.trim().to_owned()))
}

/// On first start, creates the first admin token: the one from SLUICE_ADMIN_TOKEN, or a new
/// one written to a 0600 file in the data directory. Its value is never logged.
async fn bootstrap_admin_token<S: Store>(settings: &Settings, store: &S) -> Result<(), ServeError> {
    if !store.list_admin_tokens().await?.is_empty() {
        return Ok(());
    }
    let audit = Audit::new("system", "admin_token.bootstrap", BOOTSTRAP_TOKEN_NAME);
    match &settings.admin_token {
        Some(token) => {
            let (_, mut new) = mint_admin_token(BOOTSTRAP_TOKEN_NAME, TokenScope::Admin);
            new.token_hash = sluice_shared::token::hash(token.expose());
            new.prefix = token.expose().chars().take(4).collect();
            store.create_admin_token(new, audit).await?;
            tracing::info!("registered SLUICE_ADMIN_TOKEN as the bootstrap admin token");
        }
        None => {
            let (token, new) = mint_admin_token(BOOTSTRAP_TOKEN_NAME, TokenScope::Admin);
            let path = settings.data_dir.join(BOOTSTRAP_TOKEN_FILE);
            write_private_file(&path, token.expose())?;
            store.create_admin_token(new, audit).await?;
            tracing::info!(path = %path.display(), "created the bootstrap admin token; read it from this file");
        }
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), ServeError> {
    std::fs::create_dir_all(path).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(path))?;
    }
    Ok(())
}

/// Writes a secret to a new file readable by its owner only.
fn write_private_file(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_error(path))?;
    file.write_all(b"\n").map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}
