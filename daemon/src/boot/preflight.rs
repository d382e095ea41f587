//! Preflight: checks of the machine before anything is installed on it.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;

use super::StepError;

/// Preflight failures can clear up by themselves (DNS propagates, disk is freed).
const RETRY: Duration = Duration::from_secs(30);
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the machine for `config` (the config in force); the step runner passes it, so this
/// module does not depend on the runner's context.
pub(super) async fn run(config: &Config) -> Result<String, StepError> {
    let mut notes = Vec::new();
    check_data_disk(config)?;
    check_free_space(config)?;
    if k3s_runs_here(config) {
        check_kernel_modules(
            &std::fs::read_to_string("/proc/filesystems").unwrap_or_default(),
            Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists(),
        )?;
    }
    notes.extend(kernel_warnings());
    if let Some(domain) = &config.cluster.domain {
        check_domain(domain, config.cluster.external_ip).await?;
        notes.push(format!(
            "{domain} resolves to {}",
            config.cluster.external_ip
        ));
    }
    for note in &notes {
        tracing::info!(note, "preflight");
    }
    Ok(if notes.is_empty() {
        "all checks passed".into()
    } else {
        format!("passed; {}", notes.join("; "))
    })
}

fn fail(key: Option<&str>, message: String) -> StepError {
    StepError {
        message,
        key: key.map(str::to_string),
        retry_after: Some(RETRY),
    }
}

/// Everything that must outlive the image lives on the data disk; refuse to fill the root.
fn check_data_disk(config: &Config) -> Result<(), StepError> {
    let data = &config.daemon.data_dir;
    if !config.daemon.require_data_disk {
        return Ok(());
    }
    let key = Some("daemon.data_dir");
    let meta = std::fs::metadata(data).map_err(|error| {
        fail(key, format!("daemon.data_dir: {} is not there ({error}): the data disk is missing; attach the data disk, or set daemon.require_data_disk = false for a throwaway VM", data.display()))
    })?;
    let parent = data.parent().unwrap_or(Path::new("/"));
    let parent_meta = std::fs::metadata(parent).map_err(|error| {
        fail(
            key,
            format!(
                "daemon.data_dir: cannot inspect {}: {error}",
                parent.display()
            ),
        )
    })?;
    if meta.dev() == parent_meta.dev() {
        return Err(fail(
            key,
            format!(
                "daemon.data_dir: {} is not a mounted filesystem: the data disk is missing; attach the data disk (homes, the hub database and state.db live there), or set daemon.require_data_disk = false for a throwaway VM",
                data.display()
            ),
        ));
    }
    if !config.daemon.state_dir.starts_with(data) {
        return Err(fail(
            Some("daemon.state_dir"),
            format!(
                "daemon.state_dir: {} is not on the data disk {}; keep state.db on the data disk so it survives an image upgrade",
                config.daemon.state_dir.display(),
                data.display()
            ),
        ));
    }
    Ok(())
}

fn check_free_space(config: &Config) -> Result<(), StepError> {
    let dir = &config.daemon.state_dir;
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|error| {
        fail(
            Some("daemon.state_dir"),
            format!(
                "daemon.state_dir: cannot inspect {}: {error}",
                dir.display()
            ),
        )
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let needed = u64::from(config.daemon.min_free_gb) << 30;
    if free < needed {
        return Err(fail(
            Some("daemon.min_free_gb"),
            format!(
                "daemon.min_free_gb: {} has {:.1} GiB free, less than the {} GiB required; free space on the data disk or grow it",
                dir.display(),
                free as f64 / f64::from(1u32 << 30),
                config.daemon.min_free_gb
            ),
        ));
    }
    Ok(())
}

/// Whether k3s runs on this machine (not for `external` or `off`).
fn k3s_runs_here(config: &Config) -> bool {
    matches!(
        config.k3s.mode,
        crate::config::K3sMode::Auto
            | crate::config::K3sMode::Systemd
            | crate::config::K3sMode::Child
    )
}

/// The kernel modules k3s cannot run without; the image loads them through
/// `/etc/modules-load.d/pangeo-k3s.conf`. `filesystems` is `/proc/filesystems`; `bridge_nf`
/// whether br_netfilter's sysctls exist.
pub(crate) fn check_kernel_modules(filesystems: &str, bridge_nf: bool) -> Result<(), StepError> {
    let overlay = filesystems
        .lines()
        .any(|line| line.trim_end().ends_with("\toverlay") || line.trim() == "overlay");
    let missing = match (overlay, bridge_nf) {
        (false, _) => Some((
            "overlay",
            "containerd stores container images on the overlay filesystem",
        )),
        (true, false) => Some((
            "br_netfilter",
            "pod traffic on the node's bridge must pass through iptables for Services to work",
        )),
        (true, true) => None,
    };
    match missing {
        Some((module, why)) => Err(fail(
            None,
            format!(
                "the kernel module {module} is not loaded, and k3s cannot run without it ({why}); load it with `modprobe {module}` and list it in /etc/modules-load.d/ (the appliance image does, in pangeo-k3s.conf: an image or kernel without it cannot run k3s)"
            ),
        )),
        None => Ok(()),
    }
}

/// What k3s would like from the kernel. Reported, not fatal.
fn kernel_warnings() -> Vec<String> {
    let mut warnings = Vec::new();
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        warnings
            .push("warning: cgroup v2 is not mounted at /sys/fs/cgroup (k3s needs it)".to_string());
    }
    warnings
}

/// A custom domain must already point at the external IP, or users could never reach the hub
/// and certificates could not be issued.
pub(crate) async fn check_domain(domain: &str, expected: IpAddr) -> Result<(), StepError> {
    let key = Some("cluster.domain");
    let lookup = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((domain, 443))).await;
    let answers: Vec<IpAddr> = match lookup {
        Err(_) => {
            return Err(fail(
                key,
                format!(
                    "cluster.domain: looking up {domain} timed out after {}s; expected it to resolve to {expected}. Check the DNS servers, or remove cluster.domain to use the sslip.io default",
                    DNS_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(error)) => {
            return Err(fail(
                key,
                format!(
                    "cluster.domain: {domain} does not resolve ({error}); expected {expected}. Create an A/AAAA record for {domain} pointing at {expected}, or remove cluster.domain to use the sslip.io default"
                ),
            ));
        }
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
    };
    if answers.contains(&expected) {
        return Ok(());
    }
    let found: Vec<String> = answers.iter().map(ToString::to_string).collect();
    Err(fail(
        key,
        format!(
            "cluster.domain: {domain} resolves to {}, not to the external IP {expected}; point its DNS record at {expected}, or remove cluster.domain to use the sslip.io default",
            found.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_domain_that_resolves_to_the_external_ip_passes() {
        check_domain("localhost", "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_domain_pointing_elsewhere_names_the_answer_and_the_expected_ip() {
        let error = check_domain("localhost", "192.0.2.10".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.key.as_deref(), Some("cluster.domain"));
        assert!(
            error
                .message
                .starts_with("cluster.domain: localhost resolves to ")
                && error.message.contains("127.0.0.1")
                && error.message.contains(
                    "not to the external IP 192.0.2.10; point its DNS record at 192.0.2.10"
                ),
            "{}",
            error.message
        );
    }

    #[tokio::test]
    async fn a_domain_that_does_not_resolve_is_named() {
        let error = check_domain("no-such-host.invalid", "192.0.2.10".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            error
                .message
                .starts_with("cluster.domain: no-such-host.invalid does not resolve")
                || error
                    .message
                    .starts_with("cluster.domain: looking up no-such-host.invalid timed out"),
            "{}",
            error.message
        );
        assert!(error.message.contains("192.0.2.10"));
    }
}

#[cfg(test)]
mod module_tests {
    use super::check_kernel_modules;

    #[test]
    fn a_missing_module_fails_preflight_naming_it() {
        let with = "nodev\tsysfs\nnodev\toverlay\n\text4\n";
        let without = "nodev\tsysfs\n\text4\n";
        assert!(check_kernel_modules(with, true).is_ok());
        let overlay = check_kernel_modules(without, true).unwrap_err();
        assert!(
            overlay.message.contains("kernel module overlay"),
            "{}",
            overlay.message
        );
        assert!(
            overlay.message.contains("modprobe overlay"),
            "{}",
            overlay.message
        );
        let bridge = check_kernel_modules(with, false).unwrap_err();
        assert!(
            bridge.message.contains("br_netfilter"),
            "{}",
            bridge.message
        );
    }
}
