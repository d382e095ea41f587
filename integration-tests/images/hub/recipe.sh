# shellcheck disable=SC2034  # variables set here are read by the scripts that source this file
# shellcheck shell=bash
# quay.io/jupyterhub/k8s-hub:4.4.0. The chart's hub deployment runs (args, no command)
# `jupyterhub --config /usr/local/etc/jupyterhub/jupyterhub_config.py --upgrade-db` as uid 1000,
# mounts its config under /usr/local/etc/jupyterhub/ and the sqlite PVC at /srv/jupyterhub.
# The chart's jupyterhub_config.py uses tornado's curl client (pycurl) and kubespawner.
IMG_REFS=(quay.io/jupyterhub/k8s-hub:4.4.0)
IMG_UPSTREAM="quay.io/jupyterhub/k8s-hub:4.4.0 (python:3.12-slim-bookworm + images/hub/requirements.txt)"
IMG_FROM="Debian trixie python3 + tini + the chart's pinned hub requirements (JupyterHub 5.5.0, kubespawner 7.0.0, ldapauthenticator 2.0.2)"
IMG_DEBS="python3,python3-venv,tini,ca-certificates"
IMG_ENTRYPOINT='["tini","--"]'
IMG_CMD='["jupyterhub","--config","/usr/local/etc/jupyterhub/jupyterhub_config.py"]'
IMG_USER=1000
IMG_WORKDIR=/srv/jupyterhub
IMG_ENV=("PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "LANG=C.UTF-8")

customize() {
  venv_install "$IMG_DIR/hub/requirements.txt"
  add_user jovyan 1000 1000 /home/jovyan
  mkdir -p "$ROOTFS/srv/jupyterhub" "$ROOTFS/usr/local/etc/jupyterhub"
  chown 1000:1000 "$ROOTFS/srv/jupyterhub"
  in_root jupyterhub --version >&2
  in_root python -c 'import kubespawner, ldapauthenticator, pycurl, kubernetes_asyncio, jupyterhub_idle_culler, sqlalchemy; import tornado.curl_httpclient' >&2
}
