#!/usr/bin/env bash
# Runs every Go native fuzz target (func FuzzXxx(f *testing.F) in a *_test.go file) for a short,
# fixed time each, and fails if any target fails. The targets cover the parsers that take outside
# input: safetensors and config.json (trainer/model), vocab.json/merges.txt and
# tokenizer_config.json (trainer/tokenizer), the task JSONL (trainer/task), the samples/pairs JSONL
# and run.yaml (pipeline), the StageResult termination message (controllers) and the HTTP
# annotator's answer (trainer/annotator). Their seeds (f.Add and testdata/fuzz/<Target>/) also run
# with every plain `go test`.
#
#   hack/fuzz.sh                     every target, FUZZTIME each
#   hack/fuzz.sh ./pipeline/         only the targets of these packages
#
# Environment:
#   FUZZTIME          time per target (default 5s; anything -fuzztime takes, e.g. 30s or 10000x)
#   FUZZMINIMIZETIME  time to minimize one input (default 2s: the 60s default would spend a short
#                     run minimizing newly interesting inputs instead of fuzzing)
#   FUZZPARALLEL      fuzzing workers per target (default: GOMAXPROCS)
#
# A failure leaves the failing input in <package>/testdata/fuzz/<Target>/; fix the parser and
# commit that file: it is then a regression seed. Fuzzing builds every dependency with coverage
# instrumentation: the first run on a cold build cache spends a few minutes compiling, later runs
# reuse the cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZTIME=${FUZZTIME:-5s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-2s}
parallel=()
if [[ -n "${FUZZPARALLEL:-}" ]]; then
  parallel=(-parallel "$FUZZPARALLEL")
fi

# Packages: the arguments, or every package with a fuzz target.
if [[ $# -gt 0 ]]; then
  pkgs=("$@")
else
  mapfile -t pkgs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . \
    --exclude-dir=.git --exclude-dir=.cache --exclude-dir=bin --exclude-dir=vendor --exclude-dir=testdata |
    xargs -r -n1 dirname | sort -u)
fi
if [[ ${#pkgs[@]} -eq 0 ]]; then
  echo "fuzz.sh: no fuzz targets found" >&2
  exit 1
fi

start=$SECONDS
failed=()
n=0
for pkg in "${pkgs[@]}"; do
  pkg=./${pkg#./}
  mapfile -t targets < <(cat "${pkg%/}"/*_test.go 2>/dev/null |
    sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(f \*testing\.F\).*/\1/p' | sort -u)
  for target in "${targets[@]}"; do
    n=$((n + 1))
    echo "fuzz.sh: [$((SECONDS - start))s] $pkg $target ($FUZZTIME)" >&2
    # -run '^$': no tests, only the fuzz target. The controllers' TestMain starts envtest (or,
    # under CI without KUBEBUILDER_ASSETS, exits) in the coordinator and in every worker
    # process; the fuzz targets need neither, so both variables are unset here.
    # Go's fuzzing engine itself sometimes ends a run with "context deadline exceeded" and no
    # failing input when a worker answers late at the end of -fuzztime (a loaded machine): that
    # is not a finding, so such a run is tried once more; any other failure counts at once.
    for try in 1 2; do
      log=$(mktemp)
      if env -u KUBEBUILDER_ASSETS -u CI go test "$pkg" -run '^$' -fuzz "^${target}\$" \
        -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "${parallel[@]}" -timeout 10m 2>&1 | tee "$log"; then
        rm -f "$log"
        break
      fi
      if [[ $try -eq 1 ]] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
        echo "fuzz.sh: $pkg $target: the fuzzing engine timed out with no failing input; trying once more" >&2
        rm -f "$log"
        continue
      fi
      rm -f "$log"
      failed+=("$pkg $target")
      break
    done
  done
done

if [[ $n -eq 0 ]]; then
  echo "fuzz.sh: no fuzz targets in ${pkgs[*]}" >&2
  exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: ${#failed[@]} of $n targets failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  echo "fuzz.sh: the failing inputs are in <package>/testdata/fuzz/<Target>/ (see above)" >&2
  exit 1
fi
echo "fuzz.sh: $n targets passed, $FUZZTIME each, in $((SECONDS - start))s" >&2
