#!/usr/bin/env bash
# The Debian packages the real node, the workspace images and the browser tests need.
# Idempotent: installs only what is missing (apt-get needs root, as on CI's machine).
#   containerd, runc, containernetworking-plugins  the real node's container runtime and CNI bridge
#   mmdebstrap                                     Debian root filesystems of the workspace images
#   build-essential, pkg-config, libkrb5-dev       code-server's native modules (node-gyp)
#   chromium, fonts-liberation                     the headless browser that logs in to each IDE (and text in its screenshots)
#   iproute2, util-linux, curl                     bridges, namespaces, and the README's curl checks
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins mmdebstrap build-essential pkg-config libkrb5-dev
          chromium fonts-liberation iproute2 util-linux curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "[system-deps] installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "[system-deps] error: need root to apt-get install ${missing[*]} (run: sudo $0)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[system-deps] installed ${missing[*]}" >&2
