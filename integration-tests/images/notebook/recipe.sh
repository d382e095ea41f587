# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# The Pangeo notebook image: its ref is images/manifest.toml's `chart = "pangeod-values"` entry
# (read at build time). Also tagged as the JupyterHub chart's default singleuser image and the
# dask-gateway chart's default backend image, so the spawner and the gateway's schedulers and
# workers run it whatever pangeod's values name (client and workers then match exactly).
# KubeSpawner passes `jupyterhub-singleuser` as args; the gateway's KubeBackend passes
# `dask-scheduler --protocol tls ... --preload dask_gateway.scheduler_preload ...` and
# `dask-worker tls://... ` as args (dask-gateway-server 2026.3.0 backends/kubernetes/controller.py).
notebook_ref() {
  python3 - "$IMG_DIR/../../images/manifest.toml" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))
refs = [i["ref"] for i in m.get("image", []) if i.get("chart") == "pangeod-values"]
if len(refs) != 1 or "TODO" in refs[0]:
    sys.exit(f"images/manifest.toml: expected one verified pangeod-values image ref, found {refs}")
print(refs[0])
PY
}
NOTEBOOK_REF="$(notebook_ref)" || img_die "notebook: no image ref in images/manifest.toml (see above)"
IMG_REFS=("$NOTEBOOK_REF" quay.io/jupyterhub/k8s-singleuser-sample:4.4.0 ghcr.io/dask/dask-gateway:2026.3.0)
IMG_UPSTREAM="${IMG_REFS[0]} (Pangeo's conda image), quay.io/jupyterhub/k8s-singleuser-sample:4.4.0 and ghcr.io/dask/dask-gateway:2026.3.0"
IMG_FROM="Debian trixie python3 + tini + jupyterlab, jupyterhub 5.5.0, dask/distributed, dask-gateway 2026.3.0, xarray, zarr, h5netcdf, netCDF4, iris (requirements.txt)"
IMG_DEBS="python3,python3-venv,tini,ca-certificates,bash"
IMG_ENTRYPOINT='["tini","-g","--"]'
IMG_CMD='["jupyterhub-singleuser"]'
IMG_USER=1000
IMG_WORKDIR=/home/jovyan
IMG_ENV=("PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "LANG=C.UTF-8"
         "HOME=/home/jovyan" "SHELL=/bin/bash" "NB_USER=jovyan" "NB_UID=1000")

customize() {
  venv_install "$IMG_DIR/notebook/requirements.txt"
  add_user jovyan 1000 100 /home/jovyan
  # dask-gateway-server 2026.3.0's default scheduler_cmd/worker_cmd are `dask-scheduler` and
  # `dask-worker`; distributed 2026.8 ships only `dask scheduler` / `dask worker`.
  local c
  for c in scheduler worker; do
    if [ ! -e "$ROOTFS/opt/venv/bin/dask-$c" ]; then
      printf '#!/bin/sh\n# dask-gateway runs dask-%s; distributed now has `dask %s`.\nexec /opt/venv/bin/dask %s "$@"\n' \
        "$c" "$c" "$c" > "$ROOTFS/opt/venv/bin/dask-$c"
      chmod 0755 "$ROOTFS/opt/venv/bin/dask-$c"
    fi
  done
  in_root jupyterhub-singleuser --version >&2
  in_root dask-scheduler --version >&2
  in_root dask-worker --version >&2
  # the gateway's scheduler options (KubeBackend) reach the preload, not click's parser
  in_root dask-scheduler --help >/dev/null
  in_root python -c 'import dask_gateway, dask_gateway.scheduler_preload, distributed, jupyterlab, xarray, zarr, h5netcdf, netCDF4, numpy, iris; print("imports ok")' >&2
}
