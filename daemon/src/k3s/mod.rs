//! k3s: the rendered config, the bundle check, the supervisor that runs k3s (in its own systemd
//! unit, or as a direct child without systemd), and readiness. [`K3sRuntime`] ties them
//! together for the `k3s` and `kubernetes-api` boot steps.

pub mod bundle;
pub mod ready;
mod runtime;
pub mod supervisor;

pub use runtime::{K3sError, K3sRuntime, K3sStatus, NAMESPACE};

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Where k3s reads the config pangeod renders.
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// Where k3s writes its admin kubeconfig (mode 0600, see `write-kubeconfig-mode`).
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
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

/// Renders `/etc/rancher/k3s/config.yaml`. k3s's config keys are its flag names without `--`.
/// Values are written as JSON strings, which are valid YAML and need no further quoting.
pub fn render_config(config: &Config) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let ip = config.cluster.external_ip.to_string();
    let mut out =
        String::from("# Rendered by pangeod from its config; changes here are overwritten.\n");
    out.push_str(&format!(
        "write-kubeconfig: {}\n",
        quote(&path_text(&config.k3s.kubeconfig))
    ));
    out.push_str("write-kubeconfig-mode: \"0600\"\n");
    out.push_str(&format!("node-name: {}\n", quote(&node_name(config))));
    out.push_str(&format!("node-external-ip: {}\n", quote(&ip)));
    out.push_str(&format!(
        "data-dir: {}\n",
        quote(&path_text(&data_dir(config)))
    ));
    out.push_str("tls-san:\n");
    for name in [config.domain(), ip] {
        out.push_str(&format!("  - {}\n", quote(&name)));
    }
    out.push_str("disable:\n");
    for component in DISABLED_COMPONENTS {
        out.push_str(&format!("  - {}\n", quote(component)));
    }
    out
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
    fn a_custom_domain_is_a_tls_san() {
        let rendered = render_config(&config("domain = \"pangeo.example.org\""));
        assert!(
            rendered.contains("tls-san:\n  - \"pangeo.example.org\"\n  - \"192.0.2.10\"\n"),
            "{rendered}"
        );
    }
}
