#!/bin/sh
# The JupyterLab image's recipe, run as root inside a Debian bookworm root that has python3, python3-venv
# and ca-certificates: the offline builder (tests/cluster/images/build.py) runs it in its mmdebstrap chroot,
# docker/jupyterlab-server/Dockerfile in a RUN step. Both install exactly requirements.txt (hashes required).
#   setup.sh REQUIREMENTS_TXT
set -eu
req=$1

# The pod runs as UID/GID 1000 (runAsUser/fsGroup); give that UID a name and a writable home, where
# Jupyter writes its runtime files (~/.local/share/jupyter/runtime).
groupadd --gid 1000 jovyan
useradd --uid 1000 --gid 1000 --create-home --home-dir /home/jovyan --shell /bin/bash jovyan

python3 -m venv /opt/jupyter
/opt/jupyter/bin/pip install --no-cache-dir --no-input --disable-pip-version-check \
  --require-hashes --only-binary=:all: -r "$req"
/opt/jupyter/bin/pip check
# No "Would you like to get notified about official Jupyter news?" and no update notice on first open:
# a frontend setting that no server flag reaches, so the image's settings overrides turn it off.
mkdir -p /opt/jupyter/share/jupyter/lab/settings
cat > /opt/jupyter/share/jupyter/lab/settings/overrides.json <<'JSON'
{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
JSON
/opt/jupyter/bin/jupyter lab --version
rm -rf /root/.cache
