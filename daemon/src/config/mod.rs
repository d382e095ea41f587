//! The appliance's settings: one data model, loaded from TOML layers, validated in one place.
//!
//! Layers are applied in order: the main file, then the drop-ins in `pangeod.d/*.toml` in name
//! order (how the portal's cloud-init `write_files` hands over its settings), then any overlay
//! written through the admin API. Every value remembers the layer and position it came from, so
//! an error names the file, line and column, the key, the rule and the fix.

mod bootstrap;
pub mod defaults;
mod layers;
mod raw;
mod rules;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use bootstrap::{Bootstrap, bootstrap};
pub use layers::{Layer, Location, Origins, dropin_dir, load_layers};
pub use rules::{DN_PATTERN, SERVER_PATTERN, SERVER_V6_PATTERN, USER_NAME_PATTERN};

/// Where the daemon reads its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pangeod/pangeod.toml";

/// The validated configuration. Construct it only through [`Config::load`] or
/// [`Config::from_layers`], so that every instance has passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub cluster: Cluster,
    pub notebook: Notebook,
    pub dask: Dask,
    pub freeipa: FreeIpa,
    pub hub: Hub,
    pub api: Api,
    pub daemon: Daemon,
    pub k3s: K3s,
    pub storage: Storage,
}

/// The LVM volume group the homes live in (`storage.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    pub volume_group: String,
    /// The backing file's size; 0: 80% of the data disk's free space when it is made.
    pub size_gb: u32,
    /// A block device for the group instead of a file on the data disk.
    pub device: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub external_ip: IpAddr,
    /// The domain as configured; `None` means the derived sslip.io default.
    pub domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notebook {
    pub cpus: u32,
    pub ram_gb: u32,
    pub storage_gb: u32,
    /// Idle notebook servers are culled after this long; 0 turns culling off.
    pub idle_cull_timeout_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dask {
    pub max_worker_cores: u32,
    pub max_worker_memory_gb: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapTls {
    /// LDAP over TLS (port 636 by default).
    Ldaps,
    /// Plain LDAP upgraded with StartTLS (port 389 by default).
    Starttls,
    /// No TLS at all. Only for test directories; logged as a warning.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreeIpa {
    /// `host` or `host:port`.
    pub server: String,
    pub tls: LdapTls,
    pub base_dn: String,
    pub bind_dn: String,
    pub password_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub sync_interval_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hub {
    pub admin_users: Vec<String>,
    /// Admins reach members' notebook servers ("JupyterHub allows admin users to manage the
    /// notebooks running in the system, and even to impersonate other users"); off, a server
    /// admits its owner only (components/values.rs: `OWN_SERVER_SCOPE`).
    pub admin_access: bool,
    /// The hub's API as pangeod reaches it; unset, the chart's `hub` Service in the cluster.
    pub api_url: Option<String>,
    /// The `pangeo-appliance` service token for `api_url`; unset, the one pangeod generated
    /// for the chart.
    pub api_token_file: Option<PathBuf>,
    /// The CA of an https `api_url`.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Api {
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub admin_allowed_cidrs: Vec<IpNet>,
    /// Optional TCP listener for the portal (TLS and a bearer token).
    pub listen: Option<SocketAddr>,
    /// Named bearer tokens, one `name:token` per line; generated under the state dir if unset.
    pub token_file: Option<PathBuf>,
    /// The TCP listener's certificate and key (PEM); generated under the state dir if unset.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Daemon {
    pub state_dir: PathBuf,
    /// The mount point of the data disk, which holds everything that must outlive the image.
    pub data_dir: PathBuf,
    /// Preflight refuses to continue unless `data_dir` is a separate mounted filesystem.
    pub require_data_disk: bool,
    pub min_free_gb: u32,
}

/// How pangeod runs Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum K3sMode {
    /// `systemd` when systemd is PID 1 and the k3s unit is installed, else `child`.
    Auto,
    /// k3s in its own unit (`k3s.service`), started and watched by pangeod (production).
    Systemd,
    /// k3s as pangeod's direct child, logging to a file (dev runs without systemd).
    Child,
    /// An API server that something else runs; pangeod only uses `k3s.kubeconfig` (tests, dev).
    External,
    /// No Kubernetes on this machine: the k3s and kubernetes-api steps are skipped, and say so
    /// (dev runs of the config, API and directory layers).
    Off,
}

impl K3sMode {
    pub fn as_str(self) -> &'static str {
        match self {
            K3sMode::Auto => "auto",
            K3sMode::Systemd => "systemd",
            K3sMode::Child => "child",
            K3sMode::External => "external",
            K3sMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3s {
    pub mode: K3sMode,
    /// The k3s binary (child mode; the unit names its own).
    pub binary: PathBuf,
    /// The kubeconfig k3s writes (mode 0600) and pangeod reads.
    pub kubeconfig: PathBuf,
}

impl Config {
    /// Loads the main file and its drop-ins, and validates them.
    pub fn load(main: &Path, overlay: Option<Layer>) -> Result<Self, ConfigError> {
        let mut layers = load_layers(main)?;
        layers.extend(overlay);
        Self::from_layers(&layers, &BTreeMap::new())
    }

    /// Merges layers in order and validates the result, refusing any change to a key that
    /// was locked after the first successful boot.
    pub fn from_layers(
        layers: &[Layer],
        locked: &BTreeMap<String, LockedValue>,
    ) -> Result<Self, ConfigError> {
        let (raw, origins) = layers::merge(layers)?;
        let config = rules::validate(raw, &origins).map_err(ConfigError::Invalid)?;
        let locked_all = locked;
        let mut errors = Vec::new();
        for key in settings::locked_keys() {
            let (Some(locked), Some(value)) = (locked.get(key), config.immutable_value(key)) else {
                continue;
            };
            // A derived domain follows the IP: report the IP change alone.
            let derived_follows_ip = key == "cluster.domain"
                && config.cluster.domain.is_none()
                && locked_ip_changed(&config, locked_all);
            if locked.value != value && !derived_follows_ip {
                errors.push(FieldError {
                    key: key.to_string(),
                    location: origins.location(key).cloned(),
                    problem: format!(
                        "cannot change from \"{}\" to \"{value}\": it was locked at the first successful boot ({}), and the appliance keeps \"{}\"",
                        locked.value, locked.since, locked.value
                    ),
                    fix: format!(
                        "restore {key} = \"{}\", or launch a new appliance for a different value",
                        locked.value
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The values to lock after the first successful boot.
    pub fn immutable_values(&self) -> Vec<(String, String)> {
        settings::locked_keys()
            .filter_map(|key| Some((key.to_string(), self.immutable_value(key)?)))
            .collect()
    }

    /// The FreeIPA group whose members may log in.
    pub fn users_group(&self) -> String {
        format!("{}_notebook_users", group_prefix(&self.cluster.name))
    }

    /// The FreeIPA group whose members are hub admins.
    pub fn admins_group(&self) -> String {
        format!("{}_notebook_admins", group_prefix(&self.cluster.name))
    }

    /// The domain the hub is served on: the configured one, or `pangeo.<dashed-ip>.sslip.io`.
    pub fn domain(&self) -> String {
        match &self.cluster.domain {
            Some(domain) => domain.clone(),
            None => default_domain(self.cluster.external_ip),
        }
    }

    pub fn hub_url(&self) -> String {
        format!("https://{}/", self.domain())
    }

    /// The value of an immutable key as it is locked in the state database.
    pub fn immutable_value(&self, key: &str) -> Option<String> {
        match key {
            "cluster.name" => Some(self.cluster.name.clone()),
            "cluster.external_ip" => Some(self.cluster.external_ip.to_string()),
            "cluster.domain" => Some(self.domain()),
            "storage.volume_group" => Some(self.storage.volume_group.clone()),
            _ => None,
        }
    }
}

fn locked_ip_changed(config: &Config, locked: &BTreeMap<String, LockedValue>) -> bool {
    locked
        .get("cluster.external_ip")
        .is_some_and(|ip| ip.value != config.cluster.external_ip.to_string())
}

fn group_prefix(cluster_name: &str) -> String {
    cluster_name.to_lowercase().replace('-', "_")
}

/// Whether `section.key` is a key of the config files.
pub fn is_known_key(full: &str) -> bool {
    settings::get(full).is_some_and(settings::Setting::in_files)
}

/// Whether `section` is a section of the config at all.
pub fn is_known_section(section: &str) -> bool {
    settings::file_sections().contains(&section)
}

/// `pangeo.<ip with . or : replaced by ->.sslip.io`, which sslip.io resolves back to the IP.
pub fn default_domain(ip: IpAddr) -> String {
    let dashed = ip.to_string().replace(['.', ':'], "-");
    format!("pangeo.{dashed}.sslip.io")
}

/// The value an immutable key was locked to, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockedValue {
    pub value: String,
    pub since: String,
}

/// One broken rule, located as precisely as the layers allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub key: String,
    pub location: Option<Location>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: ")?,
            None => write!(f, "(default value): ")?,
        }
        write!(f, "{}: {}; {}", self.key, self.problem, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source}; create it, or pass the right file with --config"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list config drop-ins in {path}: {source}; fix its permissions or remove it")]
    ReadDropIns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: {message}; fix the TOML syntax there")]
    Syntax { location: Location, message: String },
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The first key named by the error, for `STATUS=` lines and problem documents.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid(errors) => errors.first().map(|e| e.key.as_str()),
            _ => None,
        }
    }

    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
