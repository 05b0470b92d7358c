#!/usr/bin/env bash
# Build the real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) from Go modules, once, into a cache outside the checkout keyed by version.
# Prints the binary directory as its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
cache=${WORKSPACE_GITOPS_CACHE:-$HOME/.cache/workspace-gitops}
bindir=$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
mkdir -p "$bindir"

log() { printf '[cluster-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Keep memory in check while linking on a small machine; two cores, two jobs.
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export GOMAXPROCS=${GOMAXPROCS:-2}

build() {  # build <module dir> <package> <binary name> [ldflags]
  local dir=$1 pkg=$2 name=$3 ldflags=${4:-}
  if [ -x "$bindir/$name" ]; then
    log "$name: cached in $bindir"
    return
  fi
  log "$name: building $pkg (first build takes minutes; progress below)"
  local start=$SECONDS
  (
    cd "$here/$dir"
    # -v prints each package as it compiles: the progress a person watches.
    go build -v -ldflags "-s -w $ldflags" -o "$bindir/$name.tmp" "$pkg" 2>&1 |
      awk -v n="$name" '{ c++; if (c % 50 == 0) { printf "[cluster-build] %s: %d packages compiled (%s)\n", n, c, $0; fflush() } }' >&2
    exit "${PIPESTATUS[0]}"
  )
  mv "$bindir/$name.tmp" "$bindir/$name"
  log "$name: built in $((SECONDS - start))s"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build etcd go.etcd.io/etcd/server/v3 etcd
build k8s k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_ldflags"
build k8s k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_ldflags"
build k8s k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_ldflags"
build k8s k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_ldflags"
build k8s k8s.io/kubernetes/cmd/kubelet kubelet "$k8s_ldflags"
echo "$bindir"
