#!/usr/bin/env bash
# `make demo` / `make demo-down`: the whole platform on this machine. Starts the
# local cluster (control plane, a real kubelet node, Postgres), imports the
# runtime image built from the debug binaries, installs the CRDs, runs the
# operator, and applies the demo set config/samples/demo/ into the namespace
# `switchboard-demo`: the runtime pods run as containers on the real node and are
# reached through their Service. The models follow the keys exported: OpenAI's
# with OPENAI_API_KEY, Anthropic's with ANTHROPIC_API_KEY, both with both, and
# mock-llm with none (config/samples/demo/README.md has the table); mock-llm runs
# on this machine's loopback, and the pods reach it at the node IP
# (hack/node-lib.sh maps that to loopback), which keeps the demo to the images
# the project ships.
# A real Prometheus scrapes the operator and the runtime pods
# (hack/demo-prometheus.sh).
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
    hack/demo-prometheus.sh down --state "$state" >/dev/null # --- Prometheus ---
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

  # --- models: which provider answers (see config/samples/demo/README.md) ---
  local providers="" mock=""
  [ -n "${OPENAI_API_KEY:-}" ] && providers=openai
  [ -n "${ANTHROPIC_API_KEY:-}" ] && providers="${providers:+$providers+}anthropic"
  if [ -z "$providers" ]; then
    providers=mock
    local upstream
    upstream=$(free_port)
    step "Starting mock-llm on 127.0.0.1:$upstream (export OPENAI_API_KEY or ANTHROPIC_API_KEY for real models)"
    start_bg mock-llm "$target/debug/mock-llm" --listen "127.0.0.1:$upstream"
    mock="http://$SWITCHBOARD_NODE_IP:$upstream/v1"
  fi
  # --- end models ---

  step "Starting the operator (watching namespace $ns)"
  local operator_metrics
  operator_metrics="127.0.0.1:$(free_port)"
  start_bg operator env RUST_LOG=info SWITCHBOARD_DATABASE_ADMIN_URL="$admin_url" \
    "$target/debug/switchboard-operator" --namespace "$ns" --metrics-addr "$operator_metrics" \
    --runtime-image "$SWITCHBOARD_AGENT_RUNTIME_IMAGE"

  # --- demo Secrets and agents (config/samples/demo/) ---
  step "Applying the demo set config/samples/demo/ (models: $providers)"
  # Secrets made here, never committed: the keys you exported (only those), and a
  # fresh random webhook signing key.
  local creds=()
  [ -n "${OPENAI_API_KEY:-}" ] && creds+=(--from-literal=openai-api-key="$OPENAI_API_KEY")
  [ -n "${ANTHROPIC_API_KEY:-}" ] && creds+=(--from-literal=anthropic-api-key="$ANTHROPIC_API_KEY")
  [ "$providers" = mock ] && creds+=(--from-literal=openai-api-key=mock-llm-ignores-keys)
  kubectl create secret generic model-credentials -n "$ns" "${creds[@]}" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  if ! kubectl get secret support-webhook-signing -n "$ns" >/dev/null 2>&1; then
    kubectl create secret generic support-webhook-signing -n "$ns" \
      --from-literal=signing-key="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" >/dev/null
  fi
  # Each agent's models, set before the first apply (so no pod ever starts with a
  # model it has no key for).
  local hello_patch support_patch
  local openai_key='{"name":"model-credentials","key":"openai-api-key"}'
  local anthropic_key='{"name":"model-credentials","key":"anthropic-api-key"}'
  case $providers in
    mock)
      hello_patch="{\"spec\":{\"model\":{\"baseUrl\":\"$mock\"}}}"
      support_patch="{\"spec\":{\"model\":{\"baseUrl\":\"$mock\"},
        \"fallbacks\":[{\"provider\":\"openai\",\"name\":\"backup-model\",\"baseUrl\":\"$mock\"}]}}" ;;
    openai)
      hello_patch='{}'
      support_patch="{\"spec\":{\"fallbacks\":[{\"provider\":\"openai\",\"name\":\"gpt-4.1-nano\",\"apiKeySecretRef\":$openai_key}]}}" ;;
    anthropic)
      # Claude Haiku 4.5's list prices (the sample's are the OpenAI model's).
      local claude="{\"provider\":\"anthropic\",\"name\":\"claude-haiku-4-5\",\"apiKeySecretRef\":$anthropic_key,
        \"pricing\":{\"inputPerMillionTokens\":1,\"outputPerMillionTokens\":5,\"currency\":\"USD\"}}"
      hello_patch="{\"spec\":{\"model\":$claude}}"
      support_patch="{\"spec\":{\"model\":$claude,
        \"fallbacks\":[{\"provider\":\"anthropic\",\"name\":\"claude-sonnet-4-5\",\"apiKeySecretRef\":$anthropic_key}]}}" ;;
    openai+anthropic)
      hello_patch='{}' support_patch='{}' ;;
  esac
  kubectl patch --local -f config/samples/demo/agent-hello.yaml --type merge -p "$hello_patch" -o yaml \
    | kubectl apply -n "$ns" -f -
  kubectl patch --local -f config/samples/demo/agent-support.yaml --type merge -p "$support_patch" -o yaml \
    | kubectl apply -n "$ns" -f -
  kubectl apply -n "$ns" -f config/samples/demo/channels.yaml
  # --- end demo Secrets and agents ---

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

  # --- Prometheus (hack/demo-prometheus.sh) ------------------------------------
  # Debian's prometheus on loopback, config and data under $state/prometheus:
  # scrapes the operator and every runtime pod, loads the alert rules.
  step "Starting Prometheus (the operator, every runtime pod, the alert rules)"
  hack/demo-prometheus.sh up --state "$state" --namespace "$ns" --operator "$operator_metrics"
  # ------------------------------------------------------------------------------

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

The same with the OpenAI Python SDK (hack/python-env.sh makes .switchboard/venv with the
SDK version the tests pin, once; paste from the repository root):

hack/python-env.sh && .switchboard/venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="$channel/v1", api_key="$key")
reply = client.chat.completions.create(model="hello", messages=[{"role": "user", "content": "Hello!"}])
print(reply.choices[0].message.content)
PY

  eval "\$(make -s cluster-env)"; kubectl get agd -n $ns -w    # watch health
  kubectl logs -n $ns deploy/hello                              # the runtime's log
  make demo-down                                                # stop all of it

Logs: $state/{operator,mock-llm}.log, $state/prometheus/prometheus.log; the pods': kubectl logs -n $ns <pod>
EOF
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: hack/demo.sh up|down" >&2; exit 2 ;;
esac
