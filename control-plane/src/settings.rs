//! Control-plane settings: defaults, then a TOML file, then `SLUICE_*` environment variables.
//! Unknown keys are refused at every layer, and every error names the key, so `main` can exit
//! with status 64 before anything binds. The environment is passed in as pairs, so tests never
//! touch the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_shared::logging::LogFormat;
use sluice_shared::otel_settings::OtelSettings;
use sluice_shared::secret::SecretString;
use sluice_shared::settings_source::{parse, parse_bool, prefixed_variables, read_toml};
use sluice_shared::tls::server::ServerTlsFiles;

/// Variables that belong to `sluicectl`, tolerated in the control plane's environment (as are
/// the proxy's `SLUICE_PROXY_*`) so one shell can run all three.
const FOREIGN_VARIABLES: &[&str] = &[
    "SLUICE_TOKEN",
    "SLUICE_CONTROL_PLANE",
    "SLUICE_CONFIG",
    "SLUICE_CA_FILE",
    "SLUICE_CLIENT_CERT_FILE",
    "SLUICE_CLIENT_KEY_FILE",
];

pub use sluice_shared::settings_source::SettingsError;

#[derive(Debug)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    /// A listener of its own for the proxies' services (config, usage, leases), so a network
    /// policy can let only proxies reach it; unset, they share `listen_addr`.
    pub data_plane_listen_addr: Option<SocketAddr>,
    /// TLS on the gRPC listener; with a client CA, proxies must present a certificate it
    /// vouches for (besides their data-plane token).
    pub tls: Option<ServerTlsFiles>,
    /// Plaintext on an address other machines can reach: refused unless this says so.
    pub allow_insecure_listen: bool,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Allows starting without a master key (one is generated into the data directory).
    pub dev_mode: bool,
    pub master_key: Option<SecretString>,
    pub master_key_file: Option<PathBuf>,
    /// Registered as the bootstrap admin token on first start, instead of a generated one.
    pub admin_token: Option<SecretString>,
    /// A tracing filter, e.g. `info` or `sluice_control_plane=debug`.
    pub log: String,
    /// Text for people, JSON lines for collectors.
    pub log_format: LogFormat,
    /// Traces of admin calls, config pushes and usage batches, over OTLP.
    pub otel: OtelSettings,
    /// How long a budget lease lasts unless renewed: a proxy that vanishes gives its unspent
    /// allowance back after this long.
    pub lease_ttl: std::time::Duration,
    /// How often the budgets' gauges on `/metrics` are read from the store.
    pub budget_metrics_interval: std::time::Duration,
    /// The Provider Vault console's own listener; unset, no console.
    pub console: Option<crate::console::ConsoleSettings>,
}

/// The file layer: every field optional, nothing unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen_addr: Option<String>,
    data_plane_listen_addr: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    allow_insecure_listen: Option<bool>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    dev_mode: Option<bool>,
    master_key_file: Option<PathBuf>,
    log: Option<String>,
    log_format: Option<String>,
    /// OpenTelemetry: the standard `OTEL_*` settings, named without `OTEL_` in lower case.
    otel: Option<std::collections::BTreeMap<String, toml::Value>>,
    lease_ttl_ms: Option<u64>,
    budget_metrics_interval_ms: Option<u64>,
    console_listen_addr: Option<String>,
    console_idle_timeout_s: Option<u64>,
    console_session_lifetime_s: Option<u64>,
}

/// Each environment variable and the setting it feeds.
const VARIABLES: &[&str] = &[
    "SLUICE_LISTEN_ADDR",
    "SLUICE_DATA_PLANE_LISTEN_ADDR",
    "SLUICE_TLS_CERT_FILE",
    "SLUICE_TLS_KEY_FILE",
    "SLUICE_TLS_CLIENT_CA_FILE",
    "SLUICE_ALLOW_INSECURE_LISTEN",
    "SLUICE_DATA_DIR",
    "SLUICE_DATABASE_URL",
    "SLUICE_DEV_MODE",
    "SLUICE_MASTER_KEY",
    "SLUICE_MASTER_KEY_FILE",
    "SLUICE_ADMIN_TOKEN",
    "SLUICE_LOG",
    "SLUICE_LOG_FORMAT",
    "SLUICE_LEASE_TTL_MS",
    "SLUICE_BUDGET_METRICS_INTERVAL_MS",
    "SLUICE_CONSOLE_LISTEN_ADDR",
    "SLUICE_CONSOLE_IDLE_TIMEOUT_S",
    "SLUICE_CONSOLE_SESSION_LIFETIME_S",
];

impl Settings {
    /// Builds settings from an optional file and the given environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        dev_flag: bool,
    ) -> Result<Self, SettingsError> {
        let file_settings: FileSettings = match file {
            Some(path) => read_toml(path)?,
            None => FileSettings::default(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let otel = OtelSettings::load("sluice-control-plane", &env, file_settings.otel.as_ref())?;
        let mut env_values = prefixed_variables(env, "SLUICE_", VARIABLES, |key| {
            key.starts_with("SLUICE_PROXY_") || FOREIGN_VARIABLES.contains(&key)
        })?;
        let mut take = |key: &str| env_values.remove(key);

        let listen_addr = match take("SLUICE_LISTEN_ADDR") {
            Some(value) => parse::<SocketAddr>("SLUICE_LISTEN_ADDR", &value)?,
            None => match file_settings.listen_addr {
                Some(value) => parse::<SocketAddr>("listen_addr", &value)?,
                None => SocketAddr::from(([127, 0, 0, 1], 7070)),
            },
        };
        let data_plane_listen_addr = match take("SLUICE_DATA_PLANE_LISTEN_ADDR") {
            Some(value) => Some(parse::<SocketAddr>(
                "SLUICE_DATA_PLANE_LISTEN_ADDR",
                &value,
            )?),
            None => match &file_settings.data_plane_listen_addr {
                Some(value) => Some(parse::<SocketAddr>("data_plane_listen_addr", value)?),
                None => None,
            },
        };
        let console_listen_addr = match take("SLUICE_CONSOLE_LISTEN_ADDR") {
            Some(value) => Some(parse::<SocketAddr>("SLUICE_CONSOLE_LISTEN_ADDR", &value)?),
            None => match &file_settings.console_listen_addr {
                Some(value) => Some(parse::<SocketAddr>("console_listen_addr", value)?),
                None => None,
            },
        };
        let mut seconds = |key: &str, file: Option<u64>, default: u64| match take(key) {
            Some(value) => parse::<u64>(key, &value),
            None => Ok(file.unwrap_or(default)),
        };
        let console_expiry = crate::console::Expiry {
            idle: std::time::Duration::from_secs(seconds(
                "SLUICE_CONSOLE_IDLE_TIMEOUT_S",
                file_settings.console_idle_timeout_s,
                30 * 60,
            )?),
            lifetime: std::time::Duration::from_secs(seconds(
                "SLUICE_CONSOLE_SESSION_LIFETIME_S",
                file_settings.console_session_lifetime_s,
                12 * 60 * 60,
            )?),
        };
        let console = console_listen_addr.map(|listen_addr| crate::console::ConsoleSettings {
            listen_addr,
            expiry: console_expiry,
        });
        let mut path_of = |key: &str, file: Option<PathBuf>| take(key).map(PathBuf::from).or(file);
        let tls_files = (
            path_of("SLUICE_TLS_CERT_FILE", file_settings.tls_cert_file),
            path_of("SLUICE_TLS_KEY_FILE", file_settings.tls_key_file),
            path_of(
                "SLUICE_TLS_CLIENT_CA_FILE",
                file_settings.tls_client_ca_file,
            ),
        );
        let tls = match tls_files {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(ServerTlsFiles {
                cert,
                key,
                client_ca,
            }),
            _ => {
                return Err(SettingsError::Invalid {
                    key: "tls_cert_file".to_owned(),
                    message: "TLS needs tls_cert_file and tls_key_file together (and \
                              tls_client_ca_file only beside them)"
                        .to_owned(),
                });
            }
        };
        let allow_insecure_listen = match take("SLUICE_ALLOW_INSECURE_LISTEN") {
            Some(value) => parse_bool("SLUICE_ALLOW_INSECURE_LISTEN", &value)?,
            None => file_settings.allow_insecure_listen.unwrap_or(false),
        };
        let data_dir = take("SLUICE_DATA_DIR")
            .map(PathBuf::from)
            .or(file_settings.data_dir)
            .unwrap_or_else(|| PathBuf::from("sluice-data"));
        let database_url = take("SLUICE_DATABASE_URL")
            .or(file_settings.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("sluice.db").display()));
        let dev_setting = match take("SLUICE_DEV_MODE") {
            Some(value) => parse_bool("SLUICE_DEV_MODE", &value)?,
            None => file_settings.dev_mode.unwrap_or(false),
        };
        let dev_mode = dev_flag || dev_setting;
        let settings = Self {
            otel,
            listen_addr,
            data_plane_listen_addr,
            tls,
            allow_insecure_listen,
            database_url,
            dev_mode,
            master_key: take("SLUICE_MASTER_KEY").map(SecretString::new),
            master_key_file: take("SLUICE_MASTER_KEY_FILE")
                .map(PathBuf::from)
                .or(file_settings.master_key_file),
            admin_token: take("SLUICE_ADMIN_TOKEN").map(SecretString::new),
            log: take("SLUICE_LOG")
                .or(file_settings.log)
                .unwrap_or_else(|| "info".to_owned()),
            log_format: match take("SLUICE_LOG_FORMAT") {
                Some(v) => parse("SLUICE_LOG_FORMAT", &v)?,
                None => match &file_settings.log_format {
                    Some(v) => parse("log_format", v)?,
                    None => LogFormat::Text,
                },
            },
            lease_ttl: std::time::Duration::from_millis(match take("SLUICE_LEASE_TTL_MS") {
                Some(value) => parse::<u64>("SLUICE_LEASE_TTL_MS", &value)?,
                None => file_settings.lease_ttl_ms.unwrap_or(30_000),
            }),
            budget_metrics_interval: std::time::Duration::from_millis(
                match take("SLUICE_BUDGET_METRICS_INTERVAL_MS") {
                    Some(value) => parse::<u64>("SLUICE_BUDGET_METRICS_INTERVAL_MS", &value)?,
                    None => file_settings.budget_metrics_interval_ms.unwrap_or(15_000),
                },
            ),
            console,
            data_dir,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, message: &str| SettingsError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite: or postgres:",
            ));
        }
        let beyond_loopback = std::iter::once(self.listen_addr)
            .chain(self.data_plane_listen_addr)
            .chain(self.console.as_ref().map(|console| console.listen_addr))
            .any(|addr| !addr.ip().is_loopback());
        if self.tls.is_none() && beyond_loopback && !self.allow_insecure_listen {
            return Err(invalid(
                "listen_addr",
                "is reachable from other machines but TLS is not set: set tls_cert_file and \
                 tls_key_file (SLUICE_TLS_CERT_FILE, SLUICE_TLS_KEY_FILE), or accept plaintext \
                 tokens on the wire with allow_insecure_listen = true \
                 (SLUICE_ALLOW_INSECURE_LISTEN)",
            ));
        }
        if let Some(console) = &self.console
            && (console.expiry.idle.is_zero() || console.expiry.lifetime.is_zero())
        {
            return Err(invalid(
                "console_idle_timeout_s",
                "console sessions need an idle timeout and a lifetime above zero seconds",
            ));
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(invalid(
                "master_key",
                "set SLUICE_MASTER_KEY or master_key_file, not both",
            ));
        }
        if self.master_key.is_none() && self.master_key_file.is_none() && !self.dev_mode {
            return Err(invalid(
                "SLUICE_MASTER_KEY",
                "is required outside dev mode: create one with `sluice-control-plane \
                 generate-master-key`, or start with --dev for a local throwaway setup",
            ));
        }
        if !(1_000..=3_600_000).contains(&self.lease_ttl.as_millis()) {
            return Err(invalid("lease_ttl_ms", "must be 1 000 to 3 600 000"));
        }
        if !(100..=3_600_000).contains(&self.budget_metrics_interval.as_millis()) {
            return Err(invalid(
                "budget_metrics_interval_ms",
                "must be 100 to 3 600 000",
            ));
        }
        if self.master_key.as_ref().is_some_and(SecretString::is_empty) {
            return Err(invalid("SLUICE_MASTER_KEY", "is empty"));
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|token| token.expose().len() < 32)
        {
            return Err(invalid(
                "SLUICE_ADMIN_TOKEN",
                "must be at least 32 characters",
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
    use std::io::Write;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_local_and_embedded() {
        let settings = Settings::load(None, env(&[("PATH", "/bin")]), true).unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:7070");
        assert_eq!(settings.database_url, "sqlite://sluice-data/sluice.db");
        assert!(settings.dev_mode);
        let error = Settings::load(None, env(&[]), false).unwrap_err();
        assert!(error.to_string().contains("SLUICE_MASTER_KEY"), "{error}");
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen_addr = \"127.0.0.1:9000\"\nlog = \"debug\"\ndata_dir = \"/srv\""
        )
        .unwrap();
        let settings = Settings::load(
            Some(file.path()),
            env(&[
                ("SLUICE_LISTEN_ADDR", "127.0.0.1:9100"),
                ("SLUICE_TOKEN", "ignored"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:9100");
        assert_eq!(settings.log, "debug");
        assert_eq!(settings.database_url, "sqlite:///srv/sluice.db");
    }

    #[test]
    fn plaintext_beyond_loopback_needs_tls_or_an_explicit_insecure_setting() {
        let error = Settings::load(None, env(&[("SLUICE_LISTEN_ADDR", "0.0.0.0:7070")]), true)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("listen_addr") && error.contains("SLUICE_TLS_CERT_FILE"),
            "{error}"
        );
        let insecure = Settings::load(
            None,
            env(&[
                ("SLUICE_LISTEN_ADDR", "0.0.0.0:7070"),
                ("SLUICE_ALLOW_INSECURE_LISTEN", "true"),
            ]),
            true,
        )
        .unwrap();
        assert!(insecure.allow_insecure_listen && insecure.tls.is_none());
        let tls = Settings::load(
            None,
            env(&[
                ("SLUICE_LISTEN_ADDR", "[::]:7070"),
                ("SLUICE_TLS_CERT_FILE", "/tls/cert.pem"),
                ("SLUICE_TLS_KEY_FILE", "/tls/key.pem"),
                ("SLUICE_TLS_CLIENT_CA_FILE", "/tls/proxies.pem"),
            ]),
            true,
        )
        .unwrap();
        let files = tls.tls.unwrap();
        assert_eq!(files.client_ca.unwrap(), PathBuf::from("/tls/proxies.pem"));
        let half = Settings::load(None, env(&[("SLUICE_TLS_CERT_FILE", "/c.pem")]), true)
            .unwrap_err()
            .to_string();
        assert!(half.contains("tls_key_file"), "{half}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = Settings::load(None, env(&[("SLUICE_LISTEN_ADRR", "x")]), false).unwrap_err();
        assert!(error.to_string().contains("SLUICE_LISTEN_ADRR"), "{error}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "listen_adr = \"127.0.0.1:1\"").unwrap();
        let error = Settings::load(Some(file.path()), env(&[]), true).unwrap_err();
        assert!(error.to_string().contains("listen_adr"), "{error}");
    }

    #[test]
    fn bad_values_are_named() {
        for (key, value) in [
            ("SLUICE_LISTEN_ADDR", "nowhere"),
            ("SLUICE_DEV_MODE", "maybe"),
            ("SLUICE_DATABASE_URL", "mysql://x"),
            ("SLUICE_ADMIN_TOKEN", "short"),
        ] {
            let error = Settings::load(None, env(&[(key, value)]), true).unwrap_err();
            let shown = error.to_string();
            assert!(
                shown.contains(key) || shown.contains("database_url"),
                "{key}: {shown}"
            );
            assert!(!shown.contains("short") || key != "SLUICE_ADMIN_TOKEN");
        }
    }

    #[test]
    fn secrets_stay_redacted_in_debug() {
        let settings = Settings::load(
            None,
            env(&[
                ("SLUICE_MASTER_KEY", "master-canary"),
                ("SLUICE_ADMIN_TOKEN", &"t".repeat(40)),
            ]),
            false,
        )
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("master-canary") && !shown.contains("tttt"),
            "{shown}"
        );
    }
}
