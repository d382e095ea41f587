//! Default values that other modules name as well. They live here, importing nothing of the
//! daemon, so that `config` depends on no other module of the daemon and the modules that use
//! these values depend on `config`, never the other way round (before, `config` imported
//! `components` and `k3s` for them, which tied config, components, directory, k3s and state
//! into one circle of imports).

/// Where k3s writes its admin kubeconfig (mode 0600, see `write-kubeconfig-mode`); the default
/// of `k3s.kubeconfig`.
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";

/// The LVM volume group on the data disk that the homes' StorageClass provisions from; the
/// default of `storage.volume_group`.
pub const VOLUME_GROUP: &str = "pangeo";

/// Where the k3s binary is, in the image; the default of `k3s.binary`.
pub const K3S_BINARY: &str = "/usr/local/bin/k3s";
