//! Typed configuration: a TOML file, then `AXON_*` environment overrides.
//!
//! Every option is documented in `config.example.toml`; unknown keys are refused so that a typo
//! is reported instead of silently ignored.

use std::{net::SocketAddr, path::Path};

use ruma::OwnedServerName;
use serde::Deserialize;

/// A configuration problem, reported as one line naming the key or file and exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value for {key}: {message}")]
    Value { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server_name: OwnedServerName,
    /// The URL clients reach this server at, announced in `/.well-known/matrix/client`.
    #[serde(default)]
    pub public_baseurl: Option<String>,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub rooms: RoomsConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub user_directory: UserDirectoryConfig,
}

/// Who `/user_directory/search` finds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDirectoryConfig {
    /// Every active local user, not only those who share a room with the searcher or sit in a
    /// room of the public directory (as Synapse's option of the same name).
    #[serde(default)]
    pub search_all_users: bool,
}

/// Delivery to push gateways. Durations are in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// How long one request to a push gateway may take.
    #[serde(default = "default_gateway_timeout")]
    pub gateway_timeout: f64,
    /// The wait after a first failed delivery; it doubles with each failure up to `retry_max`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: f64,
    #[serde(default = "default_retry_max")]
    pub retry_max: f64,
    /// Failed deliveries of one notification after which it is dropped.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
}

fn default_gateway_timeout() -> f64 {
    10.0
}
fn default_retry_initial() -> f64 {
    1.0
}
fn default_retry_max() -> f64 {
    600.0
}
fn default_max_attempts() -> i64 {
    30
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            gateway_timeout: default_gateway_timeout(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_attempts: default_max_attempts(),
        }
    }
}

impl PushConfig {
    pub fn gateway_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.gateway_timeout)
    }

    /// The wait before delivery attempt `attempts + 1`.
    pub fn retry_delay(&self, attempts: i64) -> std::time::Duration {
        let exponent = attempts.saturating_sub(1).clamp(0, 30) as i32;
        std::time::Duration::from_secs_f64((self.retry_initial * 2f64.powi(exponent)).min(self.retry_max))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds without a sync in flight after which a user is offline.
    #[serde(default = "default_offline_after")]
    pub offline_after: f64,
    /// Seconds without activity after which a user is unavailable.
    #[serde(default = "default_idle_after")]
    pub idle_after: f64,
}

fn default_offline_after() -> f64 {
    30.0
}
fn default_idle_after() -> f64 {
    300.0
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, offline_after: default_offline_after(), idle_after: default_idle_after() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Room version of new rooms: "10" or "11".
    #[serde(default = "default_room_version")]
    pub default_version: String,
    /// Joined plus invited members a room may have; 0 means no cap.
    #[serde(default = "default_max_members")]
    pub max_members: u32,
    /// Largest PDU accepted from a local client, in bytes of canonical JSON.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

fn default_room_version() -> String {
    "11".to_owned()
}
fn default_max_members() -> u32 {
    100
}
fn default_max_event_bytes() -> usize {
    // A 99,999-character message of 4-byte characters in both body and formatted_body is ~800 KB.
    1024 * 1024
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_version: default_room_version(),
            max_members: default_max_members(),
            max_event_bytes: default_max_event_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(default = "default_client_addr")]
    pub client: SocketAddr,
    /// Prometheus metrics listener; absent means no metrics endpoint.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    #[serde(default)]
    pub enabled: bool,
    /// When set, registration needs `m.login.registration_token` with this token.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "yes")]
    pub rate_limiting: bool,
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Token bucket for login and registration, per client address.
    #[serde(default = "default_auth_burst")]
    pub auth_burst: u32,
    #[serde(default = "default_auth_per_minute")]
    pub auth_per_minute: u32,
}

fn yes() -> bool {
    true
}
fn default_client_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}
fn default_database_url() -> String {
    "sqlite://data/axon.db".to_owned()
}
fn default_pool_size() -> u32 {
    16
}
fn default_max_request_bytes() -> usize {
    // A 99,999-character message of 4-byte characters, JSON-escaped as surrogate pairs
    // (12 bytes each) in both `body` and `formatted_body`, must still fit.
    4 * 1024 * 1024
}
fn default_auth_burst() -> u32 {
    10
}
fn default_auth_per_minute() -> u32 {
    30
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: default_client_addr(), metrics: None }
    }
}
impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_database_url(), max_connections: default_pool_size() }
    }
}
impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rate_limiting: true,
            max_request_bytes: default_max_request_bytes(),
            auth_burst: default_auth_burst(),
            auth_per_minute: default_auth_per_minute(),
        }
    }
}

impl Config {
    /// A configuration with every default, for `server_name`.
    pub fn with_server_name(server_name: OwnedServerName) -> Self {
        Self {
            server_name,
            public_baseurl: None,
            listen: ListenConfig::default(),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            rooms: RoomsConfig::default(),
            presence: PresenceConfig::default(),
            push: PushConfig::default(),
            user_directory: UserDirectoryConfig::default(),
        }
    }

    /// Reads `path`, applies the process environment's overrides and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config =
            Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.display().to_string(), message })?;
        config.apply_env(|key| std::env::var(key).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().replace('\n', " ").trim().to_owned())
    }

    /// Applies `AXON_*` overrides; `lookup` is the environment (a parameter so tests need not
    /// mutate the process environment).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = lookup("AXON_SERVER_NAME") {
            self.server_name = v.parse().map_err(|e| ConfigError::Value {
                key: "AXON_SERVER_NAME",
                message: format!("{v:?} is not a server name: {e}"),
            })?;
        }
        if let Some(v) = lookup("AXON_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = lookup("AXON_LISTEN_CLIENT") {
            self.listen.client = v.parse().map_err(|e| ConfigError::Value {
                key: "AXON_LISTEN_CLIENT",
                message: format!("{v:?} is not an address:port: {e}"),
            })?;
        }
        if let Some(v) = lookup("AXON_REGISTRATION_ENABLED") {
            self.registration.enabled = parse_bool("AXON_REGISTRATION_ENABLED", &v)?;
        }
        if let Some(v) = lookup("AXON_RATE_LIMITING") {
            self.limits.rate_limiting = parse_bool("AXON_RATE_LIMITING", &v)?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::Value {
                key: "database.url",
                message: format!("{url:?} must start with sqlite:, postgres:// or postgresql://"),
            });
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Value { key: "database.max_connections", message: "must be at least 1".into() });
        }
        if self.limits.max_request_bytes < 1024 {
            return Err(ConfigError::Value {
                key: "limits.max_request_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if self.limits.auth_burst == 0 || self.limits.auth_per_minute == 0 {
            return Err(ConfigError::Value {
                key: "limits.auth_burst",
                message: "auth_burst and auth_per_minute must be at least 1 (use rate_limiting = false to disable)"
                    .into(),
            });
        }
        if !crate::rooms::SUPPORTED_VERSIONS.contains(&self.rooms.default_version.as_str()) {
            return Err(ConfigError::Value {
                key: "rooms.default_version",
                message: format!(
                    "{:?} is not supported; use one of {:?}",
                    self.rooms.default_version,
                    crate::rooms::SUPPORTED_VERSIONS
                ),
            });
        }
        if self.rooms.max_event_bytes < 65_536 {
            return Err(ConfigError::Value { key: "rooms.max_event_bytes", message: "must be at least 65536".into() });
        }
        if !(self.presence.offline_after > 0.0 && self.presence.idle_after > 0.0) {
            return Err(ConfigError::Value {
                key: "presence.offline_after",
                message: "offline_after and idle_after must be positive".into(),
            });
        }
        let push = &self.push;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(push.gateway_timeout) && positive(push.retry_initial) && positive(push.retry_max))
            || push.max_attempts < 1
        {
            return Err(ConfigError::Value {
                key: "push.gateway_timeout",
                message: "gateway_timeout, retry_initial and retry_max must be positive, max_attempts at least 1"
                    .into(),
            });
        }
        if self.registration.token.as_deref() == Some("") {
            return Err(ConfigError::Value { key: "registration.token", message: "must not be empty".into() });
        }
        Ok(())
    }

    /// The base URL announced to clients.
    pub fn public_baseurl(&self) -> String {
        match &self.public_baseurl {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen.client),
        }
    }
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Value { key, message: format!("{v:?} is not a boolean (true/false)") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("server_name = \"localhost\"\n[listen]\nclinet = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("clinet"), "{err}");
    }

    #[test]
    fn env_overrides_apply() {
        let mut config = Config::parse("server_name = \"localhost\"").unwrap();
        config
            .apply_env(|k| match k {
                "AXON_RATE_LIMITING" => Some("false".into()),
                "AXON_LISTEN_CLIENT" => Some("127.0.0.1:9999".into()),
                _ => None,
            })
            .unwrap();
        assert!(!config.limits.rate_limiting);
        assert_eq!(config.listen.client.port(), 9999);
        let err = config.apply_env(|k| (k == "AXON_REGISTRATION_ENABLED").then(|| "maybe".into())).unwrap_err();
        assert!(err.to_string().contains("AXON_REGISTRATION_ENABLED"));
    }

    #[test]
    fn bad_database_url_is_refused() {
        let mut config = Config::parse("server_name = \"localhost\"").unwrap();
        config.database.url = "mysql://x".into();
        assert!(config.validate().unwrap_err().to_string().contains("database.url"));
    }
}
