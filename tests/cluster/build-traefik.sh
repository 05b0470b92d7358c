#!/usr/bin/env bash
# Build the Traefik ingress controller (github.com/traefik/traefik/v3/cmd/traefik) from the Go
# module proxy, once, into a cache outside the checkout keyed by version. The wrapper module in
# tests/cluster/traefik pins every dependency (go.mod + go.sum, the same versions as Traefik's own
# go.mod, plus its replace/exclude lines, which Go ignores in a dependency), so a fresh clone on a
# fresh machine builds the same binary with no manual step. Prints the binary path as its last line.
#
# v3.6.12 on purpose: v3.7.x needs dependency versions the module proxy here refuses.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
TRAEFIK_VERSION=v3.6.12
cache=${WORKSPACE_GITOPS_CACHE:-$HOME/.cache/workspace-gitops}
bindir=$cache/bin/traefik-$TRAEFIK_VERSION
bin=$bindir/traefik

log() { printf '[traefik-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$bin" ]; then
  log "traefik: cached in $bindir"
  echo "$bin"
  exit 0
fi
mkdir -p "$bindir"

# Same settings as build.sh: reproducible paths, two jobs on a two-core machine.
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export GOMAXPROCS=${GOMAXPROCS:-2}

mod=$here/traefik
cd "$mod"

# The wrapper must say what Traefik's go.mod says about replace/exclude; check it against the
# module itself (go mod download -json reports where it landed in this machine's module cache).
start=$SECONDS
log "traefik $TRAEFIK_VERSION: downloading modules (first time: ~1 min)"
go mod download
tdir=$(go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$tdir" ] || [ ! -f "$tdir/go.mod" ]; then
  log "error: go mod download did not report Traefik's module directory"
  exit 1
fi
directives() {  # the replace and exclude directives of a go.mod, normalised, one per line
  go mod edit -json "$1" |
    python3 -c 'import json,sys
m = json.load(sys.stdin)
for r in m.get("Replace") or []:
    old, new = r["Old"], r["New"]
    print("replace", old["Path"], old.get("Version", "-"), "=>", new["Path"], new.get("Version", "-"))
for e in m.get("Exclude") or []:
    print("exclude", e["Path"], e["Version"])' | sort
}
if ! diff <(directives "$tdir/go.mod") <(directives "$mod/go.mod") >&2; then
  log "error: tests/cluster/traefik/go.mod must repeat Traefik's replace/exclude lines (diff above: < Traefik, > ours)"
  exit 1
fi
for line in $(directives "$tdir/go.mod" | awk '$1 == "replace" && $5 ~ /^\.|^\// {print $5}'); do
  # A local (directory) replace would point into Traefik's own tree; none exists in v3.6.x.
  log "error: Traefik's go.mod replaces with a local directory ($line): teach this script to map it into $tdir"
  exit 1
done

log "traefik $TRAEFIK_VERSION: building (first build takes ~6-7 min on 2 cores; progress below)"
ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.Codename=cheddar"
ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.BuildDate=1970-01-01T00:00:00Z"
# -v prints each package as it compiles: the progress a person watches.
set +e
go build -v -ldflags "$ldflags" -o "$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik 2>&1 |
  awk '{ c++; if (c % 50 == 0 || $0 ~ /^(#|go: |.*\.go:[0-9]+)/) { printf "[traefik-build] traefik: %d packages compiled (%s)\n", c, $0; fflush() } }' >&2
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  rm -f "$bin.tmp"
  log "error: go build failed ($rc)"
  exit "$rc"
fi
mv "$bin.tmp" "$bin"
log "traefik: built in $((SECONDS - start))s: $("$bin" version 2>/dev/null | head -1 || true)"
echo "$bin"
