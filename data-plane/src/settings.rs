//! Proxy settings: defaults, then a TOML file, then `SLUICE_PROXY_*` environment variables.
//! Unknown keys are refused and every error names the key (exit 64 in `main`). The environment
//! is passed in as pairs, so tests never touch the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_shared::logging::LogFormat;
use sluice_shared::otel_settings::OtelSettings;
use sluice_shared::secret::SecretString;
use sluice_shared::settings_source::{invalid, parse, parse_bool, prefixed_variables, read_toml};
use sluice_shared::tls::client::ClientTlsFiles;
use sluice_shared::tls::server::ServerTlsFiles;

use crate::usage::spool::{SpoolSettings, WhenFull};

pub use sluice_shared::settings_source::SettingsError;

#[derive(Debug)]
pub struct Settings {
    /// OpenTelemetry export (off unless an OTLP endpoint is set).
    pub otel: OtelSettings,
    /// Where applications connect (HTTP/1.1 and h2c, or over TLS both by ALPN).
    pub listen_addr: SocketAddr,
    /// TLS on the client listener; plaintext (the default) suits a TLS-terminating balancer.
    pub tls: Option<ServerTlsFiles>,
    pub control_plane: String,
    /// The CA that vouches for an `https://` control plane, and this proxy's client
    /// certificate for mTLS.
    pub control_plane_tls: ClientTlsFiles,
    /// The data-plane token (`sluicectl token create NAME --scope data-plane`).
    pub token: SecretString,
    /// Holds this proxy's id, its sealing key and the last validated snapshot.
    pub data_dir: PathBuf,
    /// Stable name in `sluicectl fleet`; default: generated once and kept in the data dir.
    pub proxy_id: Option<String>,
    pub max_body_bytes: usize,
    /// How long a new connection may wait before its first request begins.
    pub first_request_timeout: Duration,
    /// A request head, from its first byte to its end.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests. Longer than a load
    /// balancer's own idle timeout (60 s on the common ones), so the balancer, not the proxy,
    /// closes an idle connection and never sends a request onto one the proxy just closed.
    pub idle_timeout: Duration,
    /// How long a request body may stop arriving before the request is refused.
    pub body_stall_timeout: Duration,
    /// Open connections at most; at the cap, the one waiting longest for a request is closed
    /// to make room.
    pub max_connections: usize,
    /// Open connections one client address may hold (0: no limit). Off by default: behind a
    /// load balancer every connection comes from a few addresses.
    pub max_connections_per_client: usize,
    /// Serving threads, each with its own runtime, connections and upstream pool (default:
    /// one per CPU the process may use).
    pub workers: usize,
    /// If not empty, the only upstream hosts this proxy will call; a snapshot naming another
    /// is rejected (NACK). Defence in depth behind the control plane's URL rules.
    pub upstream_hosts: Vec<String>,
    /// Extra trusted roots (PEM) for upstream TLS, beside the bundled web PKI roots: for
    /// providers behind a private CA, such as an internal vLLM.
    pub upstream_ca_file: Option<PathBuf>,
    pub usage_batch_size: usize,
    pub usage_flush_interval: Duration,
    /// Size of each spool file (preallocated); the spool lives in `data_dir/spool`.
    pub usage_spool_segment_bytes: usize,
    /// The spool's bound on disk: the backlog a control-plane outage may build.
    pub usage_spool_max_bytes: u64,
    pub usage_spool_when_full: WhenFull,
    /// How often HARD budget leases are renewed (also at once when one runs low).
    pub lease_refresh_interval: Duration,
    /// How long a request waits for a lease renewal before it is refused.
    pub lease_wait: Duration,
    /// Output tokens reserved for a request that does not set `max_tokens`.
    pub default_max_output_tokens: u64,
    /// Retries each serving thread may add: this percentage of its requests over the last
    /// ten seconds, plus `retry_budget_min_per_second`.
    pub retry_budget_percent: u32,
    pub retry_budget_min_per_second: u32,
    /// Failures in a row that eject a deployment, and its first and longest cooldown.
    pub ejection_consecutive_failures: u32,
    pub ejection_cooldown: Duration,
    pub ejection_max_cooldown: Duration,
    pub log: String,
    /// Text for people, JSON lines for collectors.
    pub log_format: LogFormat,
    /// One line per request (on unless turned off).
    pub access_log: bool,
    /// Where the access lines go: stderr with the other logs unless a file is named.
    pub access_log_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen_addr: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    control_plane: Option<String>,
    control_plane_ca_file: Option<PathBuf>,
    control_plane_cert_file: Option<PathBuf>,
    control_plane_key_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    proxy_id: Option<String>,
    max_body_bytes: Option<usize>,
    first_request_timeout_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    body_stall_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    workers: Option<usize>,
    upstream_hosts: Option<Vec<String>>,
    upstream_ca_file: Option<PathBuf>,
    usage_batch_size: Option<usize>,
    usage_flush_interval_ms: Option<u64>,
    usage_spool_segment_bytes: Option<u64>,
    usage_spool_max_bytes: Option<u64>,
    usage_spool_when_full: Option<String>,
    lease_refresh_interval_ms: Option<u64>,
    lease_wait_ms: Option<u64>,
    default_max_output_tokens: Option<u64>,
    retry_budget_percent: Option<u32>,
    retry_budget_min_per_second: Option<u32>,
    ejection_consecutive_failures: Option<u32>,
    ejection_cooldown_ms: Option<u64>,
    ejection_max_cooldown_ms: Option<u64>,
    log: Option<String>,
    log_format: Option<String>,
    access_log: Option<bool>,
    access_log_file: Option<PathBuf>,
    /// OpenTelemetry: the standard `OTEL_*` settings, named without `OTEL_` in lower case.
    otel: Option<std::collections::BTreeMap<String, toml::Value>>,
}

const PREFIX: &str = "SLUICE_PROXY_";
/// Large batches amortise the control plane's per-commit work; the flush interval bounds how
/// long a record waits when traffic is light.
const DEFAULT_USAGE_BATCH_SIZE: usize = 5_000;
/// The control plane refuses larger batches.
const MAX_USAGE_BATCH_SIZE: usize = 10_000;
const MAX_WORKERS: usize = 1024;
const VARIABLES: &[&str] = &[
    "SLUICE_PROXY_LISTEN_ADDR",
    "SLUICE_PROXY_TLS_CERT_FILE",
    "SLUICE_PROXY_TLS_KEY_FILE",
    "SLUICE_PROXY_CONTROL_PLANE",
    "SLUICE_PROXY_CONTROL_PLANE_CA_FILE",
    "SLUICE_PROXY_CONTROL_PLANE_CERT_FILE",
    "SLUICE_PROXY_CONTROL_PLANE_KEY_FILE",
    "SLUICE_PROXY_TOKEN",
    "SLUICE_PROXY_TOKEN_FILE",
    "SLUICE_PROXY_DATA_DIR",
    "SLUICE_PROXY_ID",
    "SLUICE_PROXY_MAX_BODY_BYTES",
    "SLUICE_PROXY_FIRST_REQUEST_TIMEOUT_MS",
    "SLUICE_PROXY_HEADER_READ_TIMEOUT_MS",
    "SLUICE_PROXY_IDLE_TIMEOUT_MS",
    "SLUICE_PROXY_BODY_STALL_TIMEOUT_MS",
    "SLUICE_PROXY_MAX_CONNECTIONS",
    "SLUICE_PROXY_MAX_CONNECTIONS_PER_CLIENT",
    "SLUICE_PROXY_WORKERS",
    "SLUICE_PROXY_UPSTREAM_HOSTS",
    "SLUICE_PROXY_UPSTREAM_CA_FILE",
    "SLUICE_PROXY_USAGE_BATCH_SIZE",
    "SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS",
    "SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES",
    "SLUICE_PROXY_USAGE_SPOOL_MAX_BYTES",
    "SLUICE_PROXY_USAGE_SPOOL_WHEN_FULL",
    "SLUICE_PROXY_LEASE_REFRESH_INTERVAL_MS",
    "SLUICE_PROXY_LEASE_WAIT_MS",
    "SLUICE_PROXY_DEFAULT_MAX_OUTPUT_TOKENS",
    "SLUICE_PROXY_RETRY_BUDGET_PERCENT",
    "SLUICE_PROXY_RETRY_BUDGET_MIN_PER_SECOND",
    "SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES",
    "SLUICE_PROXY_EJECTION_COOLDOWN_MS",
    "SLUICE_PROXY_EJECTION_MAX_COOLDOWN_MS",
    "SLUICE_PROXY_LOG",
    "SLUICE_PROXY_LOG_FORMAT",
    "SLUICE_PROXY_ACCESS_LOG",
    "SLUICE_PROXY_ACCESS_LOG_FILE",
    "SLUICE_PROXY_CONFIG",
];

impl Settings {
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let file_settings: FileSettings = match file {
            Some(path) => read_toml(path)?,
            None => FileSettings::default(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let otel = OtelSettings::load("sluice-proxy", &env, file_settings.otel.as_ref())?;
        let mut vars = prefixed_variables(env, PREFIX, VARIABLES, |_| false)?;
        let mut take = |key: &str| vars.remove(key);

        let listen_addr = match take("SLUICE_PROXY_LISTEN_ADDR") {
            Some(v) => parse("SLUICE_PROXY_LISTEN_ADDR", &v)?,
            None => match &file_settings.listen_addr {
                Some(v) => parse("listen_addr", v)?,
                None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
        };
        let control_plane = take("SLUICE_PROXY_CONTROL_PLANE")
            .or(file_settings.control_plane)
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned());
        let mut path_of = |key: &str, file: Option<PathBuf>| take(key).map(PathBuf::from).or(file);
        let control_plane_tls = ClientTlsFiles {
            ca: path_of(
                "SLUICE_PROXY_CONTROL_PLANE_CA_FILE",
                file_settings.control_plane_ca_file,
            ),
            cert: path_of(
                "SLUICE_PROXY_CONTROL_PLANE_CERT_FILE",
                file_settings.control_plane_cert_file,
            ),
            key: path_of(
                "SLUICE_PROXY_CONTROL_PLANE_KEY_FILE",
                file_settings.control_plane_key_file,
            ),
        };
        let tls = match (
            path_of("SLUICE_PROXY_TLS_CERT_FILE", file_settings.tls_cert_file),
            path_of("SLUICE_PROXY_TLS_KEY_FILE", file_settings.tls_key_file),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                cert,
                key,
                client_ca: None,
            }),
            _ => {
                return Err(invalid(
                    "SLUICE_PROXY_TLS_CERT_FILE",
                    "TLS needs the certificate and key files together",
                ));
            }
        };
        let token_file = take("SLUICE_PROXY_TOKEN_FILE")
            .map(PathBuf::from)
            .or(file_settings.token_file);
        let token = match (take("SLUICE_PROXY_TOKEN"), token_file) {
            (Some(token), None) => SecretString::new(token),
            (None, Some(path)) => SecretString::new(
                std::fs::read_to_string(&path)
                    .map_err(|source| SettingsError::ReadFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "SLUICE_PROXY_TOKEN",
                    "set the token or a token file, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "SLUICE_PROXY_TOKEN",
                    "is required: create one with `sluicectl token create NAME --scope data-plane`",
                ));
            }
        };
        let number = |key: &str,
                      value: Option<String>,
                      file: Option<u64>,
                      default: u64|
         -> Result<u64, SettingsError> {
            match value {
                Some(v) => parse(key, &v),
                None => Ok(file.unwrap_or(default)),
            }
        };
        let settings = Self {
            otel,
            listen_addr,
            tls,
            control_plane,
            control_plane_tls,
            token,
            data_dir: take("SLUICE_PROXY_DATA_DIR")
                .map(PathBuf::from)
                .or(file_settings.data_dir)
                .unwrap_or_else(|| PathBuf::from("sluice-proxy-data")),
            proxy_id: take("SLUICE_PROXY_ID").or(file_settings.proxy_id),
            max_body_bytes: usize::try_from(number(
                "SLUICE_PROXY_MAX_BODY_BYTES",
                take("SLUICE_PROXY_MAX_BODY_BYTES"),
                file_settings.max_body_bytes.map(|v| v as u64),
                8 * 1024 * 1024,
            )?)
            .unwrap_or(usize::MAX),
            first_request_timeout: Duration::from_millis(number(
                "SLUICE_PROXY_FIRST_REQUEST_TIMEOUT_MS",
                take("SLUICE_PROXY_FIRST_REQUEST_TIMEOUT_MS"),
                file_settings.first_request_timeout_ms,
                10_000,
            )?),
            header_read_timeout: Duration::from_millis(number(
                "SLUICE_PROXY_HEADER_READ_TIMEOUT_MS",
                take("SLUICE_PROXY_HEADER_READ_TIMEOUT_MS"),
                file_settings.header_read_timeout_ms,
                10_000,
            )?),
            idle_timeout: Duration::from_millis(number(
                "SLUICE_PROXY_IDLE_TIMEOUT_MS",
                take("SLUICE_PROXY_IDLE_TIMEOUT_MS"),
                file_settings.idle_timeout_ms,
                75_000,
            )?),
            body_stall_timeout: Duration::from_millis(number(
                "SLUICE_PROXY_BODY_STALL_TIMEOUT_MS",
                take("SLUICE_PROXY_BODY_STALL_TIMEOUT_MS"),
                file_settings.body_stall_timeout_ms,
                30_000,
            )?),
            max_connections: usize::try_from(number(
                "SLUICE_PROXY_MAX_CONNECTIONS",
                take("SLUICE_PROXY_MAX_CONNECTIONS"),
                file_settings.max_connections.map(|v| v as u64),
                10_000,
            )?)
            .unwrap_or(usize::MAX),
            max_connections_per_client: usize::try_from(number(
                "SLUICE_PROXY_MAX_CONNECTIONS_PER_CLIENT",
                take("SLUICE_PROXY_MAX_CONNECTIONS_PER_CLIENT"),
                file_settings.max_connections_per_client.map(|v| v as u64),
                0,
            )?)
            .unwrap_or(usize::MAX),
            workers: usize::try_from(number(
                "SLUICE_PROXY_WORKERS",
                take("SLUICE_PROXY_WORKERS"),
                file_settings.workers.map(|v| v as u64),
                std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            )?)
            .unwrap_or(usize::MAX),
            upstream_hosts: match take("SLUICE_PROXY_UPSTREAM_HOSTS") {
                Some(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect(),
                None => file_settings.upstream_hosts.unwrap_or_default(),
            },
            upstream_ca_file: take("SLUICE_PROXY_UPSTREAM_CA_FILE")
                .map(PathBuf::from)
                .or(file_settings.upstream_ca_file),
            usage_batch_size: usize::try_from(number(
                "SLUICE_PROXY_USAGE_BATCH_SIZE",
                take("SLUICE_PROXY_USAGE_BATCH_SIZE"),
                file_settings.usage_batch_size.map(|v| v as u64),
                DEFAULT_USAGE_BATCH_SIZE as u64,
            )?)
            .unwrap_or(usize::MAX),
            usage_flush_interval: Duration::from_millis(number(
                "SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS",
                take("SLUICE_PROXY_USAGE_FLUSH_INTERVAL_MS"),
                file_settings.usage_flush_interval_ms,
                250,
            )?),
            usage_spool_segment_bytes: usize::try_from(number(
                "SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES",
                take("SLUICE_PROXY_USAGE_SPOOL_SEGMENT_BYTES"),
                file_settings.usage_spool_segment_bytes,
                4 * 1024 * 1024,
            )?)
            .unwrap_or(usize::MAX),
            usage_spool_max_bytes: number(
                "SLUICE_PROXY_USAGE_SPOOL_MAX_BYTES",
                take("SLUICE_PROXY_USAGE_SPOOL_MAX_BYTES"),
                file_settings.usage_spool_max_bytes,
                1024 * 1024 * 1024,
            )?,
            usage_spool_when_full: match take("SLUICE_PROXY_USAGE_SPOOL_WHEN_FULL")
                .or(file_settings.usage_spool_when_full)
                .as_deref()
            {
                None | Some("refuse") => WhenFull::Refuse,
                Some("drop-oldest") => WhenFull::DropOldest,
                Some(_) => {
                    return Err(invalid(
                        "usage_spool_when_full",
                        "must be `refuse` (the default: live traffic stops rather than go unmetered) or `drop-oldest`",
                    ));
                }
            },
            lease_refresh_interval: Duration::from_millis(number(
                "SLUICE_PROXY_LEASE_REFRESH_INTERVAL_MS",
                take("SLUICE_PROXY_LEASE_REFRESH_INTERVAL_MS"),
                file_settings.lease_refresh_interval_ms,
                1_000,
            )?),
            lease_wait: Duration::from_millis(number(
                "SLUICE_PROXY_LEASE_WAIT_MS",
                take("SLUICE_PROXY_LEASE_WAIT_MS"),
                file_settings.lease_wait_ms,
                1_000,
            )?),
            default_max_output_tokens: number(
                "SLUICE_PROXY_DEFAULT_MAX_OUTPUT_TOKENS",
                take("SLUICE_PROXY_DEFAULT_MAX_OUTPUT_TOKENS"),
                file_settings.default_max_output_tokens,
                4_096,
            )?,
            retry_budget_percent: u32::try_from(number(
                "SLUICE_PROXY_RETRY_BUDGET_PERCENT",
                take("SLUICE_PROXY_RETRY_BUDGET_PERCENT"),
                file_settings.retry_budget_percent.map(u64::from),
                20,
            )?)
            .unwrap_or(u32::MAX),
            retry_budget_min_per_second: u32::try_from(number(
                "SLUICE_PROXY_RETRY_BUDGET_MIN_PER_SECOND",
                take("SLUICE_PROXY_RETRY_BUDGET_MIN_PER_SECOND"),
                file_settings.retry_budget_min_per_second.map(u64::from),
                10,
            )?)
            .unwrap_or(u32::MAX),
            ejection_consecutive_failures: u32::try_from(number(
                "SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES",
                take("SLUICE_PROXY_EJECTION_CONSECUTIVE_FAILURES"),
                file_settings.ejection_consecutive_failures.map(u64::from),
                5,
            )?)
            .unwrap_or(u32::MAX),
            ejection_cooldown: Duration::from_millis(number(
                "SLUICE_PROXY_EJECTION_COOLDOWN_MS",
                take("SLUICE_PROXY_EJECTION_COOLDOWN_MS"),
                file_settings.ejection_cooldown_ms,
                10_000,
            )?),
            ejection_max_cooldown: Duration::from_millis(number(
                "SLUICE_PROXY_EJECTION_MAX_COOLDOWN_MS",
                take("SLUICE_PROXY_EJECTION_MAX_COOLDOWN_MS"),
                file_settings.ejection_max_cooldown_ms,
                300_000,
            )?),
            log: take("SLUICE_PROXY_LOG")
                .or(file_settings.log)
                .unwrap_or_else(|| "info".to_owned()),
            log_format: match take("SLUICE_PROXY_LOG_FORMAT") {
                Some(v) => parse("SLUICE_PROXY_LOG_FORMAT", &v)?,
                None => match &file_settings.log_format {
                    Some(v) => parse("log_format", v)?,
                    None => LogFormat::Text,
                },
            },
            access_log: match take("SLUICE_PROXY_ACCESS_LOG") {
                Some(v) => parse_bool("SLUICE_PROXY_ACCESS_LOG", &v)?,
                None => file_settings.access_log.unwrap_or(true),
            },
            access_log_file: take("SLUICE_PROXY_ACCESS_LOG_FILE")
                .map(PathBuf::from)
                .or(file_settings.access_log_file),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The retry budget each serving thread keeps.
    pub fn retry_budget(&self) -> crate::resilience::retry_budget::BudgetRule {
        crate::resilience::retry_budget::BudgetRule {
            ratio: f64::from(self.retry_budget_percent) / 100.0,
            floor_per_second: self.retry_budget_min_per_second,
        }
    }

    /// When deployments are ejected, and for how long.
    pub fn ejection(&self) -> crate::resilience::outliers::EjectionRule {
        crate::resilience::outliers::EjectionRule {
            consecutive_failures: self.ejection_consecutive_failures,
            base_cooldown: self.ejection_cooldown,
            max_cooldown: self.ejection_max_cooldown,
        }
    }

    pub fn spool(&self) -> SpoolSettings {
        SpoolSettings {
            dir: self.data_dir.join("spool"),
            segment_bytes: self.usage_spool_segment_bytes,
            max_bytes: self.usage_spool_max_bytes,
            when_full: self.usage_spool_when_full,
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if let Err(error) = self.control_plane_tls.check_for(&self.control_plane) {
            return Err(invalid("control_plane", error.to_string()));
        }
        if self.token.is_empty() {
            return Err(invalid("SLUICE_PROXY_TOKEN", "is empty"));
        }
        if self.max_body_bytes == 0 || self.max_connections == 0 || self.usage_batch_size == 0 {
            return Err(invalid(
                "max_body_bytes / max_connections / usage_batch_size",
                "must be above 0",
            ));
        }
        if self.retry_budget_percent > 1_000 || self.retry_budget_min_per_second > 100_000 {
            return Err(invalid(
                "retry_budget_percent / retry_budget_min_per_second",
                "must be at most 1 000 % / 100 000 a second",
            ));
        }
        if self.ejection_consecutive_failures == 0
            || self.ejection_cooldown.is_zero()
            || self.ejection_max_cooldown < self.ejection_cooldown
        {
            return Err(invalid(
                "ejection_consecutive_failures / ejection_cooldown_ms / ejection_max_cooldown_ms",
                "must be above 0, the longest cooldown at least the first",
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            ));
        }
        if self.usage_batch_size > MAX_USAGE_BATCH_SIZE {
            return Err(invalid(
                "usage_batch_size",
                format!("must be at most {MAX_USAGE_BATCH_SIZE}, the control plane's limit"),
            ));
        }
        if self.header_read_timeout.is_zero()
            || self.first_request_timeout.is_zero()
            || self.body_stall_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.usage_flush_interval.is_zero()
            || self.lease_refresh_interval.is_zero()
            || self.default_max_output_tokens == 0
        {
            return Err(invalid(
                "first_request_timeout_ms / header_read_timeout_ms / idle_timeout_ms / body_stall_timeout_ms / usage_flush_interval_ms / lease_refresh_interval_ms / default_max_output_tokens",
                "must be above 0",
            ));
        }
        // Big enough for any record; at least three files, so one is always free for
        // requests already admitted when the bound is reached.
        if self.usage_spool_segment_bytes < 64 * 1024
            || self.usage_spool_max_bytes < 3 * self.usage_spool_segment_bytes as u64
        {
            return Err(invalid(
                "usage_spool_segment_bytes / usage_spool_max_bytes",
                "segments must be at least 64 KiB, and the bound at least three segments",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(invalid("log", "is not a valid tracing filter"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let settings = Settings::load(
            None,
            env(&[
                ("SLUICE_PROXY_TOKEN", "sluice-dp-x"),
                ("SLUICE_MASTER_KEY", "not ours"),
                ("SLUICE_PROXY_UPSTREAM_HOSTS", "API.openai.com, 127.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(settings.upstream_hosts, vec!["api.openai.com", "127.0.0.1"]);
        assert_eq!(
            settings.workers,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        assert!(!format!("{settings:?}").contains("sluice-dp-x"));
        let settings = Settings::load(
            None,
            env(&[("SLUICE_PROXY_TOKEN", "t"), ("SLUICE_PROXY_WORKERS", "3")]),
        )
        .unwrap();
        assert_eq!(settings.workers, 3);
        assert_eq!(settings.retry_budget(), Default::default());
        assert_eq!(settings.ejection(), Default::default());
        let settings = Settings::load(
            None,
            env(&[
                ("SLUICE_PROXY_TOKEN", "t"),
                ("SLUICE_PROXY_RETRY_BUDGET_PERCENT", "50"),
                ("SLUICE_PROXY_RETRY_BUDGET_MIN_PER_SECOND", "0"),
            ]),
        )
        .unwrap();
        let budget = settings.retry_budget();
        assert_eq!((budget.ratio, budget.floor_per_second), (0.5, 0));
        let error = Settings::load(
            None,
            env(&[
                ("SLUICE_PROXY_TOKEN", "t"),
                ("SLUICE_PROXY_RETRY_BUDGET_PERCENT", "5000"),
            ]),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("retry_budget_percent"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let error = Settings::load(None, env(&[])).unwrap_err();
        assert!(error.to_string().contains("SLUICE_PROXY_TOKEN"), "{error}");
        for (key, value) in [
            ("SLUICE_PROXY_LISTEN", "x"),
            ("SLUICE_PROXY_MAX_BODY_BYTES", "lots"),
        ] {
            let error = Settings::load(None, env(&[("SLUICE_PROXY_TOKEN", "t"), (key, value)]))
                .unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
        for workers in ["0", "1025"] {
            let error = Settings::load(
                None,
                env(&[
                    ("SLUICE_PROXY_TOKEN", "t"),
                    ("SLUICE_PROXY_WORKERS", workers),
                ]),
            )
            .unwrap_err();
            assert!(error.to_string().contains("workers"), "{error}");
        }
    }
}
