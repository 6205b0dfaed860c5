# Sourced by scripts/test and scripts/bench: starts etcd (plain, and with TLS and auth), Azurite
# and moto on free 127.0.0.1 ports, exports their addresses, and stops them (and removes their
# data) when the shell exits.
# Needs scripts/install-test-tools.sh to have run.

TOOLS="${MODELOPS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops-tools}"
services_log() { printf '[services] %s\n' "$*" >&2; }

services_dir="$(mktemp -d "${TMPDIR:-/tmp}/mops-services.XXXXXX")"
services_pids=()
services_cleanup() {
  local status=$?
  for pid in "${services_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${services_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for f in "$services_dir"/*.log; do [ -s "$f" ] && { services_log "--- tail of $f"; tail -n 20 "$f" >&2; }; done
  fi
  rm -rf "$services_dir"
}
trap services_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  services_log "$name did not start on port $port"; return 1
}

start_etcd() {
  local port peer
  port=$(free_port); peer=$(free_port)
  etcd --name mops-test --data-dir "$services_dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "mops-test=http://127.0.0.1:$peer" >"$services_dir/etcd.log" 2>&1 &
  services_pids+=($!)
  wait_port etcd "$port"
  export MOPS_TEST_ETCD_ENDPOINT="http://127.0.0.1:$port"
  services_log "etcd on :$port"
}

# A second etcd as a real deployment runs it: TLS with a throwaway CA, client certificates
# required, and authentication on (user root). The client certificate's CN is not an etcd user, so
# requests need the token from the password. Exports MOPS_TEST_ETCD_TLS_ENDPOINT and
# MOPS_TEST_ETCD_TLS_DIR, holding ca.pem, client.pem, client-key.pem and password.
start_etcd_secure() {
  local port peer dir password
  port=$(free_port); peer=$(free_port)
  dir="$services_dir/etcd-tls-certs"
  mkdir -p "$dir"
  (
    set -e
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=mops test CA" -keyout ca-key.pem -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=localhost" -keyout server-key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=mops-client" -keyout client-key.pem -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile client.ext -out client.pem
  ) >"$services_dir/etcd-tls-openssl.log" 2>&1
  password=$(openssl rand -hex 16)
  printf '%s\n' "$password" >"$dir/password"
  etcd --name mops-test-tls --data-dir "$services_dir/etcd-tls" \
    --listen-client-urls "https://127.0.0.1:$port" --advertise-client-urls "https://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "mops-test-tls=http://127.0.0.1:$peer" \
    --cert-file "$dir/server.pem" --key-file "$dir/server-key.pem" \
    --trusted-ca-file "$dir/ca.pem" --client-cert-auth >"$services_dir/etcd-tls.log" 2>&1 &
  services_pids+=($!)
  wait_port etcd-tls "$port"
  local ctl=(etcdctl --endpoints "https://127.0.0.1:$port" --cacert "$dir/ca.pem" --cert "$dir/client.pem" --key "$dir/client-key.pem")
  printf '%s\n' "$password" | ETCDCTL_API=3 "${ctl[@]}" user add root --interactive=false >>"$services_dir/etcdctl.log" 2>&1
  ETCDCTL_API=3 "${ctl[@]}" auth enable >>"$services_dir/etcdctl.log" 2>&1
  export MOPS_TEST_ETCD_TLS_ENDPOINT="https://127.0.0.1:$port"
  export MOPS_TEST_ETCD_TLS_DIR="$dir"
  services_log "etcd with TLS, client certificates and auth on :$port"
}

start_azurite() {
  local port
  port=$(free_port)
  "$TOOLS/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$services_dir/azurite" --skipApiVersionCheck --loose --disableTelemetry >"$services_dir/azurite.log" 2>&1 &
  services_pids+=($!)
  wait_port azurite "$port"
  export MOPS_TEST_AZURITE_BLOB="http://127.0.0.1:$port/devstoreaccount1"
  # Azurite's documented development account, in the variable upstream ModelOps reads.
  export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=$MOPS_TEST_AZURITE_BLOB;"
  services_log "azurite on :$port"
}

start_moto() {
  local port
  port=$(free_port)
  # moto's server, with its conditional writes made atomic as S3's are (see moto_atomic.py).
  "$TOOLS/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_atomic.py" -H 127.0.0.1 -p "$port" >"$services_dir/moto.log" 2>&1 &
  services_pids+=($!)
  wait_port moto "$port"
  export MOPS_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  services_log "moto on :$port"
}

export MOPS_TEST_GRPCURL="$TOOLS/venv/bin/grpcurl"
export MOPS_TEST_PYTHON="$TOOLS/venv/bin/python"
export MOPS_TEST_NODE_MODULES="$TOOLS/node/node_modules"
export MOPS_TEST_CHROMIUM="$(command -v chromium)"
