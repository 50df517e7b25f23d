#!/usr/bin/env bash
# `make e2e`: the end-to-end test on a throwaway control plane (hack/e2e-cluster.sh) whose node is
# test/e2e/podagent, which runs pod containers as local processes from our binaries.
#
#   hack/e2e.sh                    # build bin/bpo and bin/manager, run the e2e tests, print a timeline
#   hack/e2e.sh -run TestAlignmentRunEndToEnd   # extra arguments go to `go test`
#
# Steps: go build -o bin/ ./cmd/... ; go test -tags e2e ./test/e2e/ (TestMain starts the cluster and
# the agent; TestAlignmentRunEndToEnd installs the chart, runs bin/manager on the host and drives
# AlignmentRuns); a timeline at the end. Everything started is stopped on every way out (the test's
# own teardown, then `hack/e2e-cluster.sh down` here, which also stops the agent and the manager
# through their pid files).
#
# Environment:
#   E2E_DIR      state folder (default _output/e2e/<date>-<time>); logs/, agent/, timeline.txt
#   E2E_KEEP=1   keep all of E2E_DIR after a pass (default: drop etcd/, binaries and volumes,
#                keep logs and the timeline); it is always kept after a failure
#   E2E_RUN      go test -run pattern (default: the whole package, TestAlignmentRunEndToEnd first)
#   E2E_MODEL    builtin | tiny | auto (default auto: builtin when trainer/task/models/tiny-reviews
#                has config.json and model.safetensors, which bin/bpo then embeds; else a tiny random
#                model written into the workspace volume)
#   E2E_TIMEOUT  go test -timeout (default 40m)
#   K8S_BIN_DIR  control-plane binaries (default: hack/k8s-binaries.sh, cached in $BPO_CACHE)
# shellcheck disable=SC2317 # cleanup and summary run from traps
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$SECONDS
log() { echo "e2e.sh: [$((SECONDS - T0))s] $*" >&2; }

export E2E_DIR="${E2E_DIR:-$ROOT/_output/e2e/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$E2E_DIR"
E2E_DIR="$(cd "$E2E_DIR" && pwd)"
TIMES="$E2E_DIR/e2e-sh.times"
: >"$TIMES"
phase_time() { printf '%-55s %8ss\n' "$1" "$2" >>"$TIMES"; }

TEST_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$TEST_PID" ]] && kill -0 "$TEST_PID" 2>/dev/null; then
    log "stopping go test (process group $TEST_PID)"
    kill -TERM -- "-$TEST_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$TEST_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$TEST_PID" 2>/dev/null || true
  fi
  # idempotent: stops whatever is left (cluster, watchdog, agent, manager)
  if [[ -d "$E2E_DIR/run" ]]; then
    E2E_DIR="$E2E_DIR" "$ROOT/hack/e2e-cluster.sh" down >/dev/null 2>&1 || true
  fi
  summary "$rc"
  if [[ $rc -eq 0 && "${E2E_KEEP:-}" != 1 ]]; then
    local d
    for d in etcd podbin bin build agent/pvc agent/pods pki kubectl-cache helm; do rm -rf "${E2E_DIR:?}/$d"; done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

summary() {
  local rc=$1 total=$((SECONDS - T0))
  {
    echo
    echo "================ e2e timeline ================"
    cat "$TIMES"
    if [[ -f "$E2E_DIR/go-test.log" ]]; then
      # the harness's own timings (cluster up, agent, tests), printed by TestMain at its end
      sed -n '/^e2e timings:/,/^[^ ]/{/^  /p}' "$E2E_DIR/go-test.log"
    fi
    if [[ -f "$E2E_DIR/timeline.txt" ]]; then
      echo "---- AlignmentRuns ($E2E_DIR/timeline.txt)"
      cat "$E2E_DIR/timeline.txt"
    fi
    echo "----"
    printf '%-55s %8ss\n' "total (make e2e)" "$total"
    if [[ $rc -eq 0 ]]; then echo "e2e: PASS"; else echo "e2e: FAIL (exit $rc)"; fi
    echo "state: $E2E_DIR (logs/, agent/logs/, go-test.log)"
  } | tee "$E2E_DIR/summary.txt" >&2
}

# the model the run uses; decided before the build so that bin/bpo matches
MODEL="${E2E_MODEL:-auto}"
if [[ "$MODEL" == auto ]]; then
  m="$ROOT/trainer/task/models/tiny-reviews"
  if [[ -f "$m/config.json" && -f "$m/model.safetensors" ]]; then MODEL=builtin; else MODEL=tiny; fi
fi
export E2E_MODEL="$MODEL"
log "E2E_DIR=$E2E_DIR model=$E2E_MODEL"

t=$SECONDS
log "go build -o bin/ ./cmd/..."
mkdir -p bin
go build -o bin/ ./cmd/...
phase_time "go build -o bin/ ./cmd/..." $((SECONDS - t))
export E2E_BIN_DIR="$ROOT/bin"

# the S3 server of TestObjectStore (a bucket workspace), run on loopback by the test
t=$SECONDS
BPO_VERSITYGW="${BPO_VERSITYGW:-$(hack/tools.sh versitygw | tail -n 1)}"
export BPO_VERSITYGW BPO_REQUIRE_VERSITYGW=1
phase_time "versitygw (hack/tools.sh versitygw)" $((SECONDS - t))

t=$SECONDS
log "control-plane binaries (hack/k8s-binaries.sh)"
K8S_BIN_DIR="${K8S_BIN_DIR:-$(hack/k8s-binaries.sh | tail -n 1)}"
export K8S_BIN_DIR
phase_time "k8s binaries (hack/k8s-binaries.sh)" $((SECONDS - t))
t=$SECONDS
HELM="${HELM:-$(hack/tools.sh helm | tail -n 1)}"
export HELM
phase_time "helm (hack/tools.sh helm)" $((SECONDS - t))

args=(-tags e2e -count=1 -timeout "${E2E_TIMEOUT:-40m}" -v)
if [[ -n "${E2E_RUN:-}" ]]; then args+=(-run "$E2E_RUN"); fi
args+=("$@")
t=$SECONDS
log "go test ${args[*]} ./test/e2e/"
# own process group (and session), so that a signal to this script can stop the whole test
# shellcheck disable=SC2016 # expanded by the inner bash
setsid bash -c 'go test "$@" ./test/e2e/ 2>&1 | tee "$E2E_DIR/go-test.log"; exit "${PIPESTATUS[0]}"' go-test "${args[@]}" &
TEST_PID=$!
set +e
wait "$TEST_PID"
RC=$?
set -e
TEST_PID=""
phase_time "go test ./test/e2e/ (cluster, agent, tests, teardown)" $((SECONDS - t))
exit "$RC"
