# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# ghcr.io/dask/dask-gateway-server:2026.3.0. The chart's gateway deployment runs (args only)
# `dask-gateway-server --config /etc/dask-gateway/dask_gateway_config.py`, the controller
# `dask-gateway-server kube-controller --config ...`. Upstream: python slim + tini, user dask 1000,
# ENTRYPOINT tini -g --. The [kubernetes] extra brings kubernetes_asyncio (KubeBackend).
IMG_REFS=(ghcr.io/dask/dask-gateway-server:2026.3.0)
IMG_UPSTREAM="ghcr.io/dask/dask-gateway-server:2026.3.0 (python:3.13-slim + tini + dask-gateway-server[kubernetes])"
IMG_FROM="Debian trixie python3 + tini + dask-gateway-server[kubernetes]==2026.3.0 (requirements.txt)"
IMG_DEBS="python3,python3-venv,tini,ca-certificates"
IMG_ENTRYPOINT='["tini","-g","--"]'
IMG_CMD='["dask-gateway-server","--config","/etc/dask-gateway/dask_gateway_config.py"]'
IMG_USER=1000
IMG_WORKDIR=/home/dask
IMG_ENV=("PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "LANG=C.UTF-8")

customize() {
  venv_install "$IMG_DIR/gateway-server/requirements.txt"
  add_user dask 1000 1000 /home/dask
  in_root dask-gateway-server --version >&2
  in_root dask-gateway-server kube-controller --help >/dev/null
  in_root python -c 'import kubernetes_asyncio, dask_gateway_server.backends.kubernetes' >&2
}
