#!/usr/bin/python3
"""PyTorch CPU baseline for one DPO training step, to compare with the Go trainer.

One step = forward of 2P sequences (P chosen + P rejected, each ctx tokens: the first half
prompt, the second half response) through GPT-2 with LoRA (rank 8, alpha 16) on attn.c_attn,
attn.c_proj, mlp.c_fc and mlp.c_proj of every layer (base frozen), summed response-token
log-probs, the DPO loss (beta 0.1) against fixed reference log-probs, backward, global
grad-norm clipping at 1.0 and an AdamW step. Single-threaded (torch.set_num_threads(1),
OMP/OpenBLAS threads 1); torch's CPU matmuls go to the system BLAS (Debian: OpenBLAS with
libopenblas0-pthread installed).

  /usr/bin/python3 hack/torch_bench.py --d 64 --layers 2 --ctx 64 --batch 16 [--peak]

Prints one JSON line: {"tokens_per_s": ..., "step_ms": ..., "config": {...}, ...};
tokens = 2P * ctx per step; tokens_per_s uses the median step time, tokens_per_s_best the
fastest (less sensitive to other load on a shared machine). --peak adds single-thread 512x512 GEMM GFLOP/s (float64 and
float32) under "peak". Use /usr/bin/python3 (Debian's python3-torch), not a pyenv python.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import math
import time

import torch

TARGETS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


def build(cfg, dtype, gen):
    d, v, n, L = cfg["d"], cfg["vocab"], cfg["ctx"], cfg["layers"]
    r = cfg["rank"]

    def rnd(*s, std=0.02):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * std).to(dtype)

    w = {"wte.weight": rnd(v, d), "wpe.weight": rnd(n, d, std=0.01)}
    shapes = {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d), "mlp.c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}
    lora = {}
    for i in range(L):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".weight"] = torch.ones(d, dtype=dtype)
            w[p + ln + ".bias"] = torch.zeros(d, dtype=dtype)
        for t, (a, b) in shapes.items():
            w[p + t + ".weight"] = rnd(a, b)
            w[p + t + ".bias"] = torch.zeros(b, dtype=dtype)
            # PEFT-style init: A random, B zero (B gets a gradient on the first step).
            lora[p + t + ".lora_A"] = rnd(a, r, std=1 / math.sqrt(a)).requires_grad_(True)
            lora[p + t + ".lora_B"] = torch.zeros(r, b, dtype=dtype, requires_grad=True)
    w["ln_f.weight"] = torch.ones(d, dtype=dtype)
    w["ln_f.bias"] = torch.zeros(d, dtype=dtype)
    return w, lora


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def forward(w, lora, ids, cfg):
    """Logits [B, T, V]."""
    d, nh, L = cfg["d"], cfg["heads"], cfg["layers"]
    hd = d // nh
    scale = cfg["alpha"] / cfg["rank"]
    B, T = ids.shape
    ln = torch.nn.functional.layer_norm

    def conv1d(x, name):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        return y + scale * ((x @ lora[name + ".lora_A"]) @ lora[name + ".lora_B"])

    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(L):
        p = f"h.{i}."
        a = ln(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
        q, k, v = conv1d(a, p + "attn.c_attn").split(d, dim=-1)
        q = q.view(B, T, nh, hd).transpose(1, 2)
        k = k.view(B, T, nh, hd).transpose(1, 2)
        v = v.view(B, T, nh, hd).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + conv1d(y, p + "attn.c_proj")
        m = ln(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
        x = x + conv1d(gelu_new(conv1d(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = ln(x, (d,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
    return x @ w["wte.weight"].T


def bench_train(cfg, dtype, steps, warmup):
    gen = torch.Generator().manual_seed(0)
    w, lora = build(cfg, dtype, gen)
    P, T, V = cfg["batch"], cfg["ctx"], cfg["vocab"]
    beta = 0.1
    ids = torch.randint(0, V, (2 * P, T), generator=gen)
    resp = torch.zeros(2 * P, T - 1, dtype=dtype)
    resp[:, T // 2 - 1:] = 1  # targets ids[:, 1:]; the response is the second half
    ref = (torch.randn(2 * P, generator=gen, dtype=torch.float64) - 100).to(dtype)
    params = list(lora.values())
    opt = torch.optim.AdamW(params, lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def step():
        logits = forward(w, lora, ids, cfg)[:, :-1]
        logp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        seq = (logp * resp).sum(1)
        h = (seq[:P] - ref[:P]) - (seq[P:] - ref[P:])
        loss = torch.nn.functional.softplus(-beta * h).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    tokens = 2 * P * T
    return {"tokens_per_s": tokens / med, "tokens_per_s_best": tokens / times[0],
            "step_ms": med * 1e3, "step_ms_min": times[0] * 1e3,
            "tokens_per_step": tokens, "steps_timed": steps}


def gemm_gflops(n, dtype, seconds=1.0):
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    c = a @ b
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=c)
        reps += 1
        el = time.perf_counter() - t0
        if el >= seconds and reps >= 3:
            break
    return 2 * n ** 3 * reps / el / 1e9


def blas_libs():
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if "blas" in l or "lapack" in l}
        return sorted(os.path.basename(x) for x in libs)
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU DPO step baseline")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="pairs P (2P sequences per step)")
    ap.add_argument("--vocab", type=int, default=257)
    ap.add_argument("--heads", type=int, default=0, help="default: max(1, d // 32)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peak", action="store_true", help="also measure 512x512 GEMM GFLOP/s")
    ap.add_argument("--no-train", action="store_true", help="only the peak measurement")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = {"d": a.d, "layers": a.layers, "ctx": a.ctx, "batch": a.batch, "vocab": a.vocab,
           "heads": a.heads or max(1, a.d // 32), "rank": a.rank, "alpha": a.alpha, "dtype": a.dtype,
           "lora_targets": TARGETS}
    assert cfg["d"] % cfg["heads"] == 0
    out = {}
    if not a.no_train:
        out.update(bench_train(cfg, getattr(torch, a.dtype), a.steps, a.warmup))
    out["config"] = cfg
    if a.peak:
        out["peak"] = {"gemm512_f64_gflops": gemm_gflops(512, torch.float64),
                       "gemm512_f32_gflops": gemm_gflops(512, torch.float32)}
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    out["blas"] = blas_libs()
    out["env"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
