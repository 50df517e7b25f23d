#!/usr/bin/env bash
# The one test command CI runs (via `make test` / .ci/run):
#   1. build or reuse the envtest control plane (etcd, kube-apiserver, kubectl) and export
#      KUBEBUILDER_ASSETS; build or reuse versitygw (the S3 server of the storage tests) and
#      require it (BPO_REQUIRE_VERSITYGW=1: the S3 tests fail rather than skip without it),
#   2. go vet ./...,
#   3. gofmt check,
#   4. go test ./... -count=1 -timeout 30m (extra arguments are passed to go test),
#   5. the pure-Go build: CGO_ENABLED=0 go build ./... and go test ./trainer/... (trainer/blas
#      falls back from OpenBLAS to gonum without cgo; that path must stay green).
# All of 2-5 run; the exit status is non-zero if any failed. Elapsed time is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
report() {
  local rc=$?
  local s=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    echo "test.sh: PASS in $((s / 60))m$((s % 60))s" >&2
  else
    echo "test.sh: FAIL (exit $rc) after $((s / 60))m$((s % 60))s" >&2
  fi
}
trap report EXIT
step() { echo "test.sh: [$((SECONDS - start))s] $*" >&2; }

step "envtest assets (hack/k8s-binaries.sh --only envtest)"
KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh --only envtest | tail -n 1)
[[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]] || {
  echo "test.sh: no envtest binaries in '$KUBEBUILDER_ASSETS'" >&2
  exit 1
}
export KUBEBUILDER_ASSETS
step "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
step "versitygw (hack/tools.sh versitygw)"
BPO_VERSITYGW=$(hack/tools.sh versitygw | tail -n 1)
export BPO_VERSITYGW BPO_REQUIRE_VERSITYGW=1
step "BPO_VERSITYGW=$BPO_VERSITYGW"

# vet, gofmt and the tests (both builds) all run even when an earlier one fails, so one CI run
# shows every problem; the script fails at the end if any of them failed.
failed=()

step "go vet ./..."
go vet ./... || failed+=("go vet")

step "gofmt -l"
unformatted=$(find . -name '*.go' -type f \
  -not -path './.git/*' -not -path './.cache/*' -not -path './bin/*' \
  -not -path './_output/*' -not -path './vendor/*' -not -path '*/testdata/*' \
  -print0 | xargs -0 -r gofmt -l)
if [[ -n "$unformatted" ]]; then
  echo "test.sh: these files need gofmt -w:" >&2
  echo "$unformatted" >&2
  failed+=("gofmt")
fi

step "go test ./... -count=1 -timeout 30m $*"
go test ./... -count=1 -timeout 30m "$@" || failed+=("go test")

step "CGO_ENABLED=0 go build ./... && go test ./trainer/..."
CGO_ENABLED=0 go build ./... || failed+=("CGO_ENABLED=0 go build")
BPO_REQUIRE_OPENBLAS= CGO_ENABLED=0 go test -count=1 ./trainer/... ||
  failed+=("CGO_ENABLED=0 go test ./trainer/...")

# Fuzzing: every parser of outside input fuzzed for FUZZTIME (default 5s) per target, 9 targets
# (hack/fuzz.sh; about a minute on a warm build cache).
step "hack/fuzz.sh (FUZZTIME=${FUZZTIME:-5s} per target)"
hack/fuzz.sh || failed+=("hack/fuzz.sh")

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
