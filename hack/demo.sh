#!/usr/bin/env bash
# `make demo` / `make demo-down`: the whole platform on this machine. Starts the
# local cluster (control plane, a real kubelet node, Postgres), imports the
# runtime image built from the debug binaries, installs the CRDs, runs the
# operator, and applies config/samples/ into the namespace `switchboard-demo`:
# the runtime pods run as containers on the real node and are reached through
# their Service. The upstream is mock-llm unless OPENAI_API_KEY or
# ANTHROPIC_API_KEY is set; mock-llm runs on this machine's loopback, and the
# pods reach it at the node IP (hack/node-lib.sh maps that to loopback), which
# keeps the demo to the images the project ships.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
state=$root/.switchboard/demo
ns=switchboard-demo
source hack/lib/env.sh

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a background process whose pid is kept in $state/NAME.pid.
start_bg() {
  local name=$1; shift
  setsid nohup "$@" >"$state/$name.log" 2>&1 < /dev/null &
  echo $! >"$state/$name.pid"
}

stop_bg() {
  local pidfile=$1 pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

down() {
  if [ -d "$state" ] && hack/cluster.sh status >/dev/null 2>&1 && [ ! -f "$state/started-cluster" ]; then
    # The cluster stays up: delete the demo's agents while the operator still runs, so
    # their finalizers drop (or keep, per reclaimPolicy) the databases, then the namespace.
    eval "$(hack/cluster.sh env)"
    kubectl delete agd --all -n "$ns" --timeout=60s >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  fi
  if [ -d "$state" ]; then
    for name in operator mock-llm; do stop_bg "$state/$name.pid"; done
  fi
  if [ -f "$state/started-cluster" ]; then
    hack/cluster.sh down
  fi
  rm -rf "$state"
  echo "demo stopped"
}

up() {
  if [ -f "$state/operator.pid" ] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
    echo "the demo is already running (make demo-down stops it)"
    return 0
  fi
  mkdir -p "$state"

  step "Building the operator, the agent runtime and mock-llm (first time: several minutes)"
  cargo build --locked --bin switchboard-operator --bin agent-runtime --bin mock-llm

  step "Local control plane and Postgres (the first run builds Kubernetes: see README)"
  if ! hack/cluster.sh status >/dev/null 2>&1; then
    hack/cluster.sh up
    touch "$state/started-cluster"
  else
    echo "already up"
    step "Importing the runtime image (debug build) into the node"
    hack/cluster.sh images
  fi
  eval "$(hack/cluster.sh env)"
  # The operator derives the tenants' database URLs from the admin DSN: name the
  # node IP, where both this machine and the pods reach Postgres.
  local admin_url=${SWITCHBOARD_DATABASE_ADMIN_URL/@127.0.0.1:/@$SWITCHBOARD_NODE_IP:}

  step "Installing the CRDs"
  kubectl apply --server-side -k config/crd/ >/dev/null
  kubectl wait --for condition=established --timeout=60s \
    crd/agentdeployments.switchboard.dev crd/chatchannels.switchboard.dev >/dev/null
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # The runtime pods meet the restricted Pod Security profile: enforce it.
  kubectl label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null

  local upstream
  if [ -n "${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}" ]; then
    upstream=real
  else
    upstream=$(free_port)
    step "Starting mock-llm on 127.0.0.1:$upstream (set OPENAI_API_KEY or ANTHROPIC_API_KEY for real models)"
    start_bg mock-llm "$target/debug/mock-llm" --listen "127.0.0.1:$upstream"
  fi

  step "Starting the operator (watching namespace $ns)"
  start_bg operator env RUST_LOG=info SWITCHBOARD_DATABASE_ADMIN_URL="$admin_url" \
    "$target/debug/switchboard-operator" --namespace "$ns" --metrics-addr "127.0.0.1:$(free_port)" \
    --runtime-image "$SWITCHBOARD_AGENT_RUNTIME_IMAGE"

  step "Applying config/samples/"
  kubectl apply -n "$ns" -f config/samples/
  if [ "$upstream" = real ]; then
    kubectl create secret generic model-credentials -n "$ns" \
      --from-literal=openai-api-key="${OPENAI_API_KEY:-unset}" \
      --from-literal=anthropic-api-key="${ANTHROPIC_API_KEY:-unset}" \
      --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  else
    # Point every model of the samples at the mock (a visible change to the spec).
    local mock="http://$SWITCHBOARD_NODE_IP:$upstream/v1"
    kubectl patch agd hello -n "$ns" --type merge \
      -p "{\"spec\":{\"model\":{\"baseUrl\":\"$mock\"}}}" >/dev/null
    kubectl patch agd support -n "$ns" --type merge -p "{\"spec\":{\"model\":{\"baseUrl\":\"$mock\"},
      \"fallbacks\":[{\"provider\":\"openai\",\"name\":\"backup-model\",\"baseUrl\":\"$mock\"}]}}" >/dev/null
  fi

  step "Waiting for the agents to be Ready (the runtimes report their own health)"
  if ! kubectl wait --for=condition=Ready agd --all -n "$ns" --timeout=180s; then
    echo "not Ready in time; operator log: $state/operator.log" >&2
    kubectl get agd -n "$ns" -o yaml | sed -n '/^  status:/,$p' >&2 || true
    kubectl get pods,events -n "$ns" -o wide >&2 || true
    exit 1
  fi
  kubectl wait --for=condition=Ready chc --all -n "$ns" --timeout=60s >/dev/null || true

  step "kubectl get switchboard -n $ns"
  kubectl get switchboard -n "$ns"

  step "kubectl get pods -n $ns -o wide (containers on the real node)"
  kubectl get pods -n "$ns" -o wide

  local addr key channel
  # The agent's Service, at its ClusterIP (kube-proxy serves it on this machine).
  addr="http://$(kubectl get svc hello -n "$ns" -o jsonpath='{.spec.clusterIP}'):8080"
  key=$(kubectl get secret hello-api-key -n "$ns" -o jsonpath='{.data.api-key}' | base64 -d)
  # The channel's published endpoint is the agent's Service plus /channels/<name>.
  channel="$addr/channels/hello-openai"
  local web
  web="http://$(kubectl get svc support -n "$ns" -o jsonpath='{.spec.clusterIP}'):8080/channels/support-web/"
  cat <<EOF

Web chat (channel 'support-web' of agent 'support'), open in a browser on this machine:
  $web

The channel 'hello-openai' of agent 'hello' answers at $channel
(the agent's Service, at its ClusterIP; in-cluster name: $(kubectl get chc hello-openai -n "$ns" -o jsonpath='{.status.endpoint}')).

  curl -s $channel/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
    -d '{"model":"hello","messages":[{"role":"user","content":"Hello!"}]}'

  .switchboard/venv/bin/python - <<'PY'   # after: hack/python-env.sh
  from openai import OpenAI
  client = OpenAI(base_url="$channel/v1", api_key="$key")
  reply = client.chat.completions.create(model="hello", messages=[{"role": "user", "content": "Hello!"}])
  print(reply.choices[0].message.content)
  PY

  eval "\$(make -s cluster-env)"; kubectl get agd -n $ns -w    # watch health
  kubectl logs -n $ns deploy/hello                              # the runtime's JSON log
  make demo-down                                                # stop all of it

Logs: $state/{operator,mock-llm}.log; the pods': kubectl logs -n $ns <pod>
EOF
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: hack/demo.sh up|down" >&2; exit 2 ;;
esac
