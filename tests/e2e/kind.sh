#!/usr/bin/env bash
# End-to-end check of the Kubernetes deployment on a kind cluster shaped like
# LOCAL-PLUS's node pools: an untainted "application" worker, a "platform"
# worker tainted platform=true:NoSchedule and a "spot" worker tainted
# spot=true:PreferNoSchedule.
#
# It builds the image from the Dockerfile, loads it into the cluster, applies
# deploy/overlays/localplus (through an overlay that only swaps the image tag
# and the policy),
# waits for the rollout and for readiness on every worker, checks an allowed
# and a denied pod-to-pod edge, deletes the DaemonSet and checks enforcement
# stays, runs the cleanup DaemonSet of deploy/uninstall and checks it is gone, and
# deletes the cluster (also on failure). In between, NetworkPolicies applied
# with kubectl and pod labels changed with kubectl are enforced as the agents
# watch them on the API server (deploy/base runs them with --kubernetes).
#
# Needs docker (a running engine), kind and kubectl; a kernel >= 6.6. The
# Vagrantfile's "kind" provisioner installs them and runs this script.
#
# Environment:
#   NETPOL_E2E_CLUSTER     cluster name (default netpol-e2e-<pid>)
#   NETPOL_E2E_NODE_IMAGE  kind node image (default kindest/node:v1.33.1)
#   NETPOL_E2E_SKIP_BUILD  1: use an existing netpol-agent:e2e image
#   NETPOL_E2E_KEEP        1: keep the cluster afterwards (for debugging)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${NETPOL_E2E_CLUSTER:-netpol-e2e-$$}
NODE_IMAGE=${NETPOL_E2E_NODE_IMAGE:-kindest/node:v1.33.1}
IMAGE=netpol-agent:e2e
AGENT_NS=netpol-agent
TEST_NS=netpol-e2e
POD_SUBNET=10.244.0.0/16
SERVICE_SUBNET=10.96.0.0/16
WORK=$(mktemp -d)
CONTEXT=kind-$CLUSTER

log() { printf '[kind.sh] %s\n' "$*" >&2; }

k() { kubectl --context "$CONTEXT" "$@"; }

dump() {
	log "cluster state:"
	k get nodes -o wide || true
	k get pods -A -o wide || true
	k -n "$AGENT_NS" describe daemonset netpol-agent || true
	k -n "$AGENT_NS" logs -l app.kubernetes.io/name=netpol-agent --tail=50 --prefix || true
}

fail() {
	log "FAIL: $*"
	dump
	exit 1
}

cleanup() {
	local rc=$?
	if [ "${NETPOL_E2E_KEEP:-0}" = 1 ]; then
		log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
	else
		kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
	exit "$rc"
}

for tool in docker kind kubectl; do
	command -v "$tool" >/dev/null || { log "missing $tool"; exit 2; }
done
docker info >/dev/null 2>&1 || { log "docker engine not reachable"; exit 2; }

if [ "${NETPOL_E2E_SKIP_BUILD:-0}" != 1 ]; then
	log "building $IMAGE"
	docker build -t "$IMAGE" "$REPO"
fi

cat >"$WORK/kind.yaml" <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: $POD_SUBNET
  serviceSubnet: $SERVICE_SUBNET
nodes:
  - role: control-plane
  - role: worker
    labels: {pool: application}
  - role: worker
    labels: {pool: platform}
    kubeadmConfigPatches:
      - |
        kind: JoinConfiguration
        nodeRegistration:
          taints:
            - {key: platform, value: "true", effect: NoSchedule}
  - role: worker
    labels: {pool: spot}
    kubeadmConfigPatches:
      - |
        kind: JoinConfiguration
        nodeRegistration:
          taints:
            - {key: spot, value: "true", effect: PreferNoSchedule}
KIND

trap cleanup EXIT
log "creating cluster $CLUSTER ($NODE_IMAGE)"
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$WORK/kind.yaml" --wait 180s
kind load docker-image "$IMAGE" --name "$CLUSTER"

mapfile -t WORKERS < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[ "${#WORKERS[@]}" -eq 3 ] || fail "expected 3 workers, got ${WORKERS[*]}"

# Mounting bpffs is the node's job (systemd does it on real nodes); kind nodes
# are containers and do not.
for node in "${WORKERS[@]}"; do
	docker exec "$node" sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf'
done

# Test pods: a server and an allowed client on the application worker's side,
# a denied client, all started before the agent so that their addresses can
# go into the policy.
node_of_pool() { k get nodes -l "pool=$1" -o jsonpath='{.items[0].metadata.name}'; }
APP_NODE=$(node_of_pool application)
SPOT_NODE=$(node_of_pool spot)
k create namespace "$TEST_NS"
pod() { # name node command...
	local name=$1 node=$2
	shift 2
	k -n "$TEST_NS" run "$name" --image=busybox:1.36 --restart=Never \
		--overrides="{\"apiVersion\":\"v1\",\"spec\":{\"nodeName\":\"$node\",\"tolerations\":[{\"operator\":\"Exists\"}]}}" \
		--command -- "$@"
}
pod server "$APP_NODE" sh -c 'mkdir -p /www && echo netpol-e2e-ok >/www/index.html && exec httpd -f -p 8080 -h /www'
pod allowed "$SPOT_NODE" sleep 3600
pod denied "$APP_NODE" sleep 3600
k -n "$TEST_NS" wait --for=condition=Ready pod/server pod/allowed pod/denied --timeout=180s
ip_of() { k -n "$TEST_NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
SERVER_IP=$(ip_of server)
ALLOWED_IP=$(ip_of allowed)
DENIED_IP=$(ip_of denied)
log "server $SERVER_IP, allowed client $ALLOWED_IP, denied client $DENIED_IP"

fetch() { # client -> exit status of an HTTP GET to the server, bounded
	timeout 30 kubectl --context "$CONTEXT" -n "$TEST_NS" exec "$1" -- \
		wget -q -T 5 -O - "http://$SERVER_IP:8080/" >/dev/null 2>&1
}
# Without the agent both clients reach the server: a later failure is the
# agent's doing, not the cluster's.
fetch allowed || fail "allowed client cannot reach the server before the agent runs"
fetch denied || fail "denied client cannot reach the server before the agent runs"

# The e2e policy: the cluster stays open (pods, services, kind's node
# network) except towards the server, which only the allowed client may
# reach on 8080/tcp.
KIND_SUBNETS=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}')
{
	echo "groups:"
	echo "  e2e-server: [$SERVER_IP/32]"
	echo "  e2e-allowed: [$ALLOWED_IP/32]"
	echo "  cluster:"
	printf '    cidrs: [%s, %s' "$POD_SUBNET" "$SERVICE_SUBNET"
	for s in $KIND_SUBNETS; do printf ', "%s"' "$s"; done
	echo "]"
	echo "    except: [$SERVER_IP/32]"
	echo "rules:"
	echo "  - name: cluster-open"
	echo "    within: [cluster]"
	echo "  - name: allowed-to-server"
	echo "    from: e2e-allowed"
	echo "    to: e2e-server"
	echo "    ports: [8080/tcp]"
	echo "  - name: ping"
	echo "    from: any"
	echo "    to: any"
	echo "    ports: [icmp/8, icmpv6/128]"
} >"$WORK/e2e.yaml"
log "policy:"
cat "$WORK/e2e.yaml" >&2

# The overlay changes only the image and the policy; everything else is
# deploy/overlays/localplus as shipped (its node pools' tolerations included).
mkdir "$WORK/overlay"
mv "$WORK/e2e.yaml" "$WORK/overlay/e2e.yaml"
cat >"$WORK/overlay/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$WORK/overlay" "$REPO/deploy/overlays/localplus")
configMapGenerator:
  - name: netpol-agent-policy
    behavior: replace
    files: [e2e.yaml]
    options:
      disableNameSuffixHash: true
images:
  - name: ghcr.io/localplus/netpol-agent
    newName: netpol-agent
    newTag: e2e
KUST
k apply -k "$WORK/overlay"
k -n "$AGENT_NS" rollout status daemonset/netpol-agent --timeout=300s ||
	fail "the DaemonSet did not roll out"

# One ready agent on every worker, tainted pools included.
ready=$(k -n "$AGENT_NS" get daemonset netpol-agent -o jsonpath='{.status.numberReady}')
[ "$ready" = 3 ] || fail "$ready agents ready, expected 3"
for node in "${WORKERS[@]}"; do
	n=$(k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=netpol-agent \
		--field-selector "spec.nodeName=$node" -o name | wc -l)
	[ "$n" = 1 ] || fail "$n agents on $node, expected 1"
done
log "an agent is ready on each of ${WORKERS[*]}"

fetch allowed || fail "allowed edge is blocked"
if fetch denied; then fail "denied edge is open"; fi
log "allowed edge passes, denied edge is dropped"

APP_AGENT=$(k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=netpol-agent \
	--field-selector "spec.nodeName=$APP_NODE" -o jsonpath='{.items[0].metadata.name}')
stats=$(k -n "$AGENT_NS" exec "$APP_AGENT" -- netpol-agent stats)
printf '%s\n' "$stats" >&2
grep -q 'policy-denied' <<<"$stats" || fail "no policy-denied counter on $APP_NODE"

# NetworkPolicies and labels from the API server (`--kubernetes`): the
# denied client gets through only while it carries the label two
# NetworkPolicies name (ingress on the server, egress on the clients: with
# native rules present every pod is isolated both ways, and the native
# policy keeps the server closed to it), and is blocked again once the
# policies are deleted. Every step reaches the agents as a watch event.
k -n "$TEST_NS" apply -f - <<'NETPOL'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-e2e-clients}
spec:
  podSelector: {matchLabels: {run: server}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {e2e-client: "yes"}}}]
      ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: e2e-clients-to-server}
spec:
  podSelector: {matchLabels: {e2e-client: "yes"}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {run: server}}}]
      ports: [{protocol: TCP, port: 8080}]
NETPOL
# Reloads are debounced and cheap; give every node's agent a moment.
eventually() { # what-must-happen command...
	local what=$1
	shift
	for _ in $(seq 15); do
		"$@" && return 0
		sleep 2
	done
	fail "not within 30 s: $what"
}
not() { ! "$@"; }
sleep 2
if fetch denied; then fail "the client passes without the label"; fi
fetch allowed || fail "allowed edge blocked by the NetworkPolicies"
k -n "$TEST_NS" label pod denied e2e-client=yes
eventually "the labelled client passes" fetch denied
k -n "$TEST_NS" label pod denied e2e-client-
eventually "the unlabelled client is blocked again" not fetch denied
k -n "$TEST_NS" label pod denied e2e-client=yes
eventually "the relabelled client passes" fetch denied
k -n "$TEST_NS" delete networkpolicy server-from-e2e-clients e2e-clients-to-server
eventually "the client is blocked once the NetworkPolicies are deleted" not fetch denied
k -n "$AGENT_NS" logs -l app.kubernetes.io/name=netpol-agent --tail=-1 | grep -q 'Kubernetes API: synced' ||
	fail "no agent logged its Kubernetes sync"
log "NetworkPolicies and labels from the API server are enforced and followed"

# Deleting the DaemonSet stops the agents, not the enforcement.
k -n "$AGENT_NS" delete daemonset netpol-agent --cascade=foreground --wait=true --timeout=120s
for _ in $(seq 60); do
	left=$(k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=netpol-agent -o name | wc -l)
	[ "$left" = 0 ] && break
	sleep 2
done
[ "$left" = 0 ] || fail "$left agent pods still present 120 s after deleting the DaemonSet"
fetch allowed || fail "allowed edge blocked after the DaemonSet was deleted"
if fetch denied; then fail "denied edge opened when the DaemonSet was deleted"; fi
log "enforcement stays after the DaemonSet is deleted"

# Uninstall on every worker: the cleanup DaemonSet of deploy/uninstall, with
# the same image; Ready on every node means its uninstall succeeded there.
mkdir "$WORK/uninstall"
cat >"$WORK/uninstall/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$WORK/uninstall" "$REPO/deploy/uninstall")
images:
  - name: ghcr.io/localplus/netpol-agent
    newName: netpol-agent
    newTag: e2e
KUST
k apply -k "$WORK/uninstall"
k -n "$AGENT_NS" rollout status daemonset/netpol-agent-uninstall --timeout=180s ||
	fail "the cleanup DaemonSet did not become ready on every node"
# Every node, the control plane included (it tolerates every taint).
cleaned=$(k -n "$AGENT_NS" get daemonset netpol-agent-uninstall -o jsonpath='{.status.numberReady}/{.status.desiredNumberScheduled}')
[ "$cleaned" = 4/4 ] || fail "uninstall ran on $cleaned nodes, expected 4/4"
k delete -k "$WORK/uninstall" --wait=true --timeout=60s
fetch denied || fail "denied edge still blocked after uninstall"
log "uninstall removed enforcement"

log "PASS"
