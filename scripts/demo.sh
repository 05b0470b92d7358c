#!/usr/bin/env bash
# `make demo`: the whole job end to end on this machine, against the local control plane.
# Starts etcd + kube-apiserver + controllers (built on first use), creates the example PVC,
# then runs what CI would: validate, the plan (as the read-only plan identity), the apply
# (as the apply identity), and status. Leaves the cluster up; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DIR=${CLUSTER_DIR:-$PWD/.cluster}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting the local control plane (kube-apiserver v1.34 + etcd, built from Go modules)"
$BIN/python tests/cluster/launcher.py up --dir "$DIR" --fake-nodes 1 --node-gpus 1 >/dev/null
export KUBECONFIG=$DIR/admin.kubeconfig
KUBECTL="$($BIN/python tests/cluster/launcher.py binaries)/kubectl"

step "Platform set-up: namespace, the plan/apply Roles, and the project's existing PVC"
"$KUBECTL" create namespace sample-project --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" apply -f deploy/rbac/ >/dev/null
"$KUBECTL" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolume
metadata: {name: sample-project-pv}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  hostPath: {path: /tmp/workspace-gitops-demo/sample-project-pvc}
  claimRef: {namespace: sample-project, name: sample-project-pvc}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: sample-project-pvc, namespace: sample-project}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: sample-project-pv
  resources: {requests: {storage: 10Gi}}
YAML
"$KUBECTL" -n sample-project wait pvc/sample-project-pvc --for=jsonpath='{.status.phase}'=Bound --timeout=90s >/dev/null
PLAN_KC=$($BIN/python tests/cluster/launcher.py user ci-plan --dir "$DIR")
APPLY_KC=$($BIN/python tests/cluster/launcher.py user ci-apply --dir "$DIR")
"$KUBECTL" -n sample-project create rolebinding ci-plan --role workspace-reconciler-plan --user ci-plan \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n sample-project create rolebinding ci-apply --role workspace-reconciler-apply --user ci-apply \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

step "reconcile validate   (what CI runs on every pull request)"
$BIN/reconcile validate

step "reconcile --dry-run   (the plan, as the read-only workspace-reconciler-plan identity)"
$BIN/reconcile --dry-run --kubeconfig "$PLAN_KC"

step "reconcile   (apply as the workspace-reconciler-apply identity, then wait until ready)"
$BIN/reconcile --kubeconfig "$APPLY_KC" --timeout 120

step "reconcile --dry-run again   (nothing left to do)"
$BIN/reconcile --dry-run --kubeconfig "$PLAN_KC" --detailed-exitcode

step "reconcile status"
$BIN/reconcile status --kubeconfig "$PLAN_KC"

cat <<MSG

The control plane is still running:  export KUBECONFIG=$KUBECONFIG
Try: edit blocks/compute/cpu-mid.yaml and run '$BIN/reconcile --dry-run' to see the blast radius.
Stop it with: make cluster-down
MSG
