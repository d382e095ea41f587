# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# quay.io/jupyterhub/k8s-network-tools: the singleuser init container `block-cloud-metadata` runs
# `iptables --append OUTPUT --protocol tcp --destination 169.254.169.254 --destination-port 80
# --jump DROP` as root, privileged (JupyterHub chart 4.4.0, files/hub/jupyterhub_config.py,
# singleuser.cloudMetadata.blockWithIptables, on by default). Upstream: alpine + iptables.
IMG_REFS=(quay.io/jupyterhub/k8s-network-tools:4.4.0)
IMG_UPSTREAM="quay.io/jupyterhub/k8s-network-tools:4.4.0 (alpine + iptables)"
IMG_FROM="Debian trixie minbase + iptables (nft backend, as the node's kube-proxy)"
IMG_DEBS="iptables"
