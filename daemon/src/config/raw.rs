//! The configuration as written: the serde types every layer is read into, before any rule is
//! applied (`rules.rs`). Here so that reading (`layers.rs`) and checking (`rules.rs`) both
//! depend on it and not on each other.

use serde::Deserialize;

use super::{K3sMode, LdapTls};

/// The configuration as written, before any rule is applied. Integers are `i64` so that a
/// negative or huge value is reported by our range rule, not as a type error.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(super) cluster: RawCluster,
    pub(super) notebook: RawNotebook,
    pub(super) dask: RawDask,
    pub(super) freeipa: RawFreeIpa,
    pub(super) hub: RawHub,
    pub(super) api: RawApi,
    pub(super) daemon: RawDaemon,
    pub(super) k3s: RawK3s,
    pub(super) storage: RawStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) volume_group: Option<String>,
    pub(super) size_gb: Option<i64>,
    pub(super) device: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawK3s {
    pub(super) mode: Option<K3sMode>,
    pub(super) binary: Option<String>,
    pub(super) kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: Option<String>,
    pub(super) external_ip: Option<String>,
    pub(super) domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNotebook {
    pub(super) cpus: Option<i64>,
    pub(super) ram_gb: Option<i64>,
    pub(super) storage_gb: Option<i64>,
    pub(super) idle_cull_timeout_minutes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDask {
    pub(super) max_worker_cores: Option<i64>,
    pub(super) max_worker_memory_gb: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFreeIpa {
    pub(super) server: Option<String>,
    pub(super) tls: Option<LdapTls>,
    pub(super) base_dn: Option<String>,
    pub(super) bind_dn: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) sync_interval_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHub {
    pub(super) admin_users: Option<Vec<String>>,
    pub(super) admin_access: Option<bool>,
    pub(super) api_url: Option<String>,
    pub(super) api_token_file: Option<String>,
    pub(super) ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) socket: Option<String>,
    pub(super) socket_group: Option<String>,
    pub(super) admin_allowed_cidrs: Option<Vec<String>>,
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) require_data_disk: Option<bool>,
    pub(super) min_free_gb: Option<i64>,
}
