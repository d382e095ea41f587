//! The Kubernetes API server's port, open only to the admins' networks: the admin kubeconfig
//! (`GET /v1/kubeconfig`) names `https://<external IP>:6443`, and k3s listens on every address.
//! pangeod keeps one nftables table of its own, `inet pangeo_apiserver`, replaced atomically
//! (one `nft -f` transaction) before k3s starts and on every reload:
//!
//! - the node itself (anything arriving on `lo`) and the pods (k3s's cluster CIDR, which reach
//!   the API server through the `kubernetes` Service) are always let in;
//! - sources in `api.admin_allowed_cidrs`, the same networks the admin API admits, are let in;
//! - every other source gets a TCP reset.
//!
//! The rest of the machine's traffic is not touched: the table has one chain, for this port.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

/// The API server's port (k3s's `https-listen-port`, left at its default).
pub const APISERVER_PORT: u16 = 6443;
/// k3s's default pod network (`cluster-cidr`): the pods reach the API server from it.
pub const CLUSTER_CIDR: &str = "10.42.0.0/16";
/// pangeod's table.
pub const TABLE: &str = "pangeo_apiserver";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "cannot run nft to limit the Kubernetes API server's port {port} to api.admin_allowed_cidrs: {source}; the appliance image ships nftables (images/recipe/packages), so install it (apt-get install nftables) on any other machine"
    )]
    Missing { port: u16, source: std::io::Error },
    #[error(
        "nft refused the rules for the Kubernetes API server's port {port} (exit {code}): {stderr}; check that the kernel has nf_tables (modprobe nf_tables)"
    )]
    Refused {
        port: u16,
        code: String,
        stderr: String,
    },
}

/// The ruleset: pure, so a unit test reads it; `apply` loads it.
pub fn ruleset(port: u16, allowed: &[IpNet]) -> String {
    let mut v4: Vec<String> = vec![CLUSTER_CIDR.to_string()];
    let mut v6: Vec<String> = Vec::new();
    for net in allowed {
        match net {
            IpNet::V4(net) => v4.push(net.to_string()),
            IpNet::V6(net) => v6.push(net.to_string()),
        }
    }
    let mut rules = format!(
        "# pangeod: the Kubernetes API server's port, for the node, its pods and api.admin_allowed_cidrs\n\
         table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\ttcp dport {port} iifname \"lo\" accept\n\
         \t\ttcp dport {port} ip saddr {{ {} }} accept\n",
        v4.join(", ")
    );
    if !v6.is_empty() {
        rules.push_str(&format!(
            "\t\ttcp dport {port} ip6 saddr {{ {} }} accept\n",
            v6.join(", ")
        ));
    }
    rules.push_str(&format!(
        "\t\ttcp dport {port} counter reject with tcp reset\n\t}}\n}}\n"
    ));
    rules
}

/// Loads `ruleset(port, allowed)` in one `nft -f -` transaction (in the caller's network
/// namespace).
pub fn apply(port: u16, allowed: &[IpNet]) -> Result<(), FirewallError> {
    let rules = ruleset(port, allowed);
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FirewallError::Missing { port, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows as nft's own failure below.
        let _ = stdin.write_all(rules.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| FirewallError::Missing { port, source })?;
    if output.status.success() {
        tracing::info!(port, allowed = ?allowed, "the Kubernetes API server's port is open to the node, its pods and api.admin_allowed_cidrs only");
        Ok(())
    } else {
        Err(FirewallError::Refused {
            port,
            code: output
                .status
                .code()
                .map_or_else(|| "by a signal".into(), |c| c.to_string()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_admits_the_node_the_pods_and_the_admin_networks_only() {
        let allowed: Vec<IpNet> = vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let rules = ruleset(6443, &allowed);
        assert!(
            rules.contains("delete table inet pangeo_apiserver\n"),
            "{rules}"
        );
        assert!(
            rules.contains("tcp dport 6443 iifname \"lo\" accept"),
            "{rules}"
        );
        assert!(
            rules.contains("tcp dport 6443 ip saddr { 10.42.0.0/16, 192.0.2.0/24 } accept"),
            "{rules}"
        );
        assert!(
            rules.contains("tcp dport 6443 ip6 saddr { 2001:db8::/32 } accept"),
            "{rules}"
        );
        assert!(
            rules
                .trim_end()
                .ends_with("tcp dport 6443 counter reject with tcp reset\n\t}\n}"),
            "{rules}"
        );
        // No admin networks: the node and its pods only (an empty set is not valid nft).
        let rules = ruleset(6443, &[]);
        assert!(!rules.contains("ip6 saddr"), "{rules}");
        assert!(
            rules.contains("ip saddr { 10.42.0.0/16 } accept"),
            "{rules}"
        );
    }
}
