#!/bin/sh
# deploy/render.sh NAMESPACE: the manifests of deploy/rbac/ (ServiceAccounts, Roles, RoleBindings
# of the plan and apply identities) for one project's namespace, on stdout:
#
#     deploy/render.sh my-team | kubectl apply -f -
#
# The files hold the placeholder __NAMESPACE__, which is not a valid namespace: applied without
# this step they fail instead of landing in some namespace by accident.
set -eu
ns=${1:-}
if ! printf '%s' "$ns" | grep -Eqx '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'; then
  echo "usage: deploy/render.sh NAMESPACE (a DNS-1123 label: lower-case letters, digits and '-'; got '$ns')" >&2
  exit 64
fi
for f in "$(dirname "$0")"/rbac/*.yaml; do
  printf -- '---\n# %s\n' "rbac/${f##*/}"
  sed "s/__NAMESPACE__/$ns/g" "$f"
done
