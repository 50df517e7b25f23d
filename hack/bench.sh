#!/usr/bin/env bash
# make bench: the trainer's speed against PyTorch float32 measured in the same run (these machines
# are shared and noisy: compare ratios, not absolute numbers).
#   - Go: `bpo bench` (cmd/bpo/bench.go): one LoRA ensemble member's optimizer step (forward +
#     backward of 16 sequences + AdamW, as the train stage runs it) and batched KV-cache sampling
#     (16 rows), at 1 and 2 threads, plus the measured SGEMM peak of our BLAS;
#   - PyTorch float32 at its best (hack/torch_bench.py: OpenBLAS core type set, the faster
#     attention form, 1 and 2 threads) on the same step, the same sampling and SGEMM.
# Configs: d128·L4·T128 (4 heads) and d256·L6·T256 (8 heads); batch 16, vocab 4096, LoRA rank 8.
# Each measurement runs BENCH_SECONDS (default 10) after warm-up; the table keeps the faster thread
# count per side. BPO=path/to/bpo uses that binary instead of building bin/bpo.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-10}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
log() { echo "bench: $*" >&2; }

bpo=${BPO:-}
if [[ -z $bpo ]]; then
  log "go build -o bin/bpo ./cmd/bpo"
  mkdir -p bin && go build -o bin/bpo ./cmd/bpo
  bpo=bin/bpo
fi
torch=/usr/bin/python3
if [[ -x $torch ]] && $torch -c 'import torch' 2>/dev/null; then
  have_torch=1
else
  have_torch=0
  log "python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread): Go columns only"
fi

uptime >"$tmp/uptime.start"
common=(--batch 16 --vocab 4096 --rank 8 --seconds "$seconds")
# width layers heads context
for cfg in "128 4 4 128" "256 6 8 256"; do
  read -r d L H T <<<"$cfg"
  shape=(--width "$d" --layers "$L" --heads "$H" --context "$T")
  for what in train sample; do
    attention=auto # torch_bench picks the faster attention form at 1 thread; 2 threads reuse it
    for threads in 1 2; do
      # Go and PyTorch alternate so that both see the same background load.
      log "go $what d$d·L$L·T$T, $threads thread(s)"
      "$bpo" bench --json --what "$what" "${shape[@]}" "${common[@]}" --threads "$threads" >>"$tmp/go.jsonl"
      if ((have_torch)); then
        log "pytorch $what d$d·L$L·T$T, $threads thread(s), attention $attention"
        $torch hack/torch_bench.py --what "$what" "${shape[@]}" "${common[@]}" --threads "$threads" \
          --attention "$attention" >"$tmp/t.json"
        cat "$tmp/t.json" >>"$tmp/torch.jsonl"
        attention=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["attention"])' "$tmp/t.json")
      fi
    done
  done
done
for threads in 1 2; do
  log "SGEMM peak, $threads thread(s)"
  "$bpo" bench --json --what peak --seconds "$seconds" --threads "$threads" >>"$tmp/go.jsonl"
  if ((have_torch)); then
    $torch hack/torch_bench.py --what peak --seconds "$seconds" --threads "$threads" >>"$tmp/torch.jsonl"
  fi
done
uptime >"$tmp/uptime.end"
touch "$tmp/torch.jsonl"

python3 - "$tmp" <<'PY'
import json, math, os, sys

d = sys.argv[1]
def load(name):
    with open(os.path.join(d, name)) as f:
        return [json.loads(l) for l in f if l.strip()]
go, pt = load("go.jsonl"), load("torch.jsonl")

def key(r):
    c = r["config"]
    return (c["width"], c["layers"], c["context"], r["what"])

def best(rows):
    """Per (config, what): the record of the faster thread count (median tok/s)."""
    out = {}
    for r in rows:
        if r["what"] == "peak":
            continue
        k = key(r)
        if k not in out or r["tokens_per_s"] > out[k]["tokens_per_s"]:
            out[k] = r
    return out

def peaks(rows):
    return {r["threads"]: r["gflops"] for r in rows if r["what"] == "peak"}

gb, tb = best(go), best(pt)
gp, tp = peaks(go), peaks(pt)
peak = max(list(gp.values()) + list(tp.values()) or [float("nan")])
nan = float("nan")

def f(v, fmt):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

print("| config (batch 16, V 4096, r 8) | what | Go tok/s (threads) | PyTorch tok/s (threads) | Go/PyTorch | "
      "Go/PyTorch best steps | Go GFLOP/s | PyTorch GFLOP/s | Go % of SGEMM peak |")
print("|---|---|---|---|---|---|---|---|---|")
for k in sorted(gb, key=lambda k: (k[0], k[3] != "train")):
    g, t = gb[k], tb.get(k)
    ratio = g["tokens_per_s"] / t["tokens_per_s"] if t else nan
    ratio_best = g["tokens_per_s_best"] / t["tokens_per_s_best"] if t else nan
    c = g["config"]
    name = f"d{c['width']}·L{c['layers']}·T{c['context']} (H{c['heads']})"
    tt = f"{t['tokens_per_s']:.0f} ({t['threads']}t, {t['attention']})" if t else "n/a"
    print(f"| {name} | {k[3]} | {g['tokens_per_s']:.0f} ({g['threads']}t) | {tt} | {f(ratio, '.2f')} | "
          f"{f(ratio_best, '.2f')} | {g['gflops']:.1f} | {f(t['gflops'] if t else None, '.1f')} | "
          f"{f(100 * g['gflops'] / peak, '.0f')}% |")

def pk(p):
    return ", ".join(f"{n}t {v:.1f}" for n, v in sorted(p.items())) or "n/a"

g0 = next(iter(gb.values()), {}) or {}
t0 = next((r for r in pt), {})
print()
print(f"SGEMM peak GFLOP/s: Go ({g0.get('backend', '?')}, core {g0.get('core', '?') or '-'}) {pk(gp)}; "
      f"PyTorch ({t0.get('backend', 'n/a')}, core {t0.get('core', '-') or '-'}, {t0.get('coretype_rule', '-')}) {pk(tp)}; "
      f"% of peak uses the best, {f(peak, '.1f')}")
print(f"Go precision: train {next((r.get('precision') for r in go if r['what'] == 'train'), '?')}, "
      f"sample {next((r.get('precision') for r in go if r['what'] == 'sample'), '?')}; "
      f"PyTorch {t0.get('torch', 'n/a')} float32, {t0.get('library', '')}")
for tag in ("start", "end"):
    with open(os.path.join(d, "uptime." + tag)) as fh:
        print(f"load ({tag}): {fh.read().strip().split('load average:')[-1].strip()}")
targets = [((256, 6, 256, "train"), 1.5, 35), ((128, 4, 128, "train"), 1.0, None),
           ((128, 4, 128, "sample"), 1.0, None), ((256, 6, 256, "sample"), 1.0, None)]
for k, want, want_peak in targets:
    g, t = gb.get(k), tb.get(k)
    if not g:
        continue
    line = f"target {k[3]} d{k[0]}·L{k[1]}·T{k[2]}: Go/PyTorch {f(g['tokens_per_s'] / t['tokens_per_s'] if t else nan, '.2f')} (want >= {want})"
    if want_peak:
        line += f", {f(100 * g['gflops'] / peak, '.0f')}% of SGEMM peak (want >= {want_peak}%)"
    print(line)
PY
