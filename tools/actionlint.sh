#!/usr/bin/env bash
# Build actionlint (the GitHub Actions workflow linter) from its Go module, once, into a cache
# outside the checkout keyed by version, and print the binary's path as the last line.
# Reused when present; needs only `go` and the Go module proxy. Override the version with
# ACTIONLINT_VERSION and the cache root with WORKSPACE_GITOPS_CACHE.
set -euo pipefail

ACTIONLINT_VERSION=${ACTIONLINT_VERSION:-v1.7.12}
cache=${WORKSPACE_GITOPS_CACHE:-$HOME/.cache/workspace-gitops}
bindir=$cache/bin/actionlint-$ACTIONLINT_VERSION
bin=$bindir/actionlint

log() { printf '[actionlint-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$bin" ]; then
  log "cached: $bin"
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "error: 'go' is not on PATH; install Go (>= 1.22) to build actionlint $ACTIONLINT_VERSION"
  exit 1
fi

log "building github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION with $(go version)"
mkdir -p "$bindir"
tmp=$(mktemp -d "$bindir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
# -v prints each package as it compiles: the progress a person watches. GOBIN points at a
# temporary folder so that a failed or interrupted build never leaves a half-written binary.
(
  export GOBIN=$tmp GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath" GOMAXPROCS=${GOMAXPROCS:-2}
  go install -v -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" 2>&1 |
    awk '{ c++; printf "[actionlint-build] %d: %s\n", c, $0; fflush() }' >&2
  exit "${PIPESTATUS[0]}"
)
mv "$tmp/actionlint" "$bin"
log "built in $((SECONDS - start))s: $bin"
echo "$bin"
