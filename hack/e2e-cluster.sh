#!/usr/bin/env bash
# A throwaway Kubernetes control plane on loopback for the e2e tests: etcd, kube-apiserver (client-cert
# auth, RBAC+Node authorization, service-account signing keys), kube-controller-manager and
# kube-scheduler, all built from source by hack/k8s-binaries.sh. No node, no container runtime:
# test/e2e/podagent registers a node and runs pods as local processes.
#
#   E2E_DIR=/tmp/x hack/e2e-cluster.sh up       # start; waits for /readyz and the controllers' /healthz
#   E2E_DIR=/tmp/x hack/e2e-cluster.sh env      # prints export lines (KUBECONFIG, K8S_BIN_DIR, PATH)
#   E2E_DIR=/tmp/x hack/e2e-cluster.sh status   # which processes run
#   E2E_DIR=/tmp/x hack/e2e-cluster.sh down     # stops all it started; safe to call twice
#
# Environment:
#   E2E_DIR          state folder (required): pki/, etcd/, logs/, run/ (pid files), kubeconfig
#   K8S_BIN_DIR      folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                    (default: the folder printed by hack/k8s-binaries.sh, which builds them if missing)
#   E2E_WATCH_PID    if set, a watchdog runs `down` as soon as this process is gone (for callers that
#                    may be SIGKILLed before their own cleanup runs)
#   E2E_AUTHZ        apiserver --authorization-mode (default RBAC,Node)
#   E2E_UP_TIMEOUT   seconds to wait for readiness (default 90)
# Ports are free loopback ports picked at random; see $E2E_DIR/env.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

log() { echo "e2e-cluster: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; }

case "${1:-}" in -h|--help|help) usage; exit 0 ;; esac
[[ -n "${E2E_DIR:-}" ]] || { usage; die "E2E_DIR is not set"; }
mkdir -p "$E2E_DIR"
E2E_DIR="$(cd "$E2E_DIR" && pwd)"
PKI="$E2E_DIR/pki"
LOGS="$E2E_DIR/logs"
RUN="$E2E_DIR/run"

# ---------------------------------------------------------------- processes

# alive NAME: the pid file exists and names a live process that is still the one we started.
alive() {
  local f="$RUN/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # guard against pid reuse: the command line must mention our state dir or binary
  exe="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$exe" == *"$(cat "$RUN/$1.cmd" 2>/dev/null || echo "$E2E_DIR")"* ]]
}

# stop NAME...: SIGTERM to all of them at once, SIGKILL to those still running after 10 s; removes
# the pid files.
stop() {
  local name pid i left
  local -A pids=()
  for name in "$@"; do
    [[ -f "$RUN/$name.pid" ]] || continue
    if alive "$name"; then
      pid="$(cat "$RUN/$name.pid")"
      kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid
    else
      rm -f "$RUN/$name.pid" "$RUN/$name.cmd"
    fi
  done
  for ((i = 0; i < 100; i++)); do
    left=0
    for name in "${!pids[@]}"; do
      kill -0 "${pids[$name]}" 2>/dev/null && left=1
    done
    ((left)) || break
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for 10s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
    rm -f "$RUN/$name.pid" "$RUN/$name.cmd"
  done
}

# start NAME BINARY ARGS...: runs in its own session, output to logs/NAME.log, pid to run/NAME.pid.
start() {
  local name="$1"; shift
  echo "$1" >"$RUN/$name.cmd"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  log "started $name (pid $!), log $LOGS/$name.log"
}

# wait_ok NAME URL [curl args...]: until URL answers "ok" (or etcd's health JSON); fails if NAME died.
wait_ok() {
  local name="$1" url="$2"; shift 2
  local deadline=$((SECONDS + ${E2E_UP_TIMEOUT:-90})) out
  while :; do
    out="$(curl -fsS --max-time 2 "$@" "$url" 2>/dev/null || true)"
    if [[ "$out" == ok || "$out" == *'"health":"true"'* ]]; then
      return 0
    fi
    if ! alive "$name"; then
      log "$name exited during start-up; last log lines:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS > deadline)); then
      log "$name not ready after ${E2E_UP_TIMEOUT:-90}s ($url: ${out:-no answer}); last log lines:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# free_port: a free TCP port on 127.0.0.1 not handed out before in this run. Ports come from below
# the kernel's ephemeral range (ip_local_port_range): a port inside it can be taken, between our check
# and the bind, as the local end of an outgoing connection (the apiserver's own etcd clients did
# exactly that once: "bind: address already in use"). "Free" means no socket in any state uses it.
declare -A TAKEN=()
EPHEMERAL_LO=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
port_in_use() {
  local hex
  hex=$(printf ':%04X ' "$1")
  grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6
}
free_port() {
  local p i lo=10000 hi=$((EPHEMERAL_LO - 1))
  ((hi - lo >= 1000)) || { lo=1024; }
  for ((i = 0; i < 500; i++)); do
    p=$((lo + RANDOM % (hi - lo + 1)))
    [[ -z "${TAKEN[$p]:-}" ]] || continue
    if ! port_in_use "$p"; then
      TAKEN[$p]=1
      echo "$p"
      return 0
    fi
  done
  die "no free port found in $lo-$hi"
}

# ---------------------------------------------------------------- pki

# cert NAME CN [O] [SAN]: a key pair signed by the CA (ECDSA P-256), pki/NAME.{key,crt}.
cert() {
  local name="$1" cn="$2" org="${3:-}" san="${4:-}" subj ext
  subj="/CN=$cn"
  [[ -z "$org" ]] || subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=bpo-e2e-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin bpo-e2e-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  # service-account token signing key pair
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig FILE USER: a kubeconfig with embedded CA and client cert for pki/USER.{crt,key}.
kubeconfig() {
  local file="$1" user="$2"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bpo-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$user.crt")
    client-key-data: $(base64 -w0 "$PKI/$user.key")
contexts:
- name: bpo-e2e
  context:
    cluster: bpo-e2e
    user: $user
    namespace: default
current-context: bpo-e2e
EOF
  chmod 600 "$file"
}

# ---------------------------------------------------------------- commands

resolve_bins() {
  if [[ -z "${K8S_BIN_DIR:-}" ]]; then
    log "resolving binaries with hack/k8s-binaries.sh (builds them when missing; may take minutes)"
    K8S_BIN_DIR="$("$ROOT/hack/k8s-binaries.sh" | tail -n 1)"
  fi
  local b
  for b in "${COMPONENTS[@]}"; do
    [[ -x "$K8S_BIN_DIR/$b" ]] || die "$K8S_BIN_DIR/$b is missing (run hack/k8s-binaries.sh)"
  done
}

cmd_down() {
  [[ -d "$RUN" ]] || return 0
  if [[ "${E2E_IN_WATCHDOG:-}" != 1 ]]; then stop watchdog; fi
  # first anything else that left a pid file here (e.g. the pod agent): its watches would hold up
  # the apiserver's graceful shutdown
  local f n extra=()
  for f in "$RUN"/*.pid; do
    [[ -e "$f" ]] || continue
    n="$(basename "$f" .pid)"
    [[ " ${COMPONENTS[*]} watchdog " == *" $n "* ]] || extra+=("$n")
  done
  ((${#extra[@]} == 0)) || stop "${extra[@]}"
  stop kube-scheduler kube-controller-manager kube-apiserver
  stop etcd
}

cmd_status() {
  local n rc=0
  for n in "${COMPONENTS[@]}" watchdog; do
    if alive "$n"; then echo "$n running (pid $(cat "$RUN/$n.pid"))"; else echo "$n not running"; [[ $n == watchdog ]] || rc=1; fi
  done
  return $rc
}

cmd_env() {
  [[ -f "$E2E_DIR/env" ]] || die "no $E2E_DIR/env: run up first"
  cat "$E2E_DIR/env"
}

cmd_up() {
  local n
  for n in "${COMPONENTS[@]}"; do
    alive "$n" && die "$n is already running for $E2E_DIR (run down first)"
  done
  local t0=$SECONDS
  resolve_bins
  mkdir -p "$LOGS" "$RUN"
  # on any failure from here on, stop what was started
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "up failed (rc=$rc); stopping"; cmd_down; fi' EXIT

  make_pki
  ETCD_PORT=$(free_port)
  ETCD_PEER_PORT=$(free_port)
  APISERVER_PORT=$(free_port)
  KCM_PORT=$(free_port)
  SCHED_PORT=$(free_port)
  kubeconfig "$E2E_DIR/kubeconfig" admin
  kubeconfig "$E2E_DIR/controller-manager.kubeconfig" controller-manager
  kubeconfig "$E2E_DIR/scheduler.kubeconfig" scheduler

  rm -rf "$E2E_DIR/etcd"
  start etcd "$K8S_BIN_DIR/etcd" \
    --name=e2e --data-dir="$E2E_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --quota-backend-bytes=2147483648 --log-level=warn
  wait_ok etcd "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode="${E2E_AUTHZ:-RBAC,Node}" \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false \
    --cert-dir="$PKI/apiserver-generated"
  wait_ok kube-apiserver "https://127.0.0.1:$APISERVER_PORT/readyz" \
    --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key"

  start kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
    --kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false --controllers='*' \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --cluster-name=bpo-e2e --pvclaimbinder-sync-period=5s --profiling=false
  start kube-scheduler "$K8S_BIN_DIR/kube-scheduler" \
    --kubeconfig="$E2E_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$E2E_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$E2E_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --leader-elect=false --profiling=false
  wait_ok kube-controller-manager "https://127.0.0.1:$KCM_PORT/healthz" -k
  wait_ok kube-scheduler "https://127.0.0.1:$SCHED_PORT/healthz" -k

  cat >"$E2E_DIR/env" <<EOF
export KUBECONFIG=$E2E_DIR/kubeconfig
export K8S_BIN_DIR=$K8S_BIN_DIR
export PATH=$K8S_BIN_DIR:\$PATH
# apiserver=https://127.0.0.1:$APISERVER_PORT etcd=http://127.0.0.1:$ETCD_PORT controller-manager=https://127.0.0.1:$KCM_PORT scheduler=https://127.0.0.1:$SCHED_PORT
EOF

  if [[ -n "${E2E_WATCH_PID:-}" ]]; then
    # a separate bash whose command line names $E2E_DIR (so `alive` recognises it)
    echo "$E2E_DIR" >"$RUN/watchdog.cmd"
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c '
      pid=$1 self=$2 dir=$3
      while kill -0 "$pid" 2>/dev/null && [[ -f "$dir/run/watchdog.pid" ]]; do sleep 1; done
      if [[ -f "$dir/run/watchdog.pid" ]]; then
        rm -f "$dir/run/watchdog.pid" "$dir/run/watchdog.cmd"
        echo "watched pid $pid is gone: down"
        E2E_DIR="$dir" E2E_IN_WATCHDOG=1 "$self" down
      fi' e2e-cluster-watchdog "$E2E_WATCH_PID" "$SELF" "$E2E_DIR" </dev/null >>"$LOGS/watchdog.log" 2>&1 &
    echo $! >"$RUN/watchdog.pid"
  fi

  trap - EXIT
  log "up in $((SECONDS - t0))s: KUBECONFIG=$E2E_DIR/kubeconfig apiserver https://127.0.0.1:$APISERVER_PORT"
}

# up: cmd_up in a child process, tried again (fresh ports, fresh logs) when a component lost a port
# race; any other failure is final.
cmd_up_retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$SELF" up-once; then return 0; fi
    grep -qs "address already in use" "$LOGS"/*.log || return 1
    log "a port was taken between the check and the bind (attempt $attempt); trying again"
    mkdir -p "$LOGS/attempt-$attempt"
    mv "$LOGS"/*.log "$LOGS/attempt-$attempt/" 2>/dev/null || true
  done
  return 1
}

case "${1:-}" in
  up) cmd_up_retry ;;
  up-once) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage; exit 2 ;;
esac
