//! The daemon's own plumbing, read before the config is validated (reading: `layers.rs`;
//! checking: `rules.rs`, leniently).

use std::collections::BTreeMap;
use std::path::Path;

use super::layers::{Layer, Origins, dropin_dir, merge};
use super::raw::RawConfig;

/// The settings the daemon needs before the config is validated: its own plumbing (state
/// dir, sockets, TLS) and the names for its certificate. Read leniently, file by file, so that a
/// broken platform setting still lets the daemon come up and report it.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub api: super::Api,
    pub daemon: super::Daemon,
    /// Names for a generated TLS certificate: the external IP and the domain, as far as known.
    pub names: Vec<String>,
}

pub fn bootstrap(main: &Path) -> Bootstrap {
    let mut files = vec![main.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dropin_dir(main)) {
        let mut dropins: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    let mut layers = Vec::new();
    let mut names = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(mut table) = toml::from_str::<toml::Table>(&text) else {
            continue;
        };
        if let Some(cluster) = table.get("cluster").and_then(toml::Value::as_table) {
            for key in ["external_ip", "domain"] {
                if let Some(name) = cluster.get(key).and_then(toml::Value::as_str) {
                    names.push(name.to_string());
                }
            }
        }
        table.retain(|section, _| section == "api" || section == "daemon");
        let base_dir = Some(file.parent().map(Path::to_path_buf).unwrap_or_default());
        let locations = BTreeMap::new();
        if let Ok(layer) = Layer::checked(file.display().to_string(), base_dir, table, locations) {
            layers.push(layer);
        }
    }
    let (api, daemon) = match merge(&layers) {
        Ok((raw, origins)) => super::rules::plumbing_lenient(raw, &origins),
        Err(_) => super::rules::plumbing_lenient(RawConfig::default(), &Origins::default()),
    };
    names
        .retain(|name| name.parse::<std::net::IpAddr>().is_ok() || super::rules::is_dns_name(name));
    names.dedup();
    Bootstrap { api, daemon, names }
}
