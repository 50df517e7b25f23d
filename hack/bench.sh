#!/usr/bin/env bash
# make bench: the trainer's speed, measured in one run against baselines from the same run
# (these machines are shared and noisy: compare ratios, not absolute numbers).
#   - Go: one ensemble member's optimizer step (forward + backward + AdamW, 8 pairs = 16
#     sequences), sampling with the KV cache, and gonum's float64 GEMM rate (our BLAS peak);
#   - PyTorch CPU (Debian python3-torch + OpenBLAS, 1 thread, float64) on the same step.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-10x}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

echo "go benchmarks (benchtime $BENCHTIME)..." >&2
go test -run '^$' -bench 'MemberStep|GEMMPeak' -benchtime "$BENCHTIME" -count 3 ./pipeline >"$tmp/go.txt"
go test -run '^$' -bench 'SampleStep' -benchtime 2s -count 1 ./trainer/model >>"$tmp/go.txt"

torch=/usr/bin/python3
if $torch -c 'import torch' 2>/dev/null; then
  echo "pytorch baseline..." >&2
  $torch hack/torch_bench.py --d 64 --layers 2 --ctx 64 --batch 8 --peak >"$tmp/t1.json"
  $torch hack/torch_bench.py --d 128 --layers 2 --ctx 64 --batch 8 >"$tmp/t2.json"
else
  echo "python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread): no PyTorch column" >&2
  echo '{}' >"$tmp/t1.json"; echo '{}' >"$tmp/t2.json"
fi

python3 - "$tmp" <<'PY'
import json, re, statistics, sys, os
d = sys.argv[1]
go = open(os.path.join(d, "go.txt")).read()
def med(pattern, unit):
    vals = [float(m) for m in re.findall(pattern + r".*?([0-9.]+) " + re.escape(unit), go)]
    return statistics.median(vals) if vals else float("nan")
peak = med(r"BenchmarkGEMMPeak", "GFLOP/s")
t1, t2 = (json.load(open(os.path.join(d, f))) for f in ("t1.json", "t2.json"))
tpeak = t1.get("peak", {}).get("gemm512_f64_gflops", float("nan"))
print(f"float64 GEMM 512x512: gonum {peak:.1f} GFLOP/s, OpenBLAS (torch) {tpeak:.1f} GFLOP/s\n")
print("| config (16 seqs) | Go train tok/s | PyTorch tok/s | Go/PyTorch | Go GFLOP/s | % of gonum peak | sampling tok/s (batch 16) |")
print("|---|---|---|---|---|---|---|")
for name, t, samp in (("d64_L2_T64", t1, "d64-L2"), ("d128_L2_T64", t2, "d128-L2")):
    tok = med(r"BenchmarkMemberStep/" + name, "tok/s")
    gf = med(r"BenchmarkMemberStep/" + name, "GFLOP/s")
    tt = t.get("tokens_per_s", float("nan"))
    s = med(r"BenchmarkSampleStep/" + samp + r"-B16", "tok/s")
    print(f"| {name} | {tok:.0f} | {tt:.0f} | {tok/tt:.2f} | {gf:.2f} | {100*gf/peak:.0f}% | {s:.0f} |")
PY
