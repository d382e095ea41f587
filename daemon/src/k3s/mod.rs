//! k3s: the rendered config, the bundle check, the supervisor that runs k3s (in its own systemd
//! unit, or as a direct child without systemd), and readiness. [`K3sRuntime`] ties them
//! together for the `k3s` and `kubernetes-api` boot steps.

pub mod bundle;
pub mod firewall;
pub mod ready;
mod runtime;
pub mod supervisor;

pub use runtime::{K3sError, K3sRuntime, K3sStatus, NAMESPACE};

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Where k3s reads the config pangeod renders.
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// Where k3s writes its admin kubeconfig (mode 0600, see `write-kubeconfig-mode`).
pub const KUBECONFIG_PATH: &str = crate::config::defaults::KUBECONFIG_PATH;
/// The unit k3s runs in under systemd (`systemd/k3s.service`).
pub const UNIT: &str = "k3s.service";

/// Bundled components pangeod replaces: local-path ignores volume sizes and cannot expand
/// volumes, so homes use a provisioner that can (the storage issue).
pub const DISABLED_COMPONENTS: &[&str] = &["local-storage"];

/// k3s's datastore lives on the data disk, so an image upgrade keeps the cluster.
pub fn data_dir(config: &Config) -> PathBuf {
    config.daemon.data_dir.join("k3s")
}

/// The node name: stable across image upgrades, so the datastore's node stays the same node.
pub fn node_name(config: &Config) -> String {
    config.cluster.name.to_lowercase()
}

/// `/etc/rancher/k3s/config.yaml`: k3s's config keys are its flag names without `--`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct K3sConfig {
    pub write_kubeconfig: String,
    pub write_kubeconfig_mode: String,
    pub node_name: String,
    pub node_external_ip: String,
    pub data_dir: String,
    pub tls_san: Vec<String>,
    pub disable: Vec<String>,
}

impl K3sConfig {
    pub fn from_config(config: &Config) -> Self {
        let ip = config.cluster.external_ip.to_string();
        Self {
            write_kubeconfig: path_text(&config.k3s.kubeconfig),
            write_kubeconfig_mode: "0600".into(),
            node_name: node_name(config),
            node_external_ip: ip.clone(),
            data_dir: path_text(&data_dir(config)),
            tls_san: vec![config.domain(), ip],
            disable: DISABLED_COMPONENTS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// Renders `/etc/rancher/k3s/config.yaml`, serialised (so no value can escape its string).
pub fn render_config(config: &Config) -> String {
    let yaml = serde_yaml_ng::to_string(&K3sConfig::from_config(config))
        .unwrap_or_else(|e| format!("# cannot be rendered: {e}\n"));
    format!("# Rendered by pangeod from its config; changes here are overwritten.\n{yaml}")
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layer;

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "x").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let text = format!(
            "[cluster]\nname = \"Demo-Cluster\"\nexternal_ip = \"192.0.2.10\"\n{extra}\n[freeipa]\nserver = \"ipa.example.test\"\nbase_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,dc=example,dc=test\"\npassword_file = \"pw\"\nca_file = \"ca.pem\"\n"
        );
        let layer = Layer::from_str("test.toml", Some(dir.path().to_path_buf()), &text).unwrap();
        Config::from_layers(&[layer], &Default::default()).unwrap()
    }

    #[test]
    fn the_rendered_config_matches_the_golden_file() {
        let golden = include_str!("../../tests/golden/k3s-config.yaml");
        assert_eq!(render_config(&config("")), golden);
    }

    #[test]
    fn the_rendered_yaml_reads_back_as_the_struct() {
        let config = config("domain = \"pangeo.example.org\"");
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&render_config(&config)).unwrap();
        let expected = serde_yaml_ng::to_value(K3sConfig::from_config(&config)).unwrap();
        assert_eq!(value, expected);
        assert_eq!(
            value["write-kubeconfig-mode"].as_str(),
            Some("0600"),
            "a string, not octal"
        );
    }

    #[test]
    fn a_custom_domain_is_a_tls_san() {
        let rendered = render_config(&config("domain = \"pangeo.example.org\""));
        assert!(
            rendered.contains("tls-san:\n- pangeo.example.org\n- 192.0.2.10\n"),
            "{rendered}"
        );
    }
}
