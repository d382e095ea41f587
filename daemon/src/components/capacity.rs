//! Notebook capacity: how many more notebook servers fit on the node, given that each is
//! guaranteed `notebook.cpus` CPUs and `notebook.ram_gb` GiB (the singleuser guarantee equals
//! the limit), after what the pods already on the node request.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Serialize;

use crate::config::Config;
use std::sync::Arc;

/// What status shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Capacity {
    pub node: String,
    /// More notebook servers that fit now.
    pub servers_that_fit: u64,
    /// What each server is guaranteed.
    pub per_server_millicpu: u64,
    pub per_server_memory_bytes: u64,
    pub allocatable_millicpu: u64,
    pub allocatable_memory_bytes: u64,
    /// The requests of the pods on the node that have not finished.
    pub requested_millicpu: u64,
    pub requested_memory_bytes: u64,
    /// Which of CPU or memory runs out first.
    pub limited_by: String,
}

/// Millicores of a CPU quantity: `2`, `1.5`, `250m`.
pub fn millicpu(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse().ok();
    }
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * 1000.0).round() as u64)
}

/// The pure part: servers that fit in what is left.
pub fn fit(
    node: &str,
    allocatable: (u64, u64),
    requested: (u64, u64),
    per_server: (u64, u64),
) -> Capacity {
    let free_cpu = allocatable.0.saturating_sub(requested.0);
    let free_memory = allocatable.1.saturating_sub(requested.1);
    let by_cpu = free_cpu.checked_div(per_server.0).unwrap_or(u64::MAX);
    let by_memory = free_memory.checked_div(per_server.1).unwrap_or(u64::MAX);
    Capacity {
        node: node.to_string(),
        servers_that_fit: by_cpu.min(by_memory),
        per_server_millicpu: per_server.0,
        per_server_memory_bytes: per_server.1,
        allocatable_millicpu: allocatable.0,
        allocatable_memory_bytes: allocatable.1,
        requested_millicpu: requested.0,
        requested_memory_bytes: requested.1,
        limited_by: if by_cpu <= by_memory { "cpu" } else { "memory" }.into(),
    }
}

fn requests_of(pod: &Pod) -> (u64, u64) {
    let Some(spec) = &pod.spec else { return (0, 0) };
    let sum = |containers: &[k8s_openapi::api::core::v1::Container]| {
        containers.iter().fold((0u64, 0u64), |(cpu, memory), c| {
            let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let get = |key: &str| requests.and_then(|r| r.get(key)).map(|q| q.0.clone());
            (
                cpu + get("cpu").and_then(|q| millicpu(&q)).unwrap_or(0),
                memory
                    + get("memory")
                        .and_then(|q| super::quantity_bytes(&q))
                        .map_or(0, |b| u64::try_from(b).unwrap_or(u64::MAX)),
            )
        })
    };
    let (cpu, memory) = sum(&spec.containers);
    // Init containers run one at a time before the others: the pod reserves the larger.
    let (init_cpu, init_memory) = spec
        .init_containers
        .as_deref()
        .map(|init| {
            init.iter().fold((0u64, 0u64), |(c, m), container| {
                let (cc, mm) = sum(std::slice::from_ref(container));
                (c.max(cc), m.max(mm))
            })
        })
        .unwrap_or((0, 0));
    (cpu.max(init_cpu), memory.max(init_memory))
}

/// How many more servers fit on `node`, after the requests of its pods that have not finished
/// (`pods` may hold other nodes' pods: they are left out).
pub fn capacity(node: &Node, pods: &[Arc<Pod>], config: &Config) -> Capacity {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|a| {
            (
                a.get("cpu").and_then(|q| millicpu(&q.0)).unwrap_or(0),
                a.get("memory")
                    .and_then(|q| super::quantity_bytes(&q.0))
                    .map_or(0, |b| u64::try_from(b).unwrap_or(u64::MAX)),
            )
        })
        .unwrap_or((0, 0));
    let requested = pods
        .iter()
        .filter(|pod| {
            let on_node =
                pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str());
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            on_node && !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|pod| requests_of(pod))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    fit(&node_name, allocatable, requested, per_server(config))
}

/// What one notebook server is guaranteed: (millicpu, bytes). The chart gets `notebook.ram_gb`
/// as `"<n>G"`, which KubeSpawner reads as n GiB (its G is 1024³: a pod of `ram_gb = 2`
/// requests 2147483648 bytes, as integration-tests/fullstack.sh sees on the node).
pub fn per_server(config: &Config) -> (u64, u64) {
    (
        u64::from(config.notebook.cpus) * 1000,
        u64::from(config.notebook.ram_gb) << 30,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config with these notebook settings.
    fn config(cpus: u32, ram_gb: u32) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "x").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let text = format!(
            "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[notebook]\ncpus = {cpus}\nram_gb = {ram_gb}\n[freeipa]\nserver = \"ipa.example.test\"\nbase_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,dc=example,dc=test\"\npassword_file = \"pw\"\nca_file = \"ca.pem\"\n"
        );
        let layer =
            crate::config::Layer::from_str("test.toml", Some(dir.path().to_path_buf()), &text)
                .unwrap();
        Config::from_layers(&[layer], &Default::default()).unwrap()
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(millicpu("2"), Some(2000));
        assert_eq!(millicpu("1.5"), Some(1500));
        assert_eq!(millicpu("250m"), Some(250));
        assert_eq!(millicpu("x"), None);
    }

    #[test]
    fn a_server_is_guaranteed_what_kubespawner_requests() {
        assert_eq!(per_server(&config(2, 2)), (2000, 2_147_483_648));
    }

    #[test]
    fn what_runs_out_first_decides() {
        let gb = 1_000_000_000;
        let c = fit("n", (4000, 16 * gb), (1000, 2 * gb), (1000, 2 * gb));
        assert_eq!((c.servers_that_fit, c.limited_by.as_str()), (3, "cpu"));
        let c = fit("n", (16000, 8 * gb), (0, 0), (1000, 4 * gb));
        assert_eq!((c.servers_that_fit, c.limited_by.as_str()), (2, "memory"));
        let c = fit("n", (1000, gb), (2000, 2 * gb), (1000, gb));
        assert_eq!(c.servers_that_fit, 0, "an overcommitted node fits none");
    }

    #[test]
    fn only_unfinished_pods_on_the_node_count() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n1" },
            "status": { "allocatable": { "cpu": "4", "memory": "8Gi" } },
        }))
        .unwrap();
        let pod = |name: &str, node: &str, phase: &str, cpu: &str| {
            Arc::new(
                serde_json::from_value::<Pod>(serde_json::json!({
                    "metadata": { "name": name },
                    "spec": { "nodeName": node, "containers": [
                        { "name": "c", "resources": { "requests": { "cpu": cpu, "memory": "1Gi" } } }
                    ] },
                    "status": { "phase": phase },
                }))
                .unwrap(),
            )
        };
        let pods = [
            pod("running", "n1", "Running", "1"),
            pod("pending", "n1", "Pending", "500m"),
            pod("done", "n1", "Succeeded", "2"),
            pod("failed", "n1", "Failed", "2"),
            pod("elsewhere", "n2", "Running", "2"),
        ];
        let c = fit("n1", (4000, 8 << 30), (1500, 2 << 30), (1000, 1 << 30));
        let got = capacity(&node, &pods, &config(1, 1));
        assert_eq!(got, c);
        assert_eq!((got.requested_millicpu, got.servers_that_fit), (1500, 2));
    }
}
