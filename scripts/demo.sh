#!/usr/bin/env bash
# `make demo`: the whole job end to end on this machine, on real parts.
# Starts etcd + kube-apiserver + controllers and a real node (kubelet + containerd, running the
# JupyterLab and code-server images built offline), Traefik in front of the Ingresses on loopback,
# and the project's PVC on a host folder; then runs what CI would: validate, the plan (as the
# read-only plan identity), the apply (as the apply identity, waiting until the IDEs are up) and
# status; and checks that each posted credential command logs in through the ingress.
# Leaves everything running; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DIR=${CLUSTER_DIR:-$PWD/.cluster}
PORT=${DEMO_INGRESS_PORT:-8443}
NS=sample-project
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting the control plane and a real node (kubelet + containerd; first run builds them)"
$BIN/python tests/cluster/ingress.py down --dir "$DIR/ingress" 2>/dev/null || true
$BIN/python tests/cluster/launcher.py up --dir "$DIR" --fake-nodes 0 --real-node \
  --image jupyterlab --image vscode >/dev/null
export KUBECONFIG=$DIR/admin.kubeconfig
KUBECTL="$($BIN/python tests/cluster/launcher.py binaries)/kubectl"

step "Starting Traefik on 127.0.0.1 (it serves the cluster's Ingresses, TLS from a throwaway CA)"
if ! $BIN/python -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $PORT))" 2>/dev/null; then
  PORT=$($BIN/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
fi
INGRESS_KC=$($BIN/python tests/cluster/launcher.py user traefik-ingress --dir "$DIR")
$BIN/python tests/cluster/ingress.py grant --kubeconfig "$KUBECONFIG" --user traefik-ingress
$BIN/python tests/cluster/ingress.py up --dir "$DIR/ingress" --kubeconfig "$INGRESS_KC" --port "$PORT" >/dev/null
CA=$DIR/ingress/ca.crt

step "Platform set-up: namespace, the plan/apply Roles, and the project's PVC on a host folder"
"$KUBECTL" create namespace $NS --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
deploy/render.sh $NS | "$KUBECTL" apply -f - >/dev/null
VOLUME=$($BIN/python tests/cluster/launcher.py host-volume "$DIR/volumes/sample-project-pvc")
"$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: sample-project-pv}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  hostPath: {path: $VOLUME}
  claimRef: {namespace: $NS, name: sample-project-pvc}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: sample-project-pvc, namespace: $NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: sample-project-pv
  resources: {requests: {storage: 10Gi}}
YAML
"$KUBECTL" -n $NS wait pvc/sample-project-pvc --for=jsonpath='{.status.phase}'=Bound --timeout=90s >/dev/null
PLAN_KC=$($BIN/python tests/cluster/launcher.py user ci-plan --dir "$DIR")
APPLY_KC=$($BIN/python tests/cluster/launcher.py user ci-apply --dir "$DIR")
"$KUBECTL" -n $NS create rolebinding ci-plan --role workspace-reconciler-plan --user ci-plan \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n $NS create rolebinding ci-apply --role workspace-reconciler-apply --user ci-apply \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

step "reconcile validate   (what CI runs on every pull request)"
$BIN/reconcile validate

step "reconcile --dry-run   (the plan, as the read-only workspace-reconciler-plan identity)"
$BIN/reconcile --dry-run --kubeconfig "$PLAN_KC"

step "reconcile   (apply as the workspace-reconciler-apply identity, then wait until the IDEs are up)"
$BIN/reconcile --kubeconfig "$APPLY_KC" --timeout 300

step "reconcile --dry-run again   (nothing left to do)"
$BIN/reconcile --dry-run --kubeconfig "$PLAN_KC" --detailed-exitcode

step "reconcile status"
$BIN/reconcile status --kubeconfig "$PLAN_KC"

step "Each credential command, run as posted, logs in through the ingress"
export PATH="$(dirname "$KUBECTL"):$PATH"
$BIN/reconcile status --kubeconfig "$PLAN_KC" --output json >"$DIR/status.json"
WORKSPACES=()
while IFS=$'\t' read -r name tool url hint; do
  host=${url#https://}; host=${host%%/*}
  printed=$(bash -c "$hint" 2>/dev/null)
  curl_args=(-sS -o /dev/null -w '%{http_code}' --cacert "$CA" --resolve "$host:$PORT:127.0.0.1")
  if [ "$tool" = jupyterlab ]; then
    token=$(grep -o 'token=[0-9a-zA-Z]*' <<<"$printed" | head -1 | cut -d= -f2)
    code=$(curl "${curl_args[@]}" -H "Authorization: token $token" "https://$host:$PORT/api/status")
    want=200
  else
    password=$(sed -n 's/^password: *//p' <<<"$printed")
    code=$(curl "${curl_args[@]}" --data-urlencode "password=$password" "https://$host:$PORT/login")
    want=302
  fi
  if [ "$code" != "$want" ]; then
    echo "error: $name: logging in with what \`$hint\` printed answered HTTP $code, not $want" >&2
    exit 1
  fi
  printf '  %-22s logged in (HTTP %s) with what its command printed\n' "$name" "$code"
  WORKSPACES+=("$name|$url|$host|$hint")
done < <($BIN/python -c '
import json, sys
for w in json.load(open(sys.argv[1]))["workspaces"]:
    tool = "jupyterlab" if w["url"].endswith("/lab") else "vscode"
    print(w["name"], tool, w["url"], w["credentialHint"], sep="\t")
' "$DIR/status.json")

cat <<MSG

The workspaces are running on the real node, behind Traefik on 127.0.0.1:$PORT.
MSG
for w in "${WORKSPACES[@]}"; do
  IFS='|' read -r name url host hint <<<"$w"
  cat <<MSG

  $name
    URL:              $url
    password/token:   $hint
    open it here:     chromium --host-resolver-rules="MAP $host 127.0.0.1:$PORT" --ignore-certificate-errors $url
    or with curl:     curl --cacert $CA --resolve $host:$PORT:127.0.0.1 https://$host:$PORT${url#https://$host}
MSG
done
cat <<MSG

A request with a workspace's Host header to \$WORKSPACE_INGRESS reaches that workspace.
Try: edit blocks/compute/cpu-small.yaml and run '$BIN/reconcile --dry-run' to see the blast radius.
Stop everything with: make cluster-down

export KUBECONFIG=$KUBECONFIG
export WORKSPACE_INGRESS=https://127.0.0.1:$PORT
MSG
